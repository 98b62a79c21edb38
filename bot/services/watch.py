"""A watched gallery in the bot (WATCH_GALLERY): new, changed and deleted photos indexed as they land, after the
start-up build, each once it has settled (engine/indexing/watch.py). The waiting runs in a thread of its own; each
run goes through the index thread (`write_index`), one at a time with /reindex and the gallery edits. After each
run that changed the index, the searchers are refreshed and the `on_indexed` hooks awaited (deliveries)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.runtime import BotRuntime
from engine import MODEL_NAMES
from engine.indexing.watch import WAIT_S, GalleryWatcher, WatchRuns, WatchStatus, changed

log = logging.getLogger(__name__)

START_WAIT_S = 1.0  # how often the watch, before it starts, asks whether the bot is ready or stopping


class GalleryWatchFlow:
    """Watches GALLERY_DIR while the bot runs (when WATCH_GALLERY); `status()` is its /stats line."""

    def __init__(self, runtime: BotRuntime):
        self.rt = runtime
        self.on_indexed: list[Callable[[], Awaitable[None]]] = []  # awaited after each run that changed the index
        self.runs: WatchRuns | None = None

    def status(self) -> str | None:
        """The watch's /stats line: the run under way, the files waiting to settle, the last run; None when off."""
        if not self.rt.settings.watch_gallery:
            return None
        if self.runs is None:
            return "Watching the gallery: starts once the models are ready"
        return describe_status(self.runs.status)

    async def run(self) -> None:
        """Until the bot stops: wait for settled changes, index them in the index thread, tell the hooks."""
        rt = self.rt
        if not rt.settings.watch_gallery:
            return
        while not rt.ready.is_set():  # the start-up build first
            if rt.stopping.is_set():
                return
            try:
                await asyncio.wait_for(rt.ready.wait(), timeout=START_WAIT_S)
            except TimeoutError:
                pass
        models = [model for model in MODEL_NAMES if rt.engine.model_problem(model) is None]
        if not models:
            log.warning("WATCH_GALLERY: no usable model to index with; the gallery is not watched")
            return
        watcher = GalleryWatcher(rt.settings, rt.settings.resolved_gallery())
        try:
            await asyncio.to_thread(watcher.start)
        except Exception:
            log.exception("cannot watch the gallery %s", watcher.gallery)
            return
        log.info("watching %s (%s) for new photos", watcher.gallery, watcher.kind)
        self.runs = runs = WatchRuns(rt.engine, models, watcher)
        try:
            while not rt.stopping.is_set():
                reports = await rt.write_index(runs.run, rt.stopping.is_set)
                if changed(reports) and not rt.stopping.is_set():
                    await rt.write_index(rt.engine.refresh)
                    await self._indexed()
                pause = runs.retry_s()
                if pause:
                    await asyncio.to_thread(rt.stopping.wait, pause)
                while not rt.stopping.is_set() and not await asyncio.to_thread(
                    watcher.wait, rt.stopping.is_set, WAIT_S
                ):
                    pass
        finally:
            await asyncio.to_thread(watcher.stop)

    async def _indexed(self) -> None:
        for hook in list(self.on_indexed):
            try:
                await hook()
            except Exception:
                log.exception("a hook after a watched gallery's index run failed")


def describe_status(status: WatchStatus) -> str:
    """The /stats line: the run under way (photos done of its total), the files waiting to settle, the last run."""
    parts = []
    if status.running:
        parts.append(f"indexing {status.done}/{status.total} photos" if status.total else "looking for changes")
    if status.waiting:
        parts.append(f"{status.waiting} waiting to settle")
    if status.last_run_at is not None:
        when = time.strftime("%H:%M:%S", time.localtime(status.last_run_at))
        parts.append(f"last run {when} ({status.last_run_s:.1f} s): {status.problem or status.last_changes}")
    return "Watching the gallery: " + ("; ".join(parts) if parts else "up to date")
