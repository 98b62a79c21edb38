"""The bot's runtime: what every flow needs, handed to each flow instead of the whole bot (`BotRuntime`).

It holds the settings, the engine and its gallery, the stores (the history, the shared state of buttons, claims,
leases and album parts, which persons each answer showed), the sender, the metrics, and the executors: nothing
blocking runs on the event loop, so database calls and light engine calls go through `db` (a thread pool),
detection and embedding through `compute` (the bounded worker pool, WORKERS threads), index writes through
`write_index` (one thread). The stores and the sender exist once `open` has run (the bot's start-up).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from telegram.ext import Application

from bot import render
from bot.answer_refs import AnswerRefs
from bot.db import HistoryStore
from bot.metrics import Metrics
from bot.queries import QueryRecord
from bot.refusals import RefusalNotices
from bot.sending import Sender
from bot.settings import Settings
from bot.state import SharedState
from engine import MODEL_NAMES, Engine, IndexProgress
from engine.indexing.gallery import Gallery

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class BotRuntime:
    """One running bot's parts. Built by `create`; `open` adds the stores and the sender at start-up."""

    settings: Settings
    engine: Engine
    gallery: Gallery
    metrics: Metrics
    thumbnails: render.ThumbnailCache
    refusals: RefusalNotices  # strangers told lately (the gatekeeper)
    pool: ThreadPoolExecutor  # detection and embedding
    index_pool: ThreadPoolExecutor  # gallery edits and index builds, one at a time
    io_pool: ThreadPoolExecutor  # database calls and light engine calls
    stopping: threading.Event = field(default_factory=threading.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set once every usable model is prepared
    indexing: dict[str, IndexProgress] = field(default_factory=dict)  # models whose missing index is being built
    preparing: set[str] = field(default_factory=set)  # models not loaded yet at start
    application: Application | None = None
    _store: HistoryStore | None = None
    _state: SharedState | None = None
    _sender: Sender | None = None
    _answer_refs: AnswerRefs | None = None
    _long: set[asyncio.Task] = field(default_factory=set)

    @classmethod
    def create(cls, settings: Settings, engine: Engine, queue_length: Callable[[], int]) -> BotRuntime:
        """The runtime of a bot over `engine`; `queue_length` is what the queue gauge reads (photos admitted)."""

        def index_sizes() -> dict[str, int]:
            return {model: info.count for model in MODEL_NAMES if (info := engine.index_info(model)) is not None}

        return cls(
            settings=settings,
            engine=engine,
            gallery=Gallery(engine),
            metrics=Metrics(index_sizes, queue_length),
            thumbnails=render.ThumbnailCache(settings.thumbnail_side, settings.thumbnail_cache_size),
            refusals=RefusalNotices(settings.refusal_interval_s),
            pool=ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="engine"),
            index_pool=ThreadPoolExecutor(max_workers=1, thread_name_prefix="reindex"),
            io_pool=ThreadPoolExecutor(max_workers=4, thread_name_prefix="db"),
        )

    def open(self, application: Application, url: str) -> None:
        """At start-up, once the database is migrated: the stores over `url`, and the sender over the bot."""
        self.application = application
        self._store = HistoryStore(url)
        self._state = SharedState(self._store, timedelta(hours=self.settings.state_ttl_hours))
        self._sender = Sender(application.bot, self.metrics, self.thumbnails, self.settings.send_retries)

    async def close(self) -> None:
        """The pools (work under way finishes, queued work is dropped), the metrics server, the database."""
        self.stopping.set()
        for pool in (self.index_pool, self.pool, self.io_pool):
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        await self.metrics.close()
        if self._store is not None:
            self._store.close()

    # ---- parts, once open ----------------------------------------------------------------------

    @property
    def store(self) -> HistoryStore:
        assert self._store is not None, "BotRuntime.open() first"
        return self._store

    @property
    def state(self) -> SharedState:
        assert self._state is not None, "BotRuntime.open() first"
        return self._state

    @property
    def sender(self) -> Sender:
        assert self._sender is not None, "BotRuntime.open() first"
        return self._sender

    @property
    def answer_refs(self) -> AnswerRefs:
        """Which persons each sent answer message shows (the photos layout: `/name` as a reply)."""
        if self._answer_refs is None:
            self._answer_refs = AnswerRefs(self.store, timedelta(hours=self.settings.state_ttl_hours))
        return self._answer_refs

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
        Application.stop awaits its own tasks before post_stop runs, so these are awaited in `stop_long` instead."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._long.add(task)
        task.add_done_callback(self._long.discard)
        return task

    def long_tasks(self) -> list[asyncio.Task]:
        return list(self._long)

    # ---- what several flows ask ------------------------------------------------------------------

    def public(self, text: str) -> str:
        """A message for users without server paths (folders of the models, data and gallery)."""
        s = self.settings
        folders = {str(p) for d in (s.models_dir, s.data_dir, s.resolved_gallery()) for p in (d, d.resolve())}
        for folder in sorted(folders, key=len, reverse=True):
            text = text.replace(folder + "/", "").replace(folder, "the server's folder")
        return text

    async def chat_settings(self, chat_id: int) -> tuple[str, int]:
        """The chat's model and k (the defaults when not set, k at most MAX_K)."""
        model, k = await self.db(self.store.chat_settings, chat_id)
        model = model if model in MODEL_NAMES else self.settings.default_model
        return model, min(k or self.settings.default_k, self.settings.max_k)

    async def index_size(self, model: str) -> int:
        info = await self.db(self.engine.index_info, model)
        return info.count if info else 0

    async def record_queries(
        self, chat_id: int, user_id: int, model: str, k: int, records: Sequence[QueryRecord], started: float
    ) -> None:
        """Each photo's query in the history; a failure is logged and the answer goes on (its matches were sent)."""
        latency_ms = (time.perf_counter() - started) * 1000
        for record in records:
            try:
                await self.db(
                    self.store.add_query,
                    chat_id=chat_id,
                    user_id=user_id,
                    model=model,
                    k=k,
                    faces=record.faces,
                    latency_ms=latency_ms,
                    matches=record.matches,
                    answers=record.answers,
                )
            except Exception:
                log.exception("could not record the query in the history")
                self.metrics.error("history")
