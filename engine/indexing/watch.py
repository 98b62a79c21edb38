"""A watched gallery: new, changed and deleted photos indexed as they land (WATCH_GALLERY, `index --watch`).

A watchdog observer (inotify, or a polling one for network mounts: WATCH_POLL_S) reports what changes under the
gallery. A changed file is read only once its size and mtime have held still for WATCH_SETTLE_S (`Settler`): an FTP
or sync upload is never read half-written, and a file that changes again after a run is read again. Each run is an
ordinary index build (engine/indexing/builder.py) given the settler as its readiness check: files still being
written are left out (not read, not recorded, an older version kept) and taken by a later run; the next run takes
whatever settled since the last one began. One writer across processes is the store's writer lock, as for any build.

A file that settled and cannot be read (zero bytes, corrupt, not an image) is recorded by the build with its error,
logged once, and read again only when its size or mtime changes (the builder's diff).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from engine.errors import EngineError, GalleryError
from engine.images import IMAGE_SUFFIXES
from engine.settings import EngineSettings
from engine.types import IndexProgress, IndexReport

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

STOP_POLL_S = 0.5  # how often a waiting watcher asks whether to stop
WAIT_S = 60.0  # a watch loop's wait between two looks at `should_stop` when nothing happens (it is polled anyway)
RETRY_S = (1.0, 60.0)  # after a failed run: the first pause before trying again, doubled up to the second
IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})  # reading a file (the index itself does) changes nothing


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic: when this size and mtime were first seen


class Settler:
    """Which changed files have held still for `settle_s`: per path, the (size, mtime_ns) last seen and since when.

    A path is *pending* from the change that `observe` is told of (or a readiness check that said "not yet") until a
    run takes it (`take`) once settled. A file first seen without an event (at start, or in a folder moved in) whose
    mtime is already `settle_s` old is settled at once: a gallery at rest is indexed without a wait. Thread-safe: the
    observer's thread feeds it, the index thread asks it.
    """

    def __init__(
        self,
        settle_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.settle_s = settle_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._pending: set[str] = set()

    def observe(self, path: str | Path) -> bool:
        """A change to `path` (created, written, closed): it waits `settle_s` from now, and from each later change.
        True when it became pending (it was not already)."""
        key = os.fspath(path)
        stat = _stat(key)
        now = self._clock()
        with self._lock:
            if stat is None:  # gone already (a temporary file, or deleted before it settled): nothing to read
                self._forget(key)
                return False
            seen = self._seen.get(key)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._seen[key] = _Seen(stat.st_size, stat.st_mtime_ns, now)
            added = key not in self._pending
            self._pending.add(key)
            return added

    def arrived(self, path: str | Path) -> bool:
        """`path` was renamed into place (its content complete: a rename is atomic): settled at once when its mtime
        is old (rsync, a move within the gallery), else it waits like a new file. True when it became pending."""
        key = os.fspath(path)
        with self._lock:
            self._seen.pop(key, None)
            added = key not in self._pending
            self._pending.add(key)
            return added

    def gone(self, path: str | Path) -> None:
        with self._lock:
            self._forget(os.fspath(path))

    def settled(self, path: str | Path) -> bool:
        """True once the file's size and mtime have held still for `settle_s` (the builder's readiness check).
        A file not settled yet stays pending, so that a later run takes it."""
        key = os.fspath(path)
        stat = _stat(key)
        now = self._clock()
        with self._lock:
            return self._settled(key, stat, now)

    def _settled(self, key: str, stat: os.stat_result | None, now: float) -> bool:
        if stat is None:
            self._forget(key)
            return False
        seen = self._seen.get(key)
        if seen is None:
            if self._wall_clock() - stat.st_mtime_ns / 1e9 >= self.settle_s:
                return True
            self._seen[key] = _Seen(stat.st_size, stat.st_mtime_ns, now)
        elif (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            seen.size, seen.mtime_ns, seen.since = stat.st_size, stat.st_mtime_ns, now
        elif now - seen.since >= self.settle_s:
            return True
        self._pending.add(key)
        return False

    def _forget(self, key: str) -> None:
        self._seen.pop(key, None)
        self._pending.discard(key)

    def due(self) -> list[str]:
        """The pending paths that may have settled by now (no file is read)."""
        now = self._clock()
        with self._lock:
            return [
                key
                for key in self._pending
                if (seen := self._seen.get(key)) is None or now - seen.since >= self.settle_s
            ]

    def next_due(self) -> float | None:
        """The clock time at which the next pending path may settle (None: nothing pending)."""
        with self._lock:
            times = [seen.since + self.settle_s if (seen := self._seen.get(key)) else 0.0 for key in self._pending]
        return min(times) if times else None

    def any_settled(self) -> bool:
        """Whether a pending path has settled (a run has something to take)."""
        for key in self.due():
            stat = _stat(key)
            now = self._clock()
            with self._lock:
                if key in self._pending and self._settled(key, stat, now):
                    return True
        return False

    def take(self) -> int:
        """A run begins: the pending paths that have settled are its to take (those still changing stay pending,
        and so do those a readiness check finds unsettled during the run). How many it took."""
        taken = 0
        for key in self.due():
            stat = _stat(key)
            now = self._clock()
            with self._lock:
                if key in self._pending and self._settled(key, stat, now):
                    self._pending.discard(key)
                    taken += 1
        with self._lock:  # what no run needs to remember: settled files whose mtime alone says so
            wall = self._wall_clock()
            for key in [k for k, s in self._seen.items() if k not in self._pending]:
                if wall - self._seen[key].mtime_ns / 1e9 >= self.settle_s:
                    del self._seen[key]
        return taken

    @property
    def pending(self) -> int:
        """Changed files waiting to settle (or settled and not yet taken by a run)."""
        with self._lock:
            return len(self._pending)


def _stat(path: str) -> os.stat_result | None:
    """The file's stat; None when it is gone or not a regular file."""
    try:
        result = os.stat(path)
    except OSError:
        return None
    return result if stat.S_ISREG(result.st_mode) else None


