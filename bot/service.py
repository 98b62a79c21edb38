"""The bot's work behind the handlers: searches in a bounded worker pool, history, reindexing."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from telegram import Bot, InputMediaPhoto, Message, User
from telegram.constants import ChatAction

from bot import render
from bot.db import Store, upgrade
from bot.settings import Settings
from engine import (
    MODEL_NAMES,
    Engine,
    EngineError,
    IndexProgress,
    IndexReport,
    IndexUnavailableError,
    SearchResult,
)
from engine.images import IMAGE_SUFFIXES, list_gallery_images

log = logging.getLogger(__name__)

STILL_WORKING = "I'm still working on your previous photo — please wait for its answer before sending another."
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses larger files


@dataclass
class ReindexJob:
    models: list[str]
    started: float = field(default_factory=time.monotonic)
    model: str = ""
    progress: IndexProgress | None = None
    reports: list[IndexReport] = field(default_factory=list)

    def text(self) -> str:
        if self.progress is None or self.progress.total == 0:
            return f"Reindexing {self.model or ', '.join(self.models)}: checking the gallery for changes…"
        p = self.progress
        percent = 100 * p.done / p.total
        eta = f", about {format_seconds(p.eta_s)} left" if p.eta_s is not None and p.done < p.total else ""
        return f"Reindexing {self.model}: {p.done}/{p.total} images ({percent:.0f}%){eta}"


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def describe_report(report: IndexReport) -> str:
    return (
        f"{report.model}: {report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.skipped} skipped, {report.no_face} without a face; {report.faces_indexed} entries indexed "
        f"in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s)"
    )


class BotService:
    """Engine, database and worker pools of one running bot. Created in post_init, closed in post_shutdown."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine if engine is not None else Engine(settings)
        self.store: Store | None = None
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="engine")
        self.index_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reindex")
        self.thumbnails = render.ThumbnailCache(settings.thumbnail_side, settings.thumbnail_cache_size)
        self.busy_users: set[int] = set()
        self.reindex_job: ReindexJob | None = None

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate the database, load and warm the usable models, load or build their indexes."""
        url = self.settings.resolved_database_url()
        await asyncio.to_thread(upgrade, url)
        self.store = Store(url)
        for model in MODEL_NAMES:
            problem = self.engine.model_problem(model)
            if problem:
                log.warning("%s unavailable: %s", model, problem)
                continue
            try:
                await self._run(self._prepare_model, model)
            except EngineError as error:
                log.error("cannot prepare %s: %s", model, error)

    def _prepare_model(self, model: str) -> None:
        self.engine.warm_up(model)
        if self.engine.index_info(model) is None and self.settings.build_missing_index:
            log.info("no %s index: building it from %s", model, self.settings.resolved_gallery())
            report = self.engine.build_index(model, self.settings.resolved_gallery())
            log.info("built %s", describe_report(report))
        info = self.engine.index_info(model)
        if info is not None:  # warm the networks with one real search
            photos = list_gallery_images(self.settings.resolved_gallery())
            if photos:
                self.engine.search_path(photos[0], model=model, k=1, max_faces=1)
            log.info("%s ready: %d entries indexed", model, info.count)

    async def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.index_pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.close()

    async def _run(self, function, *args, **kwargs):
        """Run blocking engine work in the bounded worker pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(function, *args, **kwargs))

    # ---- per-chat settings ---------------------------------------------------------------

    async def chat_settings(self, chat_id: int) -> tuple[str, int]:
        model, k = await asyncio.to_thread(self.store.chat_settings, chat_id)
        model = model if model in MODEL_NAMES else self.settings.default_model
        k = min(k or self.settings.default_k, self.settings.max_k)
        return model, k

    def model_lines(self, current: str) -> str:
        lines = [f"Current backend: {current}", "Backends:"]
        about = {"facenet": "finds faces (MTCNN) and compares them (FaceNet)", "vgg16": "compares whole images, no face detection"}
        for name in MODEL_NAMES:
            problem = self.engine.model_problem(name)
            state = "available" if problem is None else f"unavailable — {problem}"
            lines.append(f"• {name}: {about.get(name, '')} — {state}")
        lines.append("Switch with /model <name>.")
        return "\n".join(lines)

    # ---- search --------------------------------------------------------------------------

    async def answer_photo(self, message: Message, user: User, bot: Bot) -> None:
        if user.id in self.busy_users:
            await message.reply_text(STILL_WORKING)
            return
        self.busy_users.add(user.id)
        try:
            await self._answer_photo(message, user, bot)
        finally:
            self.busy_users.discard(user.id)

    async def _answer_photo(self, message: Message, user: User, bot: Bot) -> None:
        started = time.perf_counter()
        if message.photo:
            attachment, name = message.photo[-1], "photo"
        else:
            attachment, name = message.document, message.document.file_name or "file"
        limit = min(self.settings.max_image_bytes, TELEGRAM_DOWNLOAD_LIMIT)
        if attachment.file_size and attachment.file_size > limit:
            await message.reply_text(
                f"That file is {attachment.file_size / 1e6:.1f} MB; I accept images up to {limit / 1e6:.0f} MB. "
                "Please send a smaller photo."
            )
            return
        await message.reply_chat_action(ChatAction.TYPING)
        model, k = await self.chat_settings(message.chat_id)
        problem = self.engine.model_problem(model)
        if problem:
            await message.reply_text(f"The {model} backend is unavailable: {problem}\nSwitch with /model facenet.")
            return
        data = bytes(await (await bot.get_file(attachment.file_id)).download_as_bytearray())
        try:
            image, result = await self._run(self._search, data, model=model, k=k, name=name)
        except IndexUnavailableError:
            await message.reply_text(f"There is no {model} index yet — an admin can build it with /reindex {model}.")
            return
        except EngineError as error:
            await message.reply_text(f"Sorry, I can't use that: {error}")
            return
        if not result.faces:
            await self._record(message, user, model, k, result, data, started)
            await message.reply_text(
                "I found no face in this photo. Try a clearer, front-facing photo, or switch to /model vgg16 "
                "to search by the whole image."
            )
            return
        await message.reply_chat_action(ChatAction.UPLOAD_PHOTO)
        if len(result.faces) > 1:
            boxed = await asyncio.to_thread(render.draw_boxes, image, [face.box for face in result.faces])
            await message.reply_photo(boxed, caption=f"I found {len(result.faces)} faces; their numbers match the captions below.")
        for number, face in enumerate(result.faces, start=1):
            await self._send_matches(message, number, face.matches)
        await self._record(message, user, model, k, result, data, started)
        await message.reply_text(render.summary(result.faces, self.settings.match_threshold))

    def _search(self, data: bytes, *, model: str, k: int, name: str) -> tuple[np.ndarray, SearchResult]:
        """Decode once (the boxes photo is drawn on the same upright pixels) and search; runs in the pool."""
        image = self.engine.decode(data, name=name)
        return image, self.engine.search_image(image, model=model, k=k, max_faces=self.settings.max_faces, name=name)

    async def _send_matches(self, message: Message, number: int, matches) -> None:
        if not matches:
            await message.reply_text(f"Face {number}: the gallery is empty.")
            return
        photos = await asyncio.to_thread(lambda: [self.thumbnails.get(match.path) for match in matches])
        for group in render.chunks(list(zip(matches, photos))):
            if len(group) == 1:
                match, photo = group[0]
                await message.reply_photo(photo, caption=render.caption(number, match))
            else:
                await message.reply_media_group(
                    [InputMediaPhoto(photo, caption=render.caption(number, match)) for match, photo in group]
                )

    async def _record(self, message, user, model, k, result: SearchResult, data: bytes, started: float) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        matches = [
            (number, match.rank, match.name, match.path, match.similarity)
            for number, face in enumerate(result.faces, start=1)
            for match in face.matches
        ]
        await asyncio.to_thread(
            partial(
                self.store.add_query, chat_id=message.chat_id, user_id=user.id, model=model, k=k,
                faces=len(result.faces), latency_ms=latency_ms,
                matches=matches,
            )  # fmt: skip
        )

    # ---- reindex -------------------------------------------------------------------------

    async def reindex(self, message: Message, models: list[str]) -> None:
        """Rebuild the indexes of `models` in the index thread, editing one message as it goes."""
        job = ReindexJob(models=models)
        self.reindex_job = job
        try:
            status = await message.reply_text(job.text())
            loop = asyncio.get_running_loop()
            interval = max(self.settings.progress_interval_s, 0.05)
            for model in models:
                job.model, job.progress = model, None
                future = loop.run_in_executor(
                    self.index_pool,
                    partial(self.engine.build_index, model, self.settings.resolved_gallery(), progress=partial(setattr, job, "progress")),
                )
                shown = status.text
                while not future.done():
                    await asyncio.wait({future}, timeout=interval)
                    text = job.text()
                    if not future.done() and text != shown:
                        await status.edit_text(text)
                        shown = text
                try:
                    job.reports.append(await future)
                except EngineError as error:
                    await message.reply_text(f"Reindexing {model} failed: {error}")
                    return
            lines = ["Reindex done."] + [describe_report(report) for report in job.reports]
            await status.edit_text("\n".join(lines))
        finally:
            self.reindex_job = None


def looks_like_image(file_name: str | None, mime_type: str | None) -> bool:
    if mime_type and mime_type.startswith("image/"):
        return True
    return bool(file_name) and any(file_name.lower().endswith(suffix) for suffix in IMAGE_SUFFIXES)
