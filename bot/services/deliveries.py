"""Delivery (live events): new gallery photos matched against every follower's template, into the outbox, and the
sender that sends the outbox as albums with the follower's face marked.

**Matching.** `match()` runs whenever this process's store has a new version: the bot's own builds (start-up,
/reindex, /add, a watched gallery) and the versions live pickup loads from other processes. The files indexed
since the last match (new paths, or a changed sha256) give the new faces (`store.face_vectors`); only followers
with a new face above `PREFILTER_FLOOR` (a (new faces x followers) product, in chunks) run the search's own
per-face decision, `Searcher.photos_for(template)`, so a follower gets exactly what a search with their selfie
answers. Its photos not yet in their outbox become rows (UNIQUE (user, path): a photo is queued once, ever). The
first match of a process takes every follower (photos indexed while no bot ran). A match of the same new files
against the same followers runs in one replica only (a claim); duplicates would be no-ops anyway.

**Sending.** One loop per replica claims due rows (`FollowStore.claim_batch`: one UPDATE, so two replicas never
take the same row; at most one batch per follower per DELIVERY_INTERVAL_S), marks and sends them as albums of 10
with their gallery paths as captions, and marks each album's rows sent once Telegram took it. A replica that dies
mid-send leaves rows 'sending' until its claim runs out (DELIVERY_CLAIM_S, renewed before each album while the
sender lives); another replica, or this one restarted, sends them then. A claim takes the newest due rows first and
at most BATCH_ROWS: a photo just matched is not queued behind the rest of other followers' first deliveries. The
one window of at-least-once is between Telegram accepting an album and the commit that follows it (milliseconds): a
crash exactly there sends that album again. A vanished file's row is 'skipped'
and the others go; a user who blocked the bot (Forbidden) stops being followed; flood waits are retried by the
Application's rate limiter and `Sender.send`; a database that fails is retried after a pause, losing nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from telegram import InlineKeyboardMarkup, InputMediaPhoto
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.follow_store import SENT, SKIPPED, Batch, FirstPhotos, FollowerTemplate, FollowStore, NewDelivery, Outgoing
from bot.render import ALBUM_SIZE, chunks
from bot.runtime import BotRuntime
from engine import MODEL_NAMES
from engine.backends import BACKENDS
from engine.errors import BadImageError
from engine.search.searcher import Searcher
from engine.types import PhotoMatch

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
Mark = Callable[[str, Box], bytes]  # a gallery photo with the face at box marked, as JPEG (photos_answer.mark_face)
OriginalsKeyboard = Callable[[int, int, list[str]], Awaitable[InlineKeyboardMarkup | None]]

# A new face this similar to a template (raw cosine) lets its follower's search run. Chosen on LFW A-F's event
# (benchmarks/bench_selfies.py's): the least similar face a guest's search accepted was 0.466 of 767 (G-L: 0.487 of
# 1,223), so 0.4 drops no photo a search would answer and spares the search for most followers.
PREFILTER_FLOOR = 0.4
FOLLOWER_CHUNK = 2048  # templates per block of the (new faces x followers) product
POLL_S = 1.0  # how often the loops look for new versions and for rows other replicas queued
RETRY_S = 5.0  # pause after a database error


def relative_path(path: str, gallery: str) -> str:
    """A PhotoMatch's absolute path as the store's relative one (POSIX separators)."""
    return Path(path).relative_to(gallery).as_posix()


def photo_word(count: int) -> str:
    return f"{count} photo{'s' if count != 1 else ''}"


class OptOutCheck(Protocol):
    """Opt-outs (bot/services/optouts.py), as deliveries use them; the first two block (the worker pool)."""

    def follower_opted_out(self, model: str, template: np.ndarray) -> bool: ...

    def opted_out_faces(self, model: str) -> set[tuple[str, Box]]: ...

    async def stops(self, user_id: int) -> bool: ...


@dataclass
class _Seen:
    """What the last match of one model looked at: the store version, and each file's content hash."""

    version: str
    files: dict[str, str]


@dataclass(frozen=True)
class _Marked:
    item: Outgoing
    jpeg: bytes
    caption: str


