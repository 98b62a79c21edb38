"""The index builder: find what changed in a gallery, embed only that, write it through a store.

Changes are found by size and mtime before any hashing; a file whose content hash did not
change is not re-embedded (a touched or copied gallery), and a file that moved to another
folder (a renamed person) keeps its vectors. Embedded work is committed every
`INDEX_COMMIT_EVERY` photos or `INDEX_COMMIT_INTERVAL_S` seconds, each commit one atomic store
write, so a killed run resumes from its last commit and searches never see a half-written state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.backends.base import ModelBackend
from engine.errors import GalleryError, IndexBusyError, ModelUnavailableError
from engine.images import file_sha256, list_gallery_images, person_name
from engine.indexing.pipeline import EmbeddedImage, IndexPipeline
from engine.runtime.device import DeviceInfo
from engine.settings import EngineSettings
from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader, VectorStore, landmarks_tuple
from engine.types import IndexProgress, IndexReport

if TYPE_CHECKING:
    from engine.indexing.distributed import RayPipeline

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IndexProgress], None]
ReadyCheck = Callable[[Path], bool]  # False: a changed file is still being written; left for a later run
PROJECTION_KEY = "projection"
LOCK_POLL_S = 1.0  # while another run holds the writer lock, how often a waiting run asks whether to stop


@dataclass(frozen=True)
class GalleryFile:
    """A gallery photo to embed: its path relative to the gallery root, and where it is."""

    path: str
    file: Path
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class GalleryDiff:
    todo: list[tuple[GalleryFile, str]]  # (file, "added" | "updated")
    removed: set[str]
    moves: dict[str, tuple[str, str]]
    touched: list[FileRecord]


class IndexBuilder:
    """Builds one model's index in one store. Embedding runs on this thread; decoding and detection
    of the next chunks run ahead of it in worker processes (or everything on Ray)."""

    def __init__(self, backend: ModelBackend, settings: EngineSettings, device: DeviceInfo | None = None):
        self.backend = backend
        self.settings = settings
        self.device = device

    def build(
        self,
        store: VectorStore,
        gallery: Path,
        paths: list[Path] | None = None,
        *,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_wait: Callable[[str], None] | None = None,
        allow_empty: bool = False,
        ready: ReadyCheck | None = None,
        limit: int | None = None,
    ) -> IndexReport:
        """Bring `store` up to date with `gallery` (or with `paths`, a subset of it: evaluation).

        `ready` (a watched gallery, engine/indexing/watch.py): a new or changed file for which it answers False is
        left as it is for now (not read, not recorded, an older version kept in the index) and counted in
        `report.waiting`; a later run takes it. `limit`: at most this many files are read (the first in path order,
        after moves and removals are known); the others count as waiting too.

        A gallery without images is refused (GalleryError: a wrong or unmounted folder must not empty an index),
        unless `allow_empty` (a gallery edit that removed the last photos): then every file leaves the store.

        A second run on the same store waits for the first (`on_wait` is told why), up to
        INDEX_LOCK_WAIT_S. `should_stop` is checked between chunks: what was embedded so far is
        committed and the report says `stopped` (and each second of such a wait: nothing is done).
        """
        if self.backend.problem():  # missing weights: said before any waiting for a lock
            raise ModelUnavailableError(self.backend.problem())
        gallery = Path(gallery).resolve()
        if not gallery.is_dir():
            raise GalleryError(f"gallery folder not found: {gallery}")
        layout = self.settings.gallery_layout
        paths = list_gallery_images(gallery, layout) if paths is None else paths
        if not paths and not allow_empty:
            expected = "one folder per person with photos in it" if layout == "people" else "photos at any depth"
            raise GalleryError(f"no images in {gallery} (GALLERY_LAYOUT={layout}: expected {expected})")
        lock = self._writer_lock(store, should_stop, on_wait)
        if lock is None:  # told to stop while another run held the lock: nothing was read or written
            return IndexReport(model=self.backend.name, gallery=str(gallery), images=len(paths), stopped=True)
        try:
            if not self.settings.index_ray:  # on Ray the actors load the networks
                self.backend.require()
            return self._build(store, gallery, paths, progress, should_stop, ready, limit)
        finally:
            lock.__exit__(None, None, None)

    def _writer_lock(
        self, store: VectorStore, should_stop: Callable[[], bool] | None, on_wait: Callable[[str], None] | None
    ) -> AbstractContextManager | None:
        """The store's writer lock, entered. While another run (another process, another bot replica) holds it:
        wait up to INDEX_LOCK_WAIT_S (then IndexBusyError), asking `should_stop` every second (None: stop)."""
        lock = store.writer(timeout=0)
        try:
            lock.__enter__()
            return lock
        except IndexBusyError:
            message = f"another index run is writing the {self.backend.name} index; waiting for it to finish"
            log.warning(message)
            if on_wait is not None:
                on_wait(message)
        deadline = time.monotonic() + self.settings.index_lock_wait_s
        while True:
            if should_stop is not None and should_stop():
                return None
            left = deadline - time.monotonic()
            lock = store.writer(timeout=max(0.0, min(LOCK_POLL_S, left)))
            try:
                lock.__enter__()
                return lock
            except IndexBusyError:
                if left <= LOCK_POLL_S:
                    raise

    def _build(
        self,
        store: VectorStore,
        gallery: Path,
        paths: list[Path],
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
        ready: ReadyCheck | None = None,
        limit: int | None = None,
    ) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport(model=self.backend.name, gallery=str(gallery), images=len(paths))
        report.device = self.device.describe() if self.device is not None else ""
        store.refresh()
        layout = self.settings.gallery_layout
        header = StoreHeader(
            model=self.backend.name, dim=self.backend.dim, fingerprint=self.backend.fingerprint(), gallery=str(gallery),
            layout=layout,
        )  # fmt: skip
        if store.header != header:
            if store.header is not None:
                report.rebuilt = True
                report.rebuilt_reason = _rebuild_reason(store.header, header)
                log.warning("the %s index %s: rebuilding it from scratch", header.model, report.rebuilt_reason)
            store.initialise(header)
        diff = self._diff(store.files(), gallery, paths, report, layout, ready)
        if limit is not None and len(diff.todo) > limit:  # the rest: a later run (a watched gallery's burst)
            report.waiting += len(diff.todo) - limit
            diff.todo = diff.todo[:limit]
        report.removed, report.moved = len(diff.removed), len(diff.moves)

        pending = Changes(remove_paths=diff.removed, moves=diff.moves, touched=diff.touched)
        pending_vectors: list[np.ndarray] = []
        pending_images = 0
        projection = store.get_meta(PROJECTION_KEY)

        def commit() -> None:
            nonlocal pending, pending_vectors, pending_images, projection
            if pending.is_empty():
                return
            raw = np.concatenate(pending_vectors) if pending_vectors else np.zeros((0, 0), np.float32)
            if len(raw) and projection is None:
                projection = self.backend.fit_projection(raw)
                if projection is not None:
                    pending.meta[PROJECTION_KEY] = projection
            pending.vectors = (
                self.backend.project(raw, projection) if len(raw) else np.zeros((0, header.dim), np.float32)
            )
            store.apply(pending)
            pending, pending_vectors, pending_images = Changes(), [], 0

        done, last_commit = 0, time.monotonic()
        if progress is not None and diff.todo:  # the total as soon as it is known, before the first chunk's work
            progress(IndexProgress(done=0, total=len(diff.todo), elapsed_s=time.perf_counter() - started))
        by_path = {item.path: (item, change) for item, change in diff.todo}
        for chunk in self._embedded([item for item, _ in diff.todo], report):
            for result in chunk:
                item, change = by_path[result.path]
                self._count(result, change, report)
                pending.records.append(_record(item, len(result.faces), result.error))
                if result.faces:
                    name = person_name(Path(item.path), layout)
                    pending.rows.extend(_rows(item.path, name, result))
                    pending_vectors.append(np.stack([vector for _, vector in result.faces]))
            done += len(chunk)
            pending_images += len(chunk)
            report.embedded_images = done
            if (
                pending_images >= self.settings.index_commit_every
                or time.monotonic() - last_commit >= self.settings.index_commit_interval_s
            ):
                commit()
                last_commit = time.monotonic()
            if progress is not None:
                progress(IndexProgress(done=done, total=len(diff.todo), elapsed_s=time.perf_counter() - started))
            if should_stop is not None and should_stop() and done < len(diff.todo):
                report.stopped = True
                break
        commit()
        store.refresh()
        report.faces_indexed = store.count
        report.seconds = time.perf_counter() - started
        return report

    # ---- what changed -------------------------------------------------------------------
    def _diff(
        self,
        known: dict[str, FileRecord],
        gallery: Path,
        paths: list[Path],
        report: IndexReport,
        layout: str,
        ready: ReadyCheck | None = None,
    ) -> GalleryDiff:
        todo: list[tuple[GalleryFile, str]] = []
        touched: list[FileRecord] = []
        listed: set[str] = set()
        for path in paths:
            relative = path.relative_to(gallery).as_posix()
            listed.add(relative)
            try:
                stat = path.stat()
            except OSError as error:
                report.skipped += 1
                report.skipped_files.append(f"{relative}: {error.strerror or error}")
                continue
            record = known.get(relative)
            if record is not None and record.size == stat.st_size and record.mtime_ns == stat.st_mtime_ns:
                self._count_unchanged(record, report)
                continue
            if ready is not None and not ready(path):  # still being written: its older version (if any) stays
                report.waiting += 1
                continue
            try:
                sha = file_sha256(path)
            except OSError as error:
                report.skipped += 1
                report.skipped_files.append(f"{relative}: {error.strerror or error}")
                continue
            item = GalleryFile(relative, path, stat.st_size, stat.st_mtime_ns, sha)
            if record is not None and record.sha256 == sha:  # touched or copied: same content
                touched.append(_record(item, record.faces, record.error))
                self._count_unchanged(record, report)
                continue
            todo.append((item, "added" if record is None else "updated"))
        removed = {path for path in known if path not in listed}

        # A removed file whose content reappears under a new path was moved (a renamed person):
        # its rows follow it instead of being embedded again.
        removed_by_sha = {known[path].sha256: path for path in sorted(removed) if not known[path].error}
        moves: dict[str, tuple[str, str]] = {}
        still_todo = []
        for item, change in todo:
            old = removed_by_sha.pop(item.sha256, None) if change == "added" else None
            if old is None:
                still_todo.append((item, change))
                continue
            moves[old] = (item.path, person_name(Path(item.path), layout))
            removed.discard(old)
            touched.append(_record(item, known[old].faces, None))
            self._count_unchanged(known[old], report)
        return GalleryDiff(todo=still_todo, removed=removed, moves=moves, touched=touched)

    @staticmethod
    def _count_unchanged(record: FileRecord, report: IndexReport) -> None:
        if record.error:
            report.skipped += 1
            report.skipped_files.append(f"{record.error} (unchanged since last run)")
            return
        report.unchanged += 1
        if record.faces == 0:
            report.no_face += 1

    @staticmethod
    def _count(result: EmbeddedImage, change: str, report: IndexReport) -> None:
        if result.error is not None:
            report.skipped += 1
            report.skipped_files.append(result.error)  # the message starts with the file's gallery path
            report.read_errors.append(result.error)
            return
        setattr(report, change, getattr(report, change) + 1)
        if not result.faces:
            report.no_face += 1

    # ---- embedding ----------------------------------------------------------------------
    def _embedded(self, items: list[GalleryFile], report: IndexReport) -> Iterator[list[EmbeddedImage]]:
        """Chunks of embedded photos in input order: decoding and detection run ahead in worker processes
        (engine.indexing.pipeline), or the whole work on a Ray cluster when INDEX_RAY is set (engine.indexing.distributed)."""
        if not items:
            return
        pipeline: RayPipeline | IndexPipeline
        if self.settings.index_ray:
            from engine.indexing.distributed import RayPipeline

            pipeline = RayPipeline(self.settings, self.backend.name, self.settings.index_ray)
            report.device = f"Ray cluster {self.settings.index_ray}"
        else:
            pipeline = IndexPipeline(self.settings, self.backend, device=self.device)
        try:
            yield from pipeline.run([(item.path, item.file) for item in items])
        finally:
            if pipeline.stats.images:
                report.pipeline = pipeline.stats.summary()


def _rows(path: str, name: str, result: EmbeddedImage) -> list[FaceRow]:
    """One row per embedded face, with its detection confidence and landmarks when the backend found faces."""
    confidences: Sequence[float | None] = result.confidences or [None] * len(result.faces)
    landmarks = result.landmarks or [None] * len(result.faces)
    return [
        FaceRow(path, name, box, None if confidence is None else float(confidence), landmarks_tuple(points))
        for (box, _), confidence, points in zip(result.faces, confidences, landmarks)
    ]


def _rebuild_reason(old: StoreHeader, new: StoreHeader) -> str:
    """Why a store is emptied, in words (an operator switching GALLERY_LAYOUT must understand the rebuild)."""
    if old.layout != new.layout:
        return (
            f"was built in the {old.layout} layout and the gallery is now indexed in the {new.layout} layout "
            f"(GALLERY_LAYOUT / --layout); faces of two layouts are never mixed"
        )
    if old.gallery != new.gallery:
        return f"was built for another gallery folder ({old.gallery})"
    return "was built with other weights or settings"


def _record(item: GalleryFile, faces: int, error: str | None) -> FileRecord:
    return FileRecord(
        path=item.path, size=item.size, mtime_ns=item.mtime_ns, sha256=item.sha256, faces=faces, error=error
    )