class _Events(FileSystemEventHandler):
    """The observer's events, handed to the watcher (on the observer's thread)."""

    def __init__(self, watcher: GalleryWatcher):
        self.watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in IGNORED_EVENTS:
            return
        source = os.fsdecode(event.src_path)
        watcher = self.watcher
        if kind == "events_lost":  # the kernel's queue overflowed: the next run looks at everything
            watcher.rescan()
        elif event.is_directory:
            if kind in ("created", "moved", "deleted"):  # a folder came or went: its files with it
                watcher.rescan()
        elif kind == "moved":
            watcher.gone(source)
            watcher.arrived(os.fsdecode(event.dest_path))
        elif kind == "deleted":
            watcher.gone(source)
        else:  # created, modified, closed, attrib
            watcher.changed(source)


class GalleryWatcher:
    """Watches `gallery` (a watchdog observer: inotify, or polling every WATCH_POLL_S) and knows which changed files
    have settled (`settler`). `wait` blocks until a run has something to do; `take` starts a run; `ready` is the
    builder's readiness check. A context manager (start/stop)."""

    def __init__(
        self,
        settings: EngineSettings,
        gallery: Path,
        on_change: Callable[[], None] | None = None,
    ):
        self.gallery = Path(gallery).resolve()
        self.poll_s = settings.watch_poll_s
        self.settler = Settler(settings.watch_settle_s)
        self.on_change = on_change  # told of each change the watcher keeps (on the observer's thread)
        self._wake = threading.Event()
        self._rescan = False
        self._observer: BaseObserver | None = None

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> GalleryWatcher:
        if not self.gallery.is_dir():
            raise GalleryError(f"gallery folder not found: {self.gallery}")
        try:
            self._observer = self._started(PollingObserver(timeout=self.poll_s) if self.poll_s > 0 else Observer())
        except OSError as error:  # inotify's limits (fs.inotify.max_user_watches): scanning works everywhere
            if self.poll_s > 0:
                raise
            poll_s = max(1.0, self.settler.settle_s)
            log.warning(
                "cannot watch %s with inotify (%s): scanning it every %.0f s instead (set WATCH_POLL_S, or raise "
                "fs.inotify.max_user_watches)", self.gallery, error, poll_s,
            )  # fmt: skip
            self._observer = self._started(PollingObserver(timeout=poll_s))
        return self

    def _started(self, observer: BaseObserver) -> BaseObserver:
        observer.daemon = True
        observer.schedule(_Events(self), str(self.gallery), recursive=True)
        observer.start()
        return observer

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)

    def __enter__(self) -> GalleryWatcher:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def kind(self) -> str:
        """How it watches, in words (for a log line)."""
        if isinstance(self._observer, PollingObserver):
            return f"a scan every {self._observer.timeout:g} s"
        return "inotify events"

    # ---- what the observer reports ------------------------------------------------------------
    def _watched(self, path: str) -> bool:
        """A path the gallery may list: an image suffix, no dot-name on the way (temporary upload names never are)."""
        candidate = Path(path)
        try:
            parts = candidate.relative_to(self.gallery).parts
        except ValueError:
            return False
        return candidate.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in parts)

    def changed(self, path: str) -> None:
        if self._watched(path) and self.settler.observe(path):
            self._changed()

    def arrived(self, path: str) -> None:
        if self._watched(path) and self.settler.arrived(path):
            self._changed()

    def gone(self, path: str) -> None:
        if self._watched(path):
            self.settler.gone(path)
            self.rescan()  # the index may hold it

    def rescan(self) -> None:
        """The next run must look at the whole gallery (a deletion, a folder moved, lost events)."""
        self._rescan = True
        self._changed()

    def _changed(self) -> None:
        self._wake.set()
        if self.on_change is not None:
            self.on_change()

    # ---- what a run asks ----------------------------------------------------------------------
    def has_work(self) -> bool:
        return self._rescan or self.settler.any_settled()

    def wait(self, should_stop: Callable[[], bool], timeout: float) -> bool:
        """Block until a run has something to take (True), `should_stop()` (False) or `timeout` seconds (False)."""
        deadline = time.monotonic() + timeout
        while not should_stop():
            self._wake.clear()
            if self.has_work():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            pause = min(deadline - now, STOP_POLL_S)
            due = self.settler.next_due()
            if due is not None:
                pause = min(pause, max(due - time.monotonic(), 0.0) + 0.01)
            self._wake.wait(pause)
        return False

    def take(self) -> int:
        """A run begins: it takes the settled changes (see Settler.take) and any rescan asked for."""
        self._rescan = False
        return self.settler.take()

    def ready(self, path: Path) -> bool:
        """The builder's readiness check: the file has settled."""
        return self.settler.settled(path)

    @property
    def waiting(self) -> int:
        return self.settler.pending


