"""`/reindex`: one rebuild at a time in this replica, in the index thread, editing one message as it goes; a
rebuild that another replica (or `python -m engine index`) is running is waited for, and says so."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial

from bot.runtime import BotRuntime
from engine import MODEL_NAMES, EngineError, IndexProgress, IndexReport

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
    """The rebuild under way: its models, the one being built and its progress, the reports of those done."""

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


class Reindexer:
    """`/reindex`: one rebuild at a time in this replica (`job`, None when idle), started in the background."""

    def __init__(self, runtime: BotRuntime):
        self.rt = runtime
        self.job: ReindexJob | None = None

    def status(self) -> str | None:
        """The running rebuild's progress (for /stats), or None."""
        return self.job.text() if self.job is not None else None

    async def start(self, chat_id: int, which: str | None) -> str | None:
        """Rebuild a model's index in the background (`which`: a model name, "all" for every usable model, None for
        the chat's model). None when the rebuild started (it reports in the chat), else why not."""
        rt = self.rt
        problems = await rt.db(lambda: {name: rt.engine.model_problem(name) for name in MODEL_NAMES})
        if which == "all":
            models = [name for name in MODEL_NAMES if problems[name] is None]
        elif which is None:
            models = [(await rt.chat_settings(chat_id))[0]]
        else:
            models = [which]
        for name in models:
            problem = problems[name]
            if problem:
                return f"Can't reindex {name}: {problem}"
        if not models:
            return "No backend is available to reindex."
        if self.job is not None:  # checked right before the slot is claimed: no await in between
            return f"A reindex is already running. {self.job.text()}"
        self.job = ReindexJob(models=models)
        rt.spawn_long(self._run(self.job, chat_id))
        return None

    async def _run(self, job: ReindexJob, chat_id: int) -> None:
        """Rebuild the indexes of `job.models`, editing one status message; the slot is freed at the end."""
        rt = self.rt
        send = rt.sender
        try:
            status = await send.text(chat_id, job.text())
            loop = asyncio.get_running_loop()
            interval = max(rt.settings.progress_interval_s, 0.05)
            for model in job.models:
                job.model, job.progress, job.waiting = model, None, ""
                future = loop.run_in_executor(
                    rt.index_pool,
                    partial(
                        rt.engine.build_index,
                        model,
                        rt.settings.resolved_gallery(),
                        progress=job.on_progress,
                        should_stop=rt.stopping.is_set,
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
                    await send.text(chat_id, f"Reindexing {model} failed: {rt.public(str(error))}")
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
            rt.metrics.error("unexpected")
        finally:
            self.job = None
