"""`/reindex`: one rebuild at a time in this replica, in the index thread, editing one message as it goes; a
rebuild that another replica (or `python -m engine index`) is running is waited for, and says so."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from engine import EngineError, IndexProgress, IndexReport

if TYPE_CHECKING:
    from bot.service import BotService

log = logging.getLogger(__name__)


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def describe_report(report: IndexReport) -> str:
    return (
        f"{report.model}: {report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.skipped} skipped, {report.no_face} without a face; {report.faces_indexed} entries indexed "
        f"in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s)"
    )


@dataclass
class ReindexJob:
    models: list[str]
    started: float = field(default_factory=time.monotonic)
    model: str = ""
    progress: IndexProgress | None = None
    waiting: str = ""  # why this run waits (another replica or `engine index` holds the index's writer lock)
    reports: list[IndexReport] = field(default_factory=list)

    def text(self) -> str:
        if self.progress is None or self.progress.total == 0:
            what = self.waiting or "checking the gallery for changes"
            return f"Reindexing {self.model or ', '.join(self.models)}: {what}…"
        p = self.progress
        percent = 100 * p.done / p.total
        eta = f", about {format_seconds(p.eta_s)} left" if p.eta_s is not None and p.done < p.total else ""
        return f"Reindexing {self.model}: {p.done}/{p.total} images ({percent:.0f}%){eta}"

    def on_progress(self, progress: IndexProgress) -> None:
        self.progress, self.waiting = progress, ""

    def on_wait(self, why: str) -> None:
        self.waiting = why


async def run_reindex(svc: BotService, job: ReindexJob, chat_id: int) -> None:
    """Rebuild the indexes of `job.models`, editing one status message; the slot is freed at the end."""
    send = svc.sender
    try:
        status = await send.text(chat_id, job.text())
        loop = asyncio.get_running_loop()
        interval = max(svc.settings.progress_interval_s, 0.05)
        for model in job.models:
            job.model, job.progress, job.waiting = model, None, ""
            future = loop.run_in_executor(
                svc.index_pool,
                partial(
                    svc.engine.build_index,
                    model,
                    svc.settings.resolved_gallery(),
                    progress=job.on_progress,
                    should_stop=svc.stopping.is_set,
                    on_wait=job.on_wait,
                ),
            )
            shown = status.text
            while not future.done():
                await asyncio.wait({future}, timeout=interval)
                text = job.text()
                if not future.done() and text != shown:
                    await send.send(partial(status.edit_text, text))
                    shown = text
            try:
                report = await future
            except EngineError as error:
                await send.text(chat_id, f"Reindexing {model} failed: {svc.public(str(error))}")
                return
            if report.stopped:
                await send.send(
                    partial(
                        status.edit_text,
                        f"Reindex of {model} stopped: the bot is shutting down. The index stays as it was, plus "
                        f"the {report.embedded_images} photos embedded so far; the next /reindex does the rest.",
                    )
                )
                return
            job.reports.append(report)
        lines = ["Reindex done."] + [describe_report(report) for report in job.reports]
        await send.send(partial(status.edit_text, "\n".join(lines)))
    except Exception:
        log.exception("reindex failed")
        svc.metrics.error("unexpected")
    finally:
        svc.reindex_job = None
