"""The bot's service: its verbs (search, page, faces, add, remove, rename, people, history, forget, stats) over the
engine and the database, which handlers call after parsing; and its life cycle (start-up, live pickup, purges).

Nothing blocking runs on the event loop: database calls and light engine calls go through `db` (a thread pool),
detection and embedding through `compute` (the bounded worker pool), index writes through `index_pool` (one thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import text as sql
from telegram import Message, User
from telegram.ext import Application

from bot import render
from bot.access import RefusalNotices
from bot.albums import AlbumCollector
from bot.db import Store, upgrade
from bot.delivery import attachment_of
from bot.gallery_service import GalleryService
from bot.metrics import Metrics
from bot.photos_answer import PhotosAnswer
from bot.reindex import ReindexJob, describe_report, run_reindex
from bot.search_flow import PhotoIn, SearchFlow, indexing_refusal
from bot.sending import Sender
from bot.settings import Settings
from bot.state import Part, SharedState
from engine import MODEL_NAMES, Engine, EngineError, IndexProgress
from engine.backends import BACKENDS
from engine.gallery import Gallery
from engine.images import IMAGE_SUFFIXES, list_gallery_images

log = logging.getLogger(__name__)
T = TypeVar("T")
FORGET_WAITS = "Your photo is still being searched: I'll delete your history once it's answered."


class BotService:
    """Engine, database and worker pools of one running bot. Started in post_init, stopped in post_stop."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine if engine is not None else Engine(settings)
        self.gallery = Gallery(self.engine)
        self.gallery_service = GalleryService(self)  # the gallery verbs: add, remove, rename
        self._store: Store | None = None
        self._state: SharedState | None = None
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="engine")
        self.index_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reindex")
        self.io_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db")
        self.thumbnails = render.ThumbnailCache(settings.thumbnail_side, settings.thumbnail_cache_size)
        self.metrics = Metrics(self._index_sizes, lambda: self.flow.pending)
        self.refusals = RefusalNotices(settings.refusal_interval_s)  # strangers told lately (see gatekeeper)
        self.flow = SearchFlow(self)
        self.photos_answer = PhotosAnswer(self)  # the photos layout's answers (GALLERY_LAYOUT=photos)
        self._sender: Sender | None = None
        self._albums: AlbumCollector | None = None
        self.application: Application | None = None
        self.reindex_job: ReindexJob | None = None
        self.indexing: dict[str, IndexProgress] = {}  # models whose missing index is being built at start
        self.preparing: set[str] = set()  # models not loaded yet at start
        self.ready = asyncio.Event()  # set once every usable model is prepared
        self.stopping = threading.Event()
        self._loops: list[asyncio.Task] = []
        self._long: set[asyncio.Task] = set()

    # ---- parts, once started ---------------------------------------------------------------

    @property
    def store(self) -> Store:
        assert self._store is not None, "BotService.start() first"
        return self._store

    @property
    def state(self) -> SharedState:
        assert self._state is not None, "BotService.start() first"
        return self._state

    @property
    def sender(self) -> Sender:
        assert self._sender is not None, "BotService.start() first"
        return self._sender

    @property
    def file_ids(self):
        return self.sender.file_ids

    @property
    def pending(self) -> int:
        return self.flow.pending

    # ---- the async boundary ------------------------------------------------------------------

    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking database or light engine work, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, partial(function, *args, **kwargs))

    async def compute(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Detection and embedding, in the bounded worker pool (WORKERS threads)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(function, *args, **kwargs))

    async def write_index(self, function: Callable[..., T], *args: Any) -> T:
        """Gallery edits and index builds, one at a time, in the index thread."""
        return await asyncio.get_running_loop().run_in_executor(self.index_pool, partial(function, *args))

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """A short background task (an album's wait), awaited by the Application when it stops."""
        assert self.application is not None
        return self.application.create_task(coroutine)

    def spawn_long(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """A long job (the start-up build, /reindex) that must see `stopping` before it is awaited: PTB's
        Application.stop awaits its own tasks before post_stop runs, so these are awaited in `stop` instead."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._long.add(task)
        task.add_done_callback(self._long.discard)
        return task

    # ---- life cycle ----------------------------------------------------------------------------

    async def start(self, application: Application) -> None:
        """Migrate the database, then prepare the models in the background: the bot answers at once."""
        self.application = application
        url = self.settings.resolved_database_url()
        await asyncio.to_thread(upgrade, url)
        self._store = Store(url)
        self._state = SharedState(self.store, timedelta(hours=self.settings.state_ttl_hours))
        self._sender = Sender(application.bot, self.metrics, self.thumbnails, self.settings.send_retries)
        self._albums = AlbumCollector(self.state, self.db, self.spawn, self.settings.album_wait_s, self._on_album)
        if self.settings.allowed_user_ids == "*":
            log.warning("ALLOWED_USER_IDS=*: ANYONE who finds this bot can use it to identify faces in the gallery.")
        if self.settings.metrics_port is not None:
            await self.metrics.serve(self.settings.metrics_listen, self.settings.metrics_port, self.health)
        self.preparing = {model for model in MODEL_NAMES if self.engine.model_problem(model) is None}
        self.spawn_long(self._prepare_all())
        self._loops = [
            asyncio.get_running_loop().create_task(self._purge_periodically()),
            asyncio.get_running_loop().create_task(self._pick_up_new_indexes()),
        ]

    async def _prepare_all(self) -> None:
        try:
            try:  # a gallery edit a crash interrupted: finished and indexed before the first answer (engine/gallery.py)
                await self.write_index(self.gallery.recover, 0.0)
            except EngineError as error:
                log.error("cannot finish the gallery edits a crash interrupted: %s", error)
            for model in MODEL_NAMES:
                problem = self.engine.model_problem(model)
                if problem:
                    log.warning("%s unavailable: %s", model, problem)
                    continue
                try:
                    await self.write_index(self._prepare_model, model)
                    if self.stopping.is_set():
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
                progress=partial(self.indexing.__setitem__, model),
                should_stop=self.stopping.is_set,
            )
            if report.stopped:
                log.info("stopped building the %s index (the bot is stopping); the next start goes on from here", model)
                return
            log.info("built %s", describe_report(report))
        info = self.engine.index_info(model)
        if info is not None:  # warm the networks with one real search
            photos = list_gallery_images(self.settings.resolved_gallery(), self.settings.gallery_layout)
            if photos:
                self.engine.search_path(photos[0], model=model, k=1, max_faces=1)
            log.info("%s ready: %d entries indexed", model, info.count)

    async def _pick_up_new_indexes(self) -> None:
        """Live pickup: index versions written by another process (`python -m engine index`, another replica)
        are loaded every INDEX_REFRESH_S seconds, off the event loop; searches meanwhile use the old one."""
        while not self.stopping.is_set():
            await asyncio.sleep(self.settings.index_refresh_s)
            try:
                for model in await self.write_index(self.engine.refresh):
                    info = self.engine.index_info(model)
                    log.info("picked up a new %s index: %s faces", model, info.count if info else 0)
            except Exception:
                log.exception("looking for a new index version failed")

    async def _purge_periodically(self) -> None:
        """At start and hourly: queries past HISTORY_RETENTION_DAYS, and expired buttons, claims and album parts."""
        while True:
            try:
                days = self.settings.history_retention_days
                deleted = await self.db(self.store.purge_older_than, days) if days else 0
                if deleted:
                    log.info("deleted %d queries older than %s days", deleted, days)
                await self.db(self.state.purge_expired)
            except Exception:
                log.exception("purge failed")
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        """Before the Telegram client closes: builds end at their next chunk (old indexes kept), loops end."""
        self.stopping.set()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, *self._long, return_exceptions=True)

    async def close(self) -> None:
        self.stopping.set()
        for pool in (self.index_pool, self.pool, self.io_pool):
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        await self.metrics.close()
        if self._store is not None:
            self._store.close()

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy: the database answers and every usable model is loaded (not while models load or indexes build)."""
        try:
            await self.db(self._ping_database)
            database = "ok"
        except Exception as error:  # noqa: BLE001 - reported, not raised
            database = f"error: {type(error).__name__}"
        ready = self.ready.is_set() and not self.preparing
        healthy = database == "ok" and ready
        return healthy, {
            "status": "ok" if healthy else "unavailable",
            "database": database,
            "ready": ready,
            "preparing": sorted(self.preparing),
            "indexing": {model: _percent(p) for model, p in self.indexing.items()},
            "queue": self.flow.pending,
        }

    def _ping_database(self) -> None:
        with self.store.engine.connect() as connection:
            connection.execute(sql("SELECT 1"))

    def _index_sizes(self) -> dict[str, int]:
        return {model: info.count for model in MODEL_NAMES if (info := self.engine.index_info(model)) is not None}

    def public(self, text: str) -> str:
        """A message for users without server paths (folders of the models, data and gallery)."""
        s = self.settings
        folders = {str(p) for d in (s.models_dir, s.data_dir, s.resolved_gallery()) for p in (d, d.resolve())}
        for folder in sorted(folders, key=len, reverse=True):
            text = text.replace(folder + "/", "").replace(folder, "the server's folder")
        return text

    # ---- per-chat settings and models ------------------------------------------------------------

    async def chat_settings(self, chat_id: int) -> tuple[str, int]:
        model, k = await self.db(self.store.chat_settings, chat_id)
        model = model if model in MODEL_NAMES else self.settings.default_model
        return model, min(k or self.settings.default_k, self.settings.max_k)

    async def set_model(self, chat_id: int, model: str) -> str:
        problem = await self.db(self.engine.model_problem, model)
        if problem:
            return f"Can't switch to {model}: {self.public(problem)}"
        await self.db(self.store.set_chat_model, chat_id, model)
        indexed = await self.db(self.engine.index_info, model)
        note = "" if indexed else f" (no {model} index yet: an admin can build it with /reindex {model})"
        return f"Backend switched to {model}{note}."

    async def set_k(self, chat_id: int, k: int) -> None:
        await self.db(self.store.set_chat_k, chat_id, k)

    async def model_lines(self, chat_id: int) -> str:
        current, _ = await self.chat_settings(chat_id)
        problems = await self.db(lambda: {name: self.engine.model_problem(name) for name in MODEL_NAMES})
        lines = [f"Current backend: {current}", "Backends:"]
        for name in MODEL_NAMES:
            problem = problems[name]
            state = "available" if problem is None else f"unavailable — {self.public(problem)}"
            lines.append(f"• {name}: {BACKENDS[name].description} — {state}")
        lines.append("Switch with /model <name>.")
        return "\n".join(lines)

    async def model_refusal(self, model: str) -> str | None:
        """Why a search with `model` cannot run now (unavailable, still loading or indexing), or None."""
        problem = await self.db(self.engine.model_problem, model)
        if problem:
            return f"The {model} backend is unavailable: {self.public(problem)}\nSwitch with /model facenet."
        progress = self.indexing.get(model)
        if progress is None and model in self.preparing and await self.db(self.engine.index_info, model) is None:
            progress = IndexProgress(done=0, total=0, elapsed_s=0.0)  # still loading: the index may have to be built
        return indexing_refusal(progress)

    async def index_size(self, model: str) -> int:
        info = await self.db(self.engine.index_info, model)
        return info.count if info else 0

    # ---- photos and albums ---------------------------------------------------------------------

    async def photo(self, message: Message, user: User) -> None:
        """A photo or image file: part of an album (collected), a gallery `/add` caption, or a search."""
        attachment = attachment_of(message)
        if attachment is None:
            return
        if message.media_group_id:
            assert self._albums is not None
            part = Part(
                message.chat_id,
                message.media_group_id,
                message.message_id,
                user.id,
                attachment.file_id,
                attachment.file_size,
                attachment.name,
                message.caption,
            )
            await self._albums.collect(part)
            return
        from bot import gallery_commands

        if gallery_commands.is_add(message.caption):
            await gallery_commands.add(self, message.chat_id, user.id, [attachment], message.caption)
            return
        photo = PhotoIn(1, attachment.file_id, attachment.file_size, attachment.name)
        await self.flow.search(message.chat_id, user.id, [photo])

    async def _on_album(self, parts: list[Part]) -> None:
        """A whole album, claimed by this replica: an `/add` or one search."""
        from bot import gallery_commands
        from bot.delivery import Attachment

        first = parts[0]
        try:
            if not self.settings.is_admin(first.user_id):  # only an admin may reply /add to it later
                await self.db(self.state.drop_album, first.chat_id, first.media_group_id)
            caption = next((p.caption for p in parts if p.caption), None)
            if gallery_commands.is_add(caption):
                files = [Attachment(p.file_id, p.file_size, p.name) for p in parts]
                await gallery_commands.add(self, first.chat_id, first.user_id, files, caption)
            else:
                photos = [PhotoIn(n, p.file_id, p.file_size, p.name) for n, p in enumerate(parts, start=1)]
                await self.flow.search(first.chat_id, first.user_id, photos)
        except Exception:
            log.exception("exception while answering an album")
            self.metrics.error("unexpected")
            await self.sender.text(first.chat_id, "Sorry, something went wrong. Please try again.")

    async def album_files(self, chat_id: int, media_group_id: str) -> list[Part]:
        return await self.db(self.state.parts, chat_id, media_group_id)

    # ---- history -------------------------------------------------------------------------------------

    async def history(self, chat_id: int, user_id: int):
        return await self.db(self.store.history, chat_id, user_id, self.settings.history_size)

    async def forget(self, user_id: int, chat_id: int) -> int:
        """The user's queries in every chat, their buttons (their photos' file_ids) and album parts. Holds the
        user's search lease: a search under way is answered (and recorded) first, then deleted with the rest."""

        async def waiting() -> None:
            await self.sender.text(chat_id, FORGET_WAITS)

        async with self.flow.user_lease(user_id, waiting):
            count = await self.db(self.store.forget_user, user_id)
            await self.db(self.state.forget_user, user_id)
        return count

    # ---- admins ----------------------------------------------------------------------------------------

    async def stats(self) -> str:
        sizes = await self.db(lambda: {name: self.engine.index_info(name) for name in MODEL_NAMES})
        lines = ["Indexes:"]
        for name, info in sizes.items():
            rows = "faces" if BACKENDS[name].embeds_faces else "images"
            lines.append(f"• {name}: {info.count} {rows} indexed" if info else f"• {name}: no index")
        figures = await self.db(self.store.stats)
        median = f"{figures.median_latency_ms:.0f} ms" if figures.median_latency_ms is not None else "n/a"
        lines.append(f"Queries: {figures.queries} from {figures.users} users; median latency {median}")
        m = self.metrics  # the numbers /metrics serves, since this start
        errors = ", ".join(f"{kind} {count:.0f}" for kind, count in sorted(m.errors_by_kind().items())) or "none"
        lines.append(
            f"Since start: {m.value('facesearch_photos_searched_total'):.0f} photos searched, "
            f"{m.value('facesearch_faces_found_total'):.0f} faces found, queue {self.flow.pending}/"
            f"{self.settings.max_queue}; errors: {errors}"
        )
        lines.append(f"Embedding on: {await self.db(self.engine.device.describe)}")
        if self.reindex_job is not None:
            lines.append(self.reindex_job.text())
        return "\n".join(lines)

    async def reindex(self, chat_id: int, which: str | None) -> str | None:
        """/reindex: rebuild a model's index in the background (`which`: a model name, "all" for every usable
        model, None for the chat's model). None when the rebuild started (it reports in the chat), else why not."""
        problems = await self.db(lambda: {name: self.engine.model_problem(name) for name in MODEL_NAMES})
        if which == "all":
            models = [name for name in MODEL_NAMES if problems[name] is None]
        elif which is None:
            models = [(await self.chat_settings(chat_id))[0]]
        else:
            models = [which]
        for name in models:
            problem = problems[name]
            if problem:
                return f"Can't reindex {name}: {problem}"
        if not models:
            return "No backend is available to reindex."
        if self.reindex_job is not None:  # checked right before the slot is claimed: no await in between
            return f"A reindex is already running. {self.reindex_job.text()}"
        self.reindex_job = ReindexJob(models=models)
        self.spawn_long(run_reindex(self, self.reindex_job, chat_id))
        return None


def _percent(progress: IndexProgress) -> int:
    return round(100 * progress.done / progress.total) if progress.total else 0


def looks_like_image(file_name: str | None, mime_type: str | None) -> bool:
    if mime_type and mime_type.startswith("image/"):
        return True
    return bool(file_name) and any(str(file_name).lower().endswith(suffix) for suffix in IMAGE_SUFFIXES)