class Deliveries:
    """Matching and the sender loop over the runtime. `mark` draws the face's box on a gallery photo; `keyboard`
    (optional) gives a delivery's "Download originals" button for the photos' absolute paths
    (bot/services/originals.py `Originals.keyboard`)."""

    def __init__(self, runtime: BotRuntime, mark: Mark, keyboard: OriginalsKeyboard | None = None):
        self.rt = runtime
        self.mark = mark
        self.keyboard = keyboard
        self._seen: dict[str, _Seen] = {}
        self._models: list[str] | None = None
        self._kick = asyncio.Event()
        self._match_lock = asyncio.Lock()
        self.optouts: OptOutCheck | None = None  # /optout (bot/services/optouts.py), set at wiring time

    @property
    def follows(self) -> FollowStore:
        return FollowStore(self.rt.store)

    def kick(self) -> None:
        """Rows were queued: the sender looks now rather than at its next poll."""
        self._kick.set()

    # ---- matching --------------------------------------------------------------------------------

    def face_models(self) -> list[str]:
        """The usable models that embed faces (followers' templates are faces)."""
        if self._models is None:
            engine = self.rt.engine
            self._models = [m for m in MODEL_NAMES if BACKENDS[m].embeds_faces and engine.model_problem(m) is None]
        return self._models

    def stale(self) -> bool:
        """Whether a store has a version this process has not matched yet (no I/O: the store's version in memory)."""
        for model in self.face_models():
            store = self.rt.engine.searcher(model).store
            seen = self._seen.get(model)
            if store.header is not None and (seen is None or seen.version != store.version):
                return True
        return False

    async def match(self) -> int:
        """Match what was indexed since the last match (everything, the first time) against the followers; the
        outbox rows added. Called after every committed index version (the hooks and the loop)."""
        async with self._match_lock:
            added = 0
            for model in self.face_models():
                added += await self.rt.compute(self._match_model, model)
        if added:
            self.kick()
        return added

    def _match_model(self, model: str) -> int:
        """Runs in the worker pool."""
        searcher = self.rt.engine.searcher(model)
        store = searcher.store
        before = store.version
        files = {path: record.sha256 for path, record in store.files().items() if record.faces}
        store.refresh()  # read after the files: every file listed is in the snapshot searched
        header = store.header
        if header is None or header.layout != "photos":
            self._seen[model] = _Seen(before, files)
            return 0
        if store.count < self.rt.settings.delivery_min_faces:  # too few faces for the decision's cohort: matched once
            return 0  # there are (nothing marked as seen: the first match with enough faces takes every follower)
        seen = self._seen.get(model)
        followers = self.follows.templates(model)
        if seen is None:
            chosen = followers  # the first match of this process: everything
        else:
            new = sorted(path for path, sha in files.items() if seen.files.get(path) != sha)
            chosen = []
            if new and followers and self.rt.state.claim(self._claim_key(model, new, files, followers)):
                chosen = self._prefilter(searcher, new, followers)
        added = 0
        hidden = self._opted_out(model, chosen)
        for follower in chosen:
            items = self._items(searcher.photos_for(follower.template), header.gallery)
            items = [item for item in items if (item.path, tuple(item.box)) not in hidden]
            added += self.follows.add_deliveries(follower.user_id, follower.chat_id, items)
        self._seen[model] = _Seen(before, files)  # a version committed meanwhile: matched at the next look
        if chosen:
            log.info("matched %d followers of %s: %d photos queued", len(chosen), model, added)
        return added

    @staticmethod
    def _claim_key(model: str, new: list[str], files: dict[str, str], followers: list[FollowerTemplate]) -> str:
        """These new files against these followers: matched by one replica."""
        digest = hashlib.sha256()
        for path in new:
            digest.update(f"{path}\0{files[path]}\n".encode())
        for follower in followers:
            digest.update(f"{follower.user_id}:{follower.created_at.isoformat()}\n".encode())
        return f"match:{model}:{digest.hexdigest()[:40]}"

    @staticmethod
    def _prefilter(searcher: Searcher, paths: list[str], followers: list[FollowerTemplate]) -> list[FollowerTemplate]:
        """The followers with a face among `paths` at least PREFILTER_FLOOR similar to their template."""
        templates = np.stack([f.template for f in followers]).astype(np.float32)
        hit = np.zeros(len(followers), bool)
        for _, vectors in searcher.store.face_vectors(paths, chunk=4096):
            for start in range(0, len(followers), FOLLOWER_CHUNK):
                block = templates[start : start + FOLLOWER_CHUNK]
                hit[start : start + len(block)] |= (vectors @ block.T).max(axis=0) >= PREFILTER_FLOOR
        return [f for f, chosen in zip(followers, hit) if chosen]

    def _opted_out(self, model: str, followers: list[FollowerTemplate]) -> set[tuple[str, Box]]:
        """Opt-outs: followers of an opted-out face dropped from `followers` (in place); the opted-out persons'
        faces returned (never queued)."""
        if self.optouts is None:
            return set()
        followers[:] = [f for f in followers if not self.optouts.follower_opted_out(model, f.template)]
        return self.optouts.opted_out_faces(model)

    @staticmethod
    def _items(photos: Sequence[PhotoMatch], gallery: str) -> list[NewDelivery]:
        return [NewDelivery(relative_path(p.path, gallery), p.box, p.similarity) for p in photos]

    def first_photos(self, follower: FollowerTemplate) -> FirstPhotos:
        """A new follower's outbox: every photo of their current answer (runs in the worker pool)."""
        searcher = self.rt.engine.searcher(follower.model)
        searcher.store.refresh()  # the newest version: one committed before they followed is not missed
        header = searcher.store.header
        if header is None or searcher.store.count < self.rt.settings.delivery_min_faces:  # matched once there are
            return FirstPhotos(0, gallery_too_small=True)
        followers = [follower]
        hidden = self._opted_out(follower.model, followers)
        if not followers:
            return FirstPhotos(0)
        items = self._items(searcher.photos_for(follower.template), header.gallery)
        items = [item for item in items if (item.path, tuple(item.box)) not in hidden]
        return FirstPhotos(self.follows.add_deliveries(follower.user_id, follower.chat_id, items))

    async def follow_started(self, follower: FollowerTemplate) -> FirstPhotos:
        """Queue a new follower's first delivery."""
        added = await self.rt.compute(self.first_photos, follower)
        self.kick()
        return added

    async def match_loop(self) -> None:
        """A new store version, of this process or picked up: matched (polled, no I/O while nothing changed)."""
        rt = self.rt
        await rt.ready.wait()
        while not rt.stopping.is_set():
            try:
                if self.stale():
                    await self.match()
            except Exception:
                log.exception("matching new photos against the followers failed; retrying")
                await asyncio.sleep(RETRY_S)
            await asyncio.sleep(POLL_S)

    # ---- sending ---------------------------------------------------------------------------------

    async def send_loop(self) -> None:
        """Claim due rows and send them, until the bot stops."""
        rt = self.rt
        while not rt.stopping.is_set():
            try:
                batches = await rt.db(
                    self.follows.claim_batch, rt.settings.delivery_interval_s, rt.settings.delivery_claim_s
                )
            except Exception:
                log.exception("could not read the deliveries' outbox; retrying in %.0f s", RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            for batch in batches:
                if rt.stopping.is_set():
                    break
                try:
                    await self.send_batch(batch)
                except Exception:
                    log.exception(
                        "sending deliveries to user %s failed; their claim runs out and they go again", batch.user_id
                    )
            if not batches:
                self._kick.clear()
                try:
                    await asyncio.wait_for(self._kick.wait(), timeout=POLL_S)
                except asyncio.TimeoutError:
                    pass

    async def send_batch(self, batch: Batch) -> int:
        """One follower's claimed rows as albums of marked photos, each album's rows marked sent once Telegram took
        it; then one line with the "Download originals" button. Returns how many photos went."""
        rt = self.rt
        sent: list[str] = []
        if self.optouts is not None and await self.optouts.stops(batch.user_id):  # opted out since it was queued
            await self._finish(batch.token, [item.id for item in batch.items], SKIPPED)
            return 0
        ids = [item.id for item in batch.items]
        for group in chunks(batch.items, ALBUM_SIZE):
            marked, missing = await rt.compute(self._prepare, group)
            if missing:
                await self._finish(batch.token, [item.id for item in missing], SKIPPED)
            # the rows not yet sent or skipped, renewed: the claim holds while this sender works through it
            live = set(await rt.db(self.follows.renew_claim, batch.token, ids, rt.settings.delivery_claim_s))
            marked = [m for m in marked if m.item.id in live]  # an /unfollow meanwhile: not sent
            if not marked:
                continue
            try:
                await self._send(batch.chat_id, marked)
            except Forbidden:
                log.info("user %s blocked the bot: no longer followed", batch.user_id)
                await rt.db(self.follows.remove_follower, batch.user_id)
                return len(sent)
            except BadRequest as error:
                log.warning("Telegram refused a delivery album (%s): its photos are skipped", error)
                await self._finish(batch.token, [m.item.id for m in marked], SKIPPED)
                continue
            except TelegramError as error:
                log.warning("could not send deliveries to user %s (%s): they go again later", batch.user_id, error)
                rest = [item.id for item in batch.items if item.path not in sent]
                await rt.db(self.follows.unclaim, batch.token, rest)
                return len(sent)
            await self._finish(batch.token, [m.item.id for m in marked], SENT)
            sent += [m.item.path for m in marked]
        if sent:
            gallery = rt.settings.resolved_gallery()
            keyboard = await self._originals(batch.chat_id, batch.user_id, [str(gallery / path) for path in sent])
            text = f"{photo_word(len(sent)).capitalize()} of you, new in the gallery. /following says more; /unfollow stops them."
            try:
                await rt.sender.text(batch.chat_id, text, reply_markup=keyboard)
            except Forbidden:
                await rt.db(self.follows.remove_follower, batch.user_id)
            except TelegramError as error:
                log.warning("could not send the delivery's note: %s", error)
        return len(sent)

    async def _originals(self, chat_id: int, user_id: int, paths: list[str]) -> InlineKeyboardMarkup | None:
        if self.keyboard is None:
            return None
        try:
            return await self.keyboard(chat_id, user_id, paths)
        except Exception:
            log.exception("could not make the Download originals button")
            return None

    async def _finish(self, token: str, ids: list[int], status: str) -> None:
        """Mark rows sent or skipped; the database failing for a while is waited for (until the claim would run
        out: past it the rows go again, at least once)."""
        rt = self.rt
        attempts = max(1, int(rt.settings.delivery_claim_s / RETRY_S))
        for attempt in range(attempts):
            try:
                await rt.db(self.follows.finish, token, ids, status)
                return
            except Exception:
                if attempt == attempts - 1:
                    raise
                log.warning("could not mark %d deliveries %s; retrying", len(ids), status, exc_info=True)
                await asyncio.sleep(RETRY_S)

    def _prepare(self, group: list[Outgoing]) -> tuple[list[_Marked], list[Outgoing]]:
        """Runs in the worker pool: each photo marked, or missing (gone or unreadable since it was indexed)."""
        gallery = self.rt.settings.resolved_gallery()
        marked, missing = [], []
        for item in group:
            try:
                jpeg = self.mark(str(gallery / item.path), item.box)
            except (OSError, BadImageError):
                log.warning("gallery file gone before its delivery: %s", item.path)
                self.rt.metrics.error("missing_gallery_file")
                missing.append(item)
                continue
            marked.append(_Marked(item, jpeg, f"{item.path} · {item.similarity:.2f}"[:1024]))
        return marked, missing

    async def _send(self, chat_id: int, marked: list[_Marked]) -> None:
        bot, send = self.rt.sender.bot, self.rt.sender.send
        if len(marked) == 1:
            await send(lambda: bot.send_photo(chat_id, marked[0].jpeg, caption=marked[0].caption))
            return
        media = [InputMediaPhoto(m.jpeg, caption=m.caption) for m in marked]
        await send(lambda: bot.send_media_group(chat_id, media))