@dataclass(frozen=True)
class WatchStatus:
    """A watched gallery's state, as /stats shows it: the run under way, the files waiting, the last run."""

    running: bool = False  # a run is under way
    done: int = 0  # files read so far by the run under way (of `total`)
    total: int = 0
    waiting: int = 0  # changed files waiting to settle, when this status was made
    runs: int = 0  # runs finished since the watch began
    last_run_at: float | None = None  # wall-clock time the last run ended
    last_run_s: float = 0.0
    last_changes: str = ""  # the last run's changes in words ("3 added, 1 removed")
    problem: str = ""  # why the last run failed ("" when it did not)


def changed(reports: Sequence[IndexReport]) -> bool:
    """Whether runs changed what searches find."""
    return any(r.added or r.updated or r.removed or r.moved or r.rebuilt for r in reports)


def describe_changes(report: IndexReport) -> str:
    parts = [
        f"{report.added} added",
        f"{report.updated} updated",
        f"{report.removed} removed",
        f"{report.moved} moved",
        f"{report.waiting} waiting",
    ]
    if report.read_errors:
        parts.append(f"{len(report.read_errors)} unreadable")
    return ", ".join(parts)


class WatchRuns:
    """The index runs of a watched gallery, one at a time (the caller's thread: the bot's index thread, or the
    command line's), with their status. `progress` is told each new status."""

    def __init__(
        self,
        engine: Engine,
        models: Sequence[str],
        watcher: GalleryWatcher,
        progress: Callable[[WatchStatus], None] | None = None,
    ):
        self.engine = engine
        self.models = list(models)
        self.watcher = watcher
        self.progress = progress
        self.batch = engine.settings.watch_batch  # files read per run at most (a burst: persons and hooks per batch)
        self._status = WatchStatus()
        self.failures = 0  # runs failed in a row (the pause before the next grows)

    @property
    def status(self) -> WatchStatus:
        return replace(self._status, waiting=self.watcher.waiting)

    def _set(self, status: WatchStatus) -> None:
        self._status = status
        if self.progress is not None:
            self.progress(self.status)

    def run(self, should_stop: Callable[[], bool]) -> list[IndexReport]:
        """One run over every model: what settled since the last run began. Failures are logged (once while they
        repeat) and the run is tried again later (`retry_s`); they are not raised."""
        started = time.perf_counter()
        self.watcher.take()
        self._set(replace(self._status, running=True, done=0, total=0))
        reports: list[IndexReport] = []
        problem, retry = "", False
        try:
            for model in self.models:
                report = self.engine.build_index(
                    model,
                    self.watcher.gallery,
                    progress=self._on_progress,
                    should_stop=should_stop,
                    ready=self.watcher.ready,
                    limit=self.batch,
                )
                if report.embedded_images >= self.batch and report.waiting:  # a burst: the next run goes on at once
                    self.watcher.rescan()
                for error in report.read_errors:  # read once per change of the file: logged once
                    log.warning("cannot index %s (skipped until the file changes)", error)
                reports.append(report)
                if report.stopped:
                    break
        except GalleryError as error:  # no photos yet (a new event): the first one to land starts a run
            problem = str(error)
        except EngineError as error:  # another run held the lock too long, a store that cannot be written, ...
            problem, retry = str(error), True
        except Exception as error:  # not a crash loop: logged, tried again after a pause
            problem, retry = f"{type(error).__name__}: {error}", True
            if problem != self._status.problem:
                log.exception("a watched gallery's index run failed")
        if problem and problem != self._status.problem:  # logged once while it repeats
            log.warning("watching %s: %s", self.watcher.gallery, problem)
        if retry:
            self.watcher.rescan()  # what this run took is looked at again, after a pause (retry_s)
        self.failures = self.failures + 1 if retry else 0
        summary = "; ".join(f"{r.model}: {describe_changes(r)}" for r in reports)
        self._set(
            replace(
                self._status,
                running=False,
                runs=self._status.runs + 1,
                last_run_at=time.time(),
                last_run_s=time.perf_counter() - started,
                last_changes=summary,
                problem=problem,
            )
        )
        return reports

    def retry_s(self) -> float:
        """The pause before the next run after failures in a row (0 when the last run did not fail)."""
        if not self.failures:
            return 0.0
        first, longest = RETRY_S
        return min(longest, first * 2 ** (self.failures - 1))

    def _on_progress(self, progress: IndexProgress) -> None:
        self._set(replace(self._status, done=progress.done, total=progress.total))


