"""The running bot: `BotService` builds the runtime and the flows and wires them together, and runs the bot's
life cycle — start-up (migrations, the models prepared in the background, a missing index built while the bot
answers), live pickup of new index versions, hourly purges, health, stop. It also routes an incoming photo: part of
an album (collected across replicas), a gallery `/add`, or a search.

The flows (bot/services/) each get the `BotRuntime` (bot/runtime.py) and, where one needs another, that flow at
wiring time here; none of them imports this module. The handlers (bot/handlers/) reach the flows through
`context.service`, this object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import text as sql
from telegram import Message, User
from telegram.ext import Application

from bot.admission import Admissions
from bot.albums import AlbumCollector
from bot.db import HistoryStore, upgrade
from bot.delivery import Attachment, FileIdCache, FileKey, attachment_of
from bot.follow_store import FollowStore
from bot.metrics import Metrics
from bot.queries import PhotoIn
from bot.runtime import BotRuntime
from bot.services.chats import ChatCommands
from bot.services.deliveries import Deliveries
from bot.services.follow import FollowService, Selfie, follow_choice, is_follow
from bot.services.gallery import GalleryService, is_add
from bot.services.invites import InviteService
from bot.services.limits import LookupLimits
from bot.services.optouts import FaceTemplate, OptOuts, is_optout, optout_choice
from bot.services.originals import Originals
from bot.services.persons import PersonsService
from bot.services.photos_answer import PhotosAnswer, mark_face
from bot.services.reindex import Reindexer, ReindexJob, describe_report
from bot.services.search import SearchFlow
from bot.services.selfies import SelfieSearch
from bot.services.watch import GalleryWatchFlow
from bot.settings import Settings
from bot.state import Part, SharedState
from engine import MODEL_NAMES, Engine, EngineError, IndexProgress
from engine.images import list_gallery_images
from engine.indexing.gallery import Gallery

log = logging.getLogger(__name__)
T = TypeVar("T")


class BotService:
    """One running bot: its runtime and flows. Started in post_init, stopped in post_stop, closed in post_shutdown."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        engine = engine if engine is not None else Engine(settings)
        self.runtime = rt = BotRuntime.create(settings, engine, queue_length=lambda: self.admissions.pending)
        self.admissions = Admissions(rt)
        self.originals = Originals(rt)  # "Download originals" under every answer with photos
        # the photos layout's answers (GALLERY_LAYOUT=photos)
        self.photos_answer = PhotosAnswer(rt, self.admissions, self.originals)
        self.selfies = SelfieSearch(rt, self.admissions, self.photos_answer)  # an album of selfies: one query
        self.search = SearchFlow(rt, self.admissions, self.photos_answer, self.selfies)
        self.limits = LookupLimits(rt)  # MAX_PERSONS_PER_DAY: applied where a search's faces become an answer
        self.search.limits = self.selfies.limits = self.limits
        self.gallery_edits = GalleryService(rt)  # /add, /people, /remove, /rename
        self.persons = PersonsService(rt)  # the photos layout's persons: /people, /name, /merge, /hide
        self.reindexer = Reindexer(rt)
        self.chats = ChatCommands(rt, self.admissions, self.reindexer.status)
        self.watch = GalleryWatchFlow(rt)  # WATCH_GALLERY: photos indexed as they land, after the start-up build
        self.chats.watching = self.watch.status
        # invite links, consent before the first search, the audit lines of /stats
        self.invites = InviteService(rt, self.search.search)
        self.chats.audit = self.invites.audit_lines
        # live events: new photos matched against the followers' templates, sent from an outbox
        self.deliveries = Deliveries(rt, mark_face, self.originals.keyboard)  # + Download originals
        self.follow = FollowService(rt, self.admissions, self.deliveries.follow_started)
        # /optout: the person of a selfie's face hidden from answers and deliveries, before the limits
        self.optouts = OptOuts(rt, self.admissions, self._optout_template)
        self.search.optouts = self.selfies.optouts = self.deliveries.optouts = self.optouts
        self.chats.forgetting += [self.follow.forget, self.optouts.forget]
        self._albums: AlbumCollector | None = None
        self._loops: list[asyncio.Task] = []

    # ---- the runtime's parts, as tests and benchmarks read them -----------------------------------

    @property
    def settings(self) -> Settings:
        rt = self.runtime
        return rt.settings

    @property
    def engine(self) -> Engine:
        rt = self.runtime
        return rt.engine

    @property
    def gallery(self) -> Gallery:
        rt = self.runtime
        return rt.gallery

    @property
    def metrics(self) -> Metrics:
        rt = self.runtime
        return rt.metrics

    @property
    def store(self) -> HistoryStore:
        rt = self.runtime
        return rt.store

    @property
    def state(self) -> SharedState:
        rt = self.runtime
        return rt.state

    @property
    def ready(self) -> asyncio.Event:
        rt = self.runtime
        return rt.ready

    @property
    def file_ids(self) -> FileIdCache[FileKey]:
        rt = self.runtime
        return rt.sender.file_ids

    @property
    def pending(self) -> int:
        """Photos admitted and not yet searched in this replica (the queue)."""
        return self.admissions.pending

    @property
    def reindex_job(self) -> ReindexJob | None:
        return self.reindexer.job

    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The runtime's `db`: blocking work off the event loop."""
        return await self.runtime.db(function, *args, **kwargs)

    # ---- life cycle ----------------------------------------------------------------------------

    async def start(self, application: Application) -> None:
        """Migrate the database, then prepare the models in the background: the bot answers at once."""
        rt = self.runtime
        url = rt.settings.resolved_database_url()
        await asyncio.to_thread(upgrade, url)
        rt.open(application, url)
        self._albums = AlbumCollector(rt.state, rt.db, rt.spawn, rt.settings.album_wait_s, self._on_album)
        if rt.settings.allowed_user_ids == "*":
            log.warning("ALLOWED_USER_IDS=*: ANYONE who finds this bot can use it to identify faces in the gallery.")
        if rt.settings.metrics_port is not None:
            await rt.metrics.serve(rt.settings.metrics_listen, rt.settings.metrics_port, self.health)
        rt.preparing = {model for model in MODEL_NAMES if rt.engine.model_problem(model) is None}
        rt.spawn_long(self._prepare_all())
        rt.spawn_long(self.watch.run())  # waits for _prepare_all (rt.ready); ends on rt.stopping
        self._loops = [
            asyncio.get_running_loop().create_task(self._purge_periodically()),
            asyncio.get_running_loop().create_task(self._pick_up_new_indexes()),
            asyncio.get_running_loop().create_task(self.deliveries.match_loop()),
            asyncio.get_running_loop().create_task(self.deliveries.send_loop()),
        ]

    async def _prepare_all(self) -> None:
        rt = self.runtime
        try:
            try:  # a gallery edit a crash interrupted: finished and indexed before the first answer (engine.indexing)
                await rt.write_index(rt.gallery.recover, 0.0)
            except EngineError as error:
                log.error("cannot finish the gallery edits a crash interrupted: %s", error)
            for model in MODEL_NAMES:
                problem = rt.engine.model_problem(model)
                if problem:
                    log.warning("%s unavailable: %s", model, problem)
                    continue
                try:
                    await rt.write_index(self._prepare_model, model)
                    if rt.stopping.is_set():
                        return
                except EngineError as error:
                    log.error("cannot prepare %s: %s", model, error)
                finally:
                    rt.indexing.pop(model, None)
                    rt.preparing.discard(model)
        finally:
            rt.ready.set()

    def _prepare_model(self, model: str) -> None:
        rt = self.runtime
        rt.engine.warm_up(model)
        if rt.engine.index_info(model) is None and rt.settings.build_missing_index:
            log.info("no %s index: building it from the gallery while the bot answers", model)
            rt.indexing[model] = IndexProgress(done=0, total=0, elapsed_s=0.0)
            report = rt.engine.build_index(
                model,
                rt.settings.resolved_gallery(),
                progress=partial(rt.indexing.__setitem__, model),
                should_stop=rt.stopping.is_set,
            )
            if report.stopped:
                log.info("stopped building the %s index (the bot is stopping); the next start goes on from here", model)
                return
            log.info("built %s", describe_report(report))
        info = rt.engine.index_info(model)
        if info is not None:  # warm the networks with one real search
            photos = list_gallery_images(rt.settings.resolved_gallery(), rt.settings.gallery_layout)
            if photos:
                rt.engine.search_path(photos[0], model=model, k=1, max_faces=1)
            log.info("%s ready: %d entries indexed", model, info.count)

    async def _pick_up_new_indexes(self) -> None:
        """Live pickup: index versions written by another process (`python -m engine index`, another replica)
        are loaded every INDEX_REFRESH_S seconds, off the event loop; searches meanwhile use the old one."""
        rt = self.runtime
        while not rt.stopping.is_set():
            await asyncio.sleep(rt.settings.index_refresh_s)
            try:
                for model in await rt.write_index(rt.engine.refresh):
                    info = rt.engine.index_info(model)
                    log.info("picked up a new %s index: %s faces", model, info.count if info else 0)
            except Exception:
                log.exception("looking for a new index version failed")

    async def _purge_periodically(self) -> None:
        """At start and hourly: queries past HISTORY_RETENTION_DAYS, and expired buttons, claims and album parts."""
        rt = self.runtime
        while True:
            try:
                days = rt.settings.history_retention_days
                deleted = await rt.db(rt.store.purge_older_than, days) if days else 0
                if deleted:
                    log.info("deleted %d queries older than %s days", deleted, days)
                await rt.db(rt.state.purge_expired)
                await self.limits.purge()  # lookups older than 24 hours
                expired = await rt.db(FollowStore(rt.store).purge_expired)
                if expired:
                    log.info("deleted %d followers' templates older than FOLLOW_TTL_DAYS", expired)
            except Exception:
                log.exception("purge failed")
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        """Before the Telegram client closes: builds end at their next chunk (old indexes kept), loops end."""
        rt = self.runtime
        rt.stopping.set()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, *rt.long_tasks(), return_exceptions=True)

    async def close(self) -> None:
        """After the Telegram client closed: the pools, the metrics server and the database."""
        rt = self.runtime
        await rt.close()

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy: the database answers and every usable model is loaded (not while models load or indexes build)."""
        rt = self.runtime
        try:
            await rt.db(self._ping_database)
            database = "ok"
        except Exception as error:  # noqa: BLE001 - reported, not raised
            database = f"error: {type(error).__name__}"
        ready = rt.ready.is_set() and not rt.preparing
        healthy = database == "ok" and ready
        return healthy, {
            "status": "ok" if healthy else "unavailable",
            "database": database,
            "ready": ready,
            "preparing": sorted(rt.preparing),
            "indexing": {model: _percent(p) for model, p in rt.indexing.items()},
            "queue": self.pending,
        }

    def _ping_database(self) -> None:
        rt = self.runtime
        with rt.store.engine.connect() as connection:
            connection.execute(sql("SELECT 1"))

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
        if is_add(message.caption):
            await self.gallery_edits.add_files(message.chat_id, user.id, [attachment], message.caption)
            return
        if is_follow(message.caption):
            selfie = Selfie(attachment.file_id, attachment.file_size, attachment.name)
            await self.follow.follow(message.chat_id, user.id, [selfie], follow_choice(message.caption))
            return
        if is_optout(message.caption):
            await self.optouts.optout(message.chat_id, user.id, attachment, optout_choice(message.caption))
            return
        photo = PhotoIn(1, attachment.file_id, attachment.file_size, attachment.name)
        if not await self.invites.consent_needed(message.chat_id, user.id, [photo]):  # else searched once agreed
            await self.search.search(message.chat_id, user.id, [photo])

    async def _on_album(self, parts: list[Part]) -> None:
        """A whole album, claimed by this replica: an `/add` or one search."""
        rt = self.runtime
        first = parts[0]
        try:
            if not rt.settings.is_admin(first.user_id):  # only an admin may reply /add to it later
                await rt.db(rt.state.drop_album, first.chat_id, first.media_group_id)
            caption = next((p.caption for p in parts if p.caption), None)
            if is_add(caption):
                files = [Attachment(p.file_id, p.file_size, p.name) for p in parts]
                await self.gallery_edits.add_files(first.chat_id, first.user_id, files, caption)
            elif is_follow(caption):
                selfies = [Selfie(p.file_id, p.file_size, p.name) for p in parts]
                await self.follow.follow(first.chat_id, first.user_id, selfies)
            elif is_optout(caption):
                await rt.sender.text(first.chat_id, "To opt out, send one selfie (not an album) captioned /optout.")
            else:
                photos = [PhotoIn(n, p.file_id, p.file_size, p.name) for n, p in enumerate(parts, start=1)]
                if not await self.invites.consent_needed(first.chat_id, first.user_id, photos):
                    await self.search.search(first.chat_id, first.user_id, photos)
        except Exception:
            log.exception("exception while answering an album")
            rt.metrics.error("unexpected")
            await rt.sender.text(first.chat_id, "Sorry, something went wrong. Please try again.")

    async def _optout_template(self, model: str, selfie: Attachment, choice: int | None) -> FaceTemplate:
        """/optout's face template, made as /follow makes one (the flows do not import each other)."""
        one = Selfie(selfie.file_id, selfie.file_size, selfie.name)
        return await self.follow.template(model, [one], choice, command="optout")

    async def album_files(self, chat_id: int, media_group_id: str) -> list[Part]:
        """The collected photos of an album (an admin's `/add Name` as a reply to it)."""
        rt = self.runtime
        return await rt.db(rt.state.parts, chat_id, media_group_id)


def _percent(progress: IndexProgress) -> int:
    return round(100 * progress.done / progress.total) if progress.total else 0
