"""The bot's work behind the handlers: searches in a bounded worker pool, albums, pages, history, reindexing."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from telegram import Bot, InputMediaPhoto, Message, User
from telegram.constants import ChatAction
from telegram.error import BadRequest

from bot import render
from bot.db import Store, upgrade
from bot.delivery import FileIdCache, file_key, retrying
from bot.metrics import Metrics
from bot.paging import PAGE_LIMIT, PhotoQuery, ResultPages, ResultState, result_keyboard
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
from engine.gallery import Gallery
from engine.images import IMAGE_SUFFIXES, list_gallery_images

log = logging.getLogger(__name__)

STILL_WORKING = "I'm still working on your previous photo — please wait for its answer before sending another."
BUSY = "I'm busy with other people's photos right now — please try again in a minute."
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses larger files
RECENT_ALBUMS = 500  # albums remembered so that `/add Name` can answer one


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


@dataclass
class _Album:
    """Parts of one media group arriving as separate updates."""

    messages: list[Message]
    user: User
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Searched:
    number: int
    file_id: str
    name: str
    image: np.ndarray | None = None
    result: SearchResult | None = None
    error: str | None = None


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def describe_report(report: IndexReport) -> str:
    return (
        f"{report.model}: {report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.skipped} skipped, {report.no_face} without a face; {report.faces_indexed} entries indexed "
        f"in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s)"
    )


def attachment_of(message: Message):
    """(the file to download, a name for messages): the largest photo size, or the document."""
    if message.photo:
        return message.photo[-1], "photo"
    return message.document, message.document.file_name or "file"


class BotService:
    """Engine, database and worker pools of one running bot. Started in post_init, stopped in post_stop."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine if engine is not None else Engine(settings)
        self.gallery = Gallery(self.engine)
        self.store: Store | None = None
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="engine")
        self.index_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reindex")
        self.thumbnails = render.ThumbnailCache(settings.thumbnail_side, settings.thumbnail_cache_size)
        self.file_ids = FileIdCache()
        self.pages = ResultPages()
        self.metrics = Metrics(self._index_sizes, lambda: self.pending)
        self.busy_users: set[int] = set()
        self.pending = 0  # photos accepted and not yet searched (waiting for or in the pool)
        self.reindex_job: ReindexJob | None = None
        self.indexing: dict[str, IndexProgress] = {}  # models whose missing index is being built at start
        self.preparing: set[str] = set()  # models not loaded yet at start
        self.ready = asyncio.Event()  # set once every usable model is prepared
        self.recent_albums: OrderedDict[tuple[int, str], list[tuple[str, str]]] = OrderedDict()
        self._albums: dict[tuple[int, str], _Album] = {}
        self._tasks: set[asyncio.Task] = set()
        self._purge_task: asyncio.Task | None = None
        self._refresh_task: asyncio.Task | None = None
        self._stopping = threading.Event()

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate the database, then prepare the models in the background: the bot answers at once."""
        url = self.settings.resolved_database_url()
        await asyncio.to_thread(upgrade, url)
        self.store = Store(url)
        if not self.settings.allowed_user_ids:
            log.warning(
                "ALLOWED_USER_IDS is empty: ANYONE who finds this bot can use it to identify faces in the gallery. "
                "Set ALLOWED_USER_IDS to the Telegram user ids who may use it."
            )
        if self.settings.metrics_port is not None:
            await self.metrics.serve(self.settings.metrics_listen, self.settings.metrics_port, self.health)
        self.preparing = {model for model in MODEL_NAMES if self.engine.model_problem(model) is None}
        self.spawn(self._prepare_all())
        if self.settings.history_retention_days:
            self._purge_task = self.spawn(self._purge_history_periodically())
        self._refresh_task = self.spawn(self._pick_up_new_indexes())

    def spawn(self, coroutine) -> asyncio.Task:
        """A background task of the service: awaited (or cancelled) when the bot stops."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _prepare_all(self) -> None:
        try:
            for model in MODEL_NAMES:
                problem = self.engine.model_problem(model)
                if problem:
                    log.warning("%s unavailable: %s", model, problem)
                    continue
                try:
                    await asyncio.get_running_loop().run_in_executor(self.index_pool, self._prepare_model, model)
                    if self._stopping.is_set():
                        return
                except EngineError as error:
                    log.error("cannot prepare %s: %s", model, error)
                finally:
                    self.indexing.pop(model, None)
                    self.preparing.discard(model)
        finally:
            self.ready.set()

    def _prepare_model(self, model: str) -> None:
        self.engine.warm_up(model)
        if self.engine.index_info(model) is None and self.settings.build_missing_index:
            log.info("no %s index: building it from the gallery while the bot answers", model)
            self.indexing[model] = IndexProgress(done=0, total=0, elapsed_s=0.0)
            report = self.engine.build_index(
                model,
                self.settings.resolved_gallery(),
                progress=partial(self._build_progress, self.indexing, model),
                should_stop=self._stopping.is_set,
            )
            if report.stopped:
                log.info("stopped building the %s index (the bot is stopping); the next start goes on from here", model)
                return
            log.info("built %s", describe_report(report))
        info = self.engine.index_info(model)
        if info is not None:  # warm the networks with one real search
            photos = list_gallery_images(self.settings.resolved_gallery())
            if photos:
                self.engine.search_path(photos[0], model=model, k=1, max_faces=1)
            log.info("%s ready: %d entries indexed", model, info.count)

    @staticmethod
    def _build_progress(target, key, progress: IndexProgress) -> None:
        """Progress callback of index builds (a stop is asked through `should_stop`)."""
        if isinstance(target, dict):
            target[key] = progress
        else:
            setattr(target, key, progress)

    async def _pick_up_new_indexes(self) -> None:
        """Live pickup: index versions written by another process (`python -m engine index`, another replica)
        are loaded every INDEX_REFRESH_S seconds, off the event loop; searches meanwhile use the old one."""
        while not self._stopping.is_set():
            await asyncio.sleep(self.settings.index_refresh_s)
            try:
                changed = await asyncio.get_running_loop().run_in_executor(self.index_pool, self.engine.refresh)
                for model in changed:
                    info = self.engine.index_info(model)
                    log.info("picked up a new %s index: %s faces", model, info.count if info else 0)
            except Exception:  # noqa: BLE001 - retried at the next interval
                log.exception("looking for a new index version failed")

    async def _purge_history_periodically(self) -> None:
        while True:
            try:
                deleted = await asyncio.to_thread(self.store.purge_older_than, self.settings.history_retention_days)
                if deleted:
                    log.info("deleted %d queries older than %s days", deleted, self.settings.history_retention_days)
            except Exception:  # noqa: BLE001 - a failed purge is retried next hour
                log.exception("history purge failed")
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        """Before the Telegram client closes: builds end at their next chunk (old indexes kept), tasks finish."""
        self._stopping.set()
        for task in (self._purge_task, self._refresh_task):
            if task is not None:
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        self._stopping.set()
        await asyncio.to_thread(self.index_pool.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)
        await self.metrics.close()
        if self.store is not None:
            self.store.close()

    def health(self) -> dict:
        return {
            "status": "ok",
            "ready": self.ready.is_set(),
            "preparing": sorted(self.preparing),
            "indexing": {model: self._percent(p) for model, p in self.indexing.items()},
            "queue": self.pending,
        }

    def _index_sizes(self) -> dict[str, int]:
        return {model: info.count for model in MODEL_NAMES if (info := self.engine.index_info(model)) is not None}

    async def _run(self, function, *args, **kwargs):
        """Run blocking engine work in the bounded worker pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(function, *args, **kwargs))

    async def send(self, factory):
        """A Telegram call retried after network errors and escaped flood waits (SEND_RETRIES)."""
        return await retrying(
            factory, self.settings.send_retries, on_retry=lambda kind: self.metrics.error(f"telegram_{kind}")
        )

    def public(self, text: str) -> str:
        """A message for users without server paths (folders of the models, data and gallery)."""
        s = self.settings
        for folder in sorted(
            {str(p) for d in (s.models_dir, s.data_dir, s.resolved_gallery()) for p in (d, d.resolve())},
            key=len,
            reverse=True,
        ):
            text = text.replace(folder + "/", "").replace(folder, "the server's folder")
        return text

    # ---- per-chat settings ---------------------------------------------------------------

    async def chat_settings(self, chat_id: int) -> tuple[str, int]:
        model, k = await asyncio.to_thread(self.store.chat_settings, chat_id)
        model = model if model in MODEL_NAMES else self.settings.default_model
        k = min(k or self.settings.default_k, self.settings.max_k)
        return model, k

    def model_lines(self, current: str) -> str:
        lines = [f"Current backend: {current}", "Backends:"]
        about = {
            "facenet": "finds faces (MTCNN) and compares them (FaceNet)",
            "vgg16": "compares whole images, no face detection",
        }
        for name in MODEL_NAMES:
            problem = self.engine.model_problem(name)
            state = "available" if problem is None else f"unavailable — {self.public(problem)}"
            lines.append(f"• {name}: {about.get(name, '')} — {state}")
        lines.append("Switch with /model <name>.")
        return "\n".join(lines)

    @staticmethod
    def _percent(progress: IndexProgress) -> int:
        return round(100 * progress.done / progress.total) if progress.total else 0

    # ---- photos and albums ---------------------------------------------------------------

    async def answer_photo(self, message: Message, user: User, bot: Bot) -> None:
        """A photo or image file: part of an album (collected), a gallery `/add` caption, or a search."""
        if message.media_group_id:
            self._collect_album(message, user, bot)
            return
        from bot import gallery_commands

        if gallery_commands.is_add(message.caption):
            await gallery_commands.add_from_messages(self, [message], user, message.caption, bot)
            return
        await self.search_request([message], user, bot)

    def _collect_album(self, message: Message, user: User, bot: Bot) -> None:
        key = (message.chat_id, message.media_group_id)
        album = self._albums.get(key)
        if album is not None:
            album.messages.append(message)
            album.arrived.set()
            return
        self._albums[key] = _Album(messages=[message], user=user)
        self.spawn(self._finish_album(key, message, bot))

    async def _finish_album(self, key, first: Message, bot: Bot) -> None:
        """Wait until no part arrived for ALBUM_WAIT_S, then answer the album as one request."""
        album = self._albums[key]
        while True:
            album.arrived.clear()
            try:
                await asyncio.wait_for(album.arrived.wait(), timeout=self.settings.album_wait_s)
            except asyncio.TimeoutError:
                break
        del self._albums[key]
        messages = sorted(album.messages, key=lambda m: m.message_id)
        self.recent_albums[key] = [(attachment_of(m)[0].file_id, attachment_of(m)[1]) for m in messages]
        while len(self.recent_albums) > RECENT_ALBUMS:
            self.recent_albums.popitem(last=False)
        from bot import gallery_commands

        try:
            caption = next((m.caption for m in messages if m.caption), None)
            if gallery_commands.is_add(caption):
                await gallery_commands.add_from_messages(self, messages, album.user, caption, bot)
            else:
                await self.search_request(messages, album.user, bot)
        except Exception:  # noqa: BLE001 - a background task: PTB's error handler does not see it
            log.exception("exception while answering an album")
            self.metrics.error("unexpected")
            await self.send(lambda: messages[0].reply_text("Sorry, something went wrong. Please try again."))

    async def search_request(self, messages: list[Message], user: User, bot: Bot) -> None:
        """One answer for one photo or one album; one request per user at a time."""
        if user.id in self.busy_users:
            await self.send(lambda: messages[0].reply_text(STILL_WORKING))
            return
        self.busy_users.add(user.id)
        try:
            await self._search_request(messages, user, bot)
        finally:
            self.busy_users.discard(user.id)

    async def _search_request(self, messages: list[Message], user: User, bot: Bot) -> None:
        started = time.perf_counter()
        first = messages[0]
        reply = partial(self._reply, first)
        limit = min(self.settings.max_image_bytes, TELEGRAM_DOWNLOAD_LIMIT)
        photos: list[_Searched] = []
        notes: list[str] = []
        for number, message in enumerate(messages, start=1):
            attachment, name = attachment_of(message)
            if attachment.file_size and attachment.file_size > limit:
                what = "That file" if len(messages) == 1 else f"Photo {number}"
                notes.append(
                    f"{what} is {attachment.file_size / 1e6:.1f} MB; I accept images up to {limit / 1e6:.0f} MB. "
                    "Please send a smaller photo."
                )
                self.metrics.error("too_large")
                continue
            photos.append(_Searched(number=number, file_id=attachment.file_id, name=name))
        if not photos:
            await reply("\n".join(notes))
            return
        model, k = await self.chat_settings(first.chat_id)
        problem = self.engine.model_problem(model)
        if problem:
            await reply(f"The {model} backend is unavailable: {self.public(problem)}\nSwitch with /model facenet.")
            return
        progress = self.indexing.get(model)
        if progress is None and model in self.preparing and self.engine.index_info(model) is None:
            progress = IndexProgress(done=0, total=0, elapsed_s=0.0)  # still loading: the index may have to be built
        if progress is not None:
            await reply(
                f"The gallery is being indexed, {self._percent(progress)}% done — please try again in a minute."
            )
            return
        # back-pressure: refuse before downloading (an album larger than the queue only goes into an empty one)
        if self.pending and self.pending + len(photos) > self.settings.max_queue:
            self.metrics.busy.inc(len(photos))
            self.metrics.error("busy")
            await reply(BUSY)
            return
        self.pending += len(photos)
        try:
            await self.send(lambda: first.reply_chat_action(ChatAction.TYPING))
            await asyncio.gather(*(self._search_one(bot, photo, model, k) for photo in photos))
        finally:
            self.pending -= len(photos)
        if all(isinstance(p.error, IndexUnavailableError) for p in photos):
            await reply(f"There is no {model} index yet — an admin can build it with /reindex {model}.")
            return
        album = len(messages) > 1
        for photo in photos:
            if photo.error is not None:
                notes.append(
                    (f"Photo {photo.number}: " if album else "")
                    + f"Sorry, I can't use that: {self.public(str(photo.error))}"
                )
        searched = [p for p in photos if p.result is not None]
        if not any(p.result.faces for p in searched):
            for photo in searched:
                await self._record(first, user, model, k, photo.result, started)
            if searched:
                what = "these photos" if len(searched) > 1 else "this photo"
                notes.append(
                    f"I found no face in {what}. Try a clearer, front-facing photo, or switch to /model vgg16 "
                    "to search by the whole image."
                )
            await reply("\n".join(notes))
            return
        await self.send(lambda: first.reply_chat_action(ChatAction.UPLOAD_PHOTO))
        page = min(k, PAGE_LIMIT)
        send_started = time.perf_counter()
        for photo in searched:
            for number, face in enumerate(photo.result.faces, start=1):
                unknown = face.identity.name is None
                if unknown:  # said first, so the closest faces are not taken for matches
                    note = render.not_in_gallery(number, face, len(photo.result.faces))
                    await self._reply(first, (f"Photo {photo.number}: " if album else "") + note)
                photo_number = photo.number if album else None
                await self._send_matches(first, number, face.matches[:page], photo_number, closest=unknown)
        self.metrics.stage.labels(stage="send").observe(time.perf_counter() - send_started)
        for photo in searched:
            await self._record(first, user, model, k, photo.result, started)
        state = ResultState(
            chat_id=first.chat_id, user_id=user.id, model=model, k=k, shown=page, page=page, max_k=self.settings.max_k,
            index_size=info.count if (info := self.engine.index_info(model)) else 0,
            photos=[
                PhotoQuery(
                    p.file_id, p.name, [f.box for f in p.result.faces], [f.matches for f in p.result.faces],
                    [f.identity.name is None for f in p.result.faces],
                )
                for p in searched
            ],
        )  # fmt: skip
        lines = list(notes)
        for photo in searched:
            if album:
                text = render.summary(photo.result.faces) if photo.result.faces else "no face found"
                lines.append(f"Photo {photo.number}: " + text.replace("\n", f"\nPhoto {photo.number}: "))
            else:
                lines.append(render.summary(photo.result.faces))
        if state.multi_face:
            lines.append("Several faces: “Show faces” shows which is which.")
        token = self.pages.add(state)
        self.busy_users.discard(user.id)  # the user may send the next photo as soon as this summary arrives
        summary = await self._reply(first, "\n".join(lines), reply_markup=result_keyboard(token, state))
        state.summary_message_id = summary.message_id
        self.metrics.stage.labels(stage="total").observe(time.perf_counter() - started)

    async def _search_one(self, bot: Bot, photo: _Searched, model: str, k: int, count: bool = True) -> None:
        """Download and search one photo into `photo`; `count`: a new photo for the metrics (not another page)."""
        started = time.perf_counter()
        try:
            file = await self.send(lambda: bot.get_file(photo.file_id))
            data = bytes(await self.send(file.download_as_bytearray))
        except BadRequest as error:
            photo.error = EngineError(f"Telegram would not give me the file ({error.message})")
            self.metrics.error("download")
            return
        self.metrics.stage.labels(stage="download").observe(time.perf_counter() - started)
        queued = time.perf_counter()
        try:
            photo.image, photo.result = await self._run(
                self._search, data, model=model, k=k, name=photo.name, queued=queued
            )
        except EngineError as error:
            photo.error = error
            self.metrics.error(type(error).__name__)
            return
        if not count:
            return
        self.metrics.photos.inc()
        self.metrics.faces.inc(len(photo.result.faces))
        for stage in ("detect", "embed", "search"):
            self.metrics.stage.labels(stage=stage).observe(photo.result.ms.get(stage, 0.0) / 1000)

    def _search(self, data: bytes, *, model: str, k: int, name: str, queued: float) -> tuple[np.ndarray, SearchResult]:
        """Decode once (the boxes photo is drawn on the same upright pixels) and search; runs in the pool."""
        self.metrics.stage.labels(stage="queue").observe(time.perf_counter() - queued)
        image = self.engine.decode(data, name=name)
        return image, self.engine.search_image(image, model=model, k=k, max_faces=self.settings.max_faces, name=name)

    async def _reply(self, message: Message, text: str, **kwargs) -> Message:
        return await self.send(lambda: message.reply_text(text, **kwargs))

    async def _send_matches(
        self, message: Message, number: int, matches, photo_number: int | None = None, *, closest: bool = False
    ) -> None:
        """Albums of the matches' gallery photos: a cached file_id where Telegram has one, else an upload."""
        label = f"Photo {photo_number} · Face {number}" if photo_number is not None else f"Face {number}"
        if not matches:
            await self._reply(message, f"{label}: no more matches in the gallery.")
            return
        items = []
        for match in matches:
            try:
                key = file_key(match.path)
            except OSError:
                log.warning("gallery file missing since the last index: %s", match.path)
                self.metrics.error("missing_gallery_file")
                continue
            items.append((match, key))
        if not items:
            await self._reply(message, f"{label}: the matching gallery photos are no longer available.")
            return
        for group in render.chunks(items):
            await self._send_group(message, number, photo_number, group, closest=closest)

    async def _send_group(
        self, message: Message, number: int, photo_number: int | None, group, use_cache: bool = True, closest: bool = False
    ) -> None:
        def media_of():
            ready = []
            for match, key in group:
                cached = self.file_ids.get(key) if use_cache else None
                if cached is not None:
                    ready.append((match, key, cached, True))
                    continue
                try:
                    ready.append((match, key, self.thumbnails.get(match.path), False))
                except OSError:
                    log.warning("gallery file missing since the last index: %s", match.path)
                    self.metrics.error("missing_gallery_file")
            return ready

        ready = await asyncio.to_thread(media_of)
        if not ready:
            return
        captions = [render.caption(number, match, photo_number, closest=closest) for match, *_ in ready]
        try:
            if len(ready) == 1:
                sent = [await self.send(lambda: message.reply_photo(ready[0][2], caption=captions[0]))]
            else:
                media = [InputMediaPhoto(item[2], caption=text) for item, text in zip(ready, captions)]
                sent = list(await self.send(lambda: message.reply_media_group(media)))
        except BadRequest as error:
            if not any(cached for *_, cached in ready):
                raise
            log.warning("Telegram refused cached file_ids (%s): uploading again", error)
            self.file_ids.drop(key for _, key, _, cached in ready if cached)
            await self._send_group(message, number, photo_number, group, use_cache=False, closest=closest)
            return
        for (match, key, _, cached), answer in zip(ready, sent):
            if not cached and answer.photo:
                self.file_ids.put(key, answer.photo[-1].file_id)

    async def _record(self, message, user, model, k, result: SearchResult, started: float) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        matches = [
            (number, match.rank, match.name, match.path, match.similarity)
            for number, face in enumerate(result.faces, start=1)
            for match in face.matches
        ]
        await asyncio.to_thread(
            partial(
                self.store.add_query,
                chat_id=message.chat_id,
                user_id=user.id,
                model=model,
                k=k,
                faces=len(result.faces),
                latency_ms=latency_ms,
                matches=matches,
                answers=[(n, face.identity.name, face.identity.score) for n, face in enumerate(result.faces, start=1)],
            )  # fmt: skip
        )

    # ---- result buttons ------------------------------------------------------------------

    async def more_matches(self, state: ResultState, message: Message, bot: Bot) -> None:
        """The next page of every face of the answer; searched again when past the ranks fetched."""
        start = state.shown
        end = min(start + state.page, state.max_k)
        if any(len(face) < end for p in state.photos for face in p.matches) and start + 1 <= state.index_size:
            for photo in state.photos:
                searched = _Searched(number=0, file_id=photo.file_id, name=photo.name)
                await self._search_one(bot, searched, state.model, end, count=False)
                if searched.result is not None and len(searched.result.faces) == len(photo.matches):
                    photo.matches = [face.matches for face in searched.result.faces]
        album = len(state.photos) > 1
        sent_any = False
        for number_photo, photo in enumerate(state.photos, start=1):
            for number, matches in enumerate(photo.matches, start=1):
                page = matches[start:end]
                if page:
                    sent_any = True
                    closest = number <= len(photo.unknown) and photo.unknown[number - 1]
                    await self._send_matches(message, number, page, number_photo if album else None, closest=closest)
        state.shown = end
        if not sent_any:
            state.shown = state.max_k
        token = self.pages.add(state)
        text = f"Matches {start + 1}–{end}." if sent_any else "No more matches in the gallery."
        await self._reply(message, text, reply_markup=result_keyboard(token, state))

    async def show_faces(self, state: ResultState, message: Message, bot: Bot) -> None:
        """The photo(s) with several faces, with numbered boxes matching the captions."""
        album = len(state.photos) > 1
        for number, photo in enumerate(state.photos, start=1):
            if len(photo.boxes) < 2:
                continue
            file = await self.send(lambda: bot.get_file(photo.file_id))
            data = bytes(await self.send(file.download_as_bytearray))
            image = await self._run(self.engine.decode, data, name=photo.name)
            boxed = await asyncio.to_thread(render.draw_boxes, image, photo.boxes)
            prefix = f"Photo {number}: " if album else ""
            text = f"{prefix}I found {len(photo.boxes)} faces; their numbers match the captions."
            await self.send(lambda: message.reply_photo(boxed, caption=text))

    # ---- reindex -------------------------------------------------------------------------

    def start_reindex(self, message: Message, models: list[str]) -> None:
        """Claim the reindex slot (no await before) and rebuild in the background; the handler returns."""
        job = ReindexJob(models=models)
        self.reindex_job = job
        self.spawn(self._reindex(job, message))

    async def _reindex(self, job: ReindexJob, message: Message) -> None:
        """Rebuild the indexes of `job.models` in the index thread, editing one message as it goes."""
        try:
            status = await self._reply(message, job.text())
            loop = asyncio.get_running_loop()
            interval = max(self.settings.progress_interval_s, 0.05)
            for model in job.models:
                job.model, job.progress = model, None
                future = loop.run_in_executor(
                    self.index_pool,
                    partial(
                        self.engine.build_index,
                        model,
                        self.settings.resolved_gallery(),
                        progress=partial(self._build_progress, job, "progress"),
                        should_stop=self._stopping.is_set,
                    ),  # fmt: skip
                )
                shown = status.text
                while not future.done():
                    await asyncio.wait({future}, timeout=interval)
                    text = job.text()
                    if not future.done() and text != shown:
                        await self.send(lambda: status.edit_text(text))
                        shown = text
                try:
                    report = await future
                    if report.stopped:
                        await self.send(lambda: status.edit_text(
                            f"Reindex of {model} stopped: the bot is shutting down. The index stays as it was, plus "
                            f"the {report.embedded_images} photos embedded so far; the next /reindex does the rest."
                        ))  # fmt: skip
                        return
                    job.reports.append(report)
                except EngineError as error:
                    await self._reply(message, f"Reindexing {model} failed: {self.public(str(error))}")
                    return
            lines = ["Reindex done."] + [describe_report(report) for report in job.reports]
            await self.send(lambda: status.edit_text("\n".join(lines)))
        except Exception:  # noqa: BLE001 - a background task: PTB's error handler does not see it
            log.exception("reindex failed")
            self.metrics.error("unexpected")
        finally:
            self.reindex_job = None


def looks_like_image(file_name: str | None, mime_type: str | None) -> bool:
    if mime_type and mime_type.startswith("image/"):
        return True
    return bool(file_name) and any(file_name.lower().endswith(suffix) for suffix in IMAGE_SUFFIXES)