def watch_loop(
    engine: Engine,
    models: Sequence[str],
    gallery: Path,
    settings: EngineSettings,
    should_stop: Callable[[], bool],
    on_indexed: Callable[[list[IndexReport]], None] | None = None,
    progress: Callable[[WatchStatus], None] | None = None,
) -> None:
    """Keep the models' indexes up to date with `gallery` until `should_stop()`: a first run at once (what changed
    while nobody watched), then a run each time changes have settled. `on_indexed(reports)` after each run that
    changed what searches find; `progress` with each new status. Returns once stopped (a run under way commits
    what it has)."""
    with GalleryWatcher(settings, gallery) as watcher:
        log.info("watching %s (%s; a file is read once it has held still %g s)", watcher.gallery, watcher.kind,
                 settings.watch_settle_s)  # fmt: skip
        runs = WatchRuns(engine, models, watcher, progress)
        while not should_stop():
            reports = runs.run(should_stop)
            if on_indexed is not None and changed(reports):
                on_indexed(reports)
            pause_until = time.monotonic() + runs.retry_s()
            while not should_stop() and time.monotonic() < pause_until:
                time.sleep(min(STOP_POLL_S, max(0.0, pause_until - time.monotonic())))
            while not should_stop() and not watcher.wait(should_stop, WAIT_S):
                pass


__all__ = ["GalleryWatcher", "Settler", "WatchRuns", "WatchStatus", "changed", "describe_changes", "watch_loop"]
