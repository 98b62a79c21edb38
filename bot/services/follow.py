"""Follow (live events, GALLERY_LAYOUT=photos): a guest registers once with a selfie (or an album of 2-5 selfies)
and their photos come to them as the photographer's new photos are indexed (bot/services/deliveries.py).

The selfie's face becomes one template: its unit vector (several selfies: fused, engine/search/fusion.py). The
selfie itself is never kept. No face, several faces (the photo is sent back with numbered boxes: `/follow N`
picks one), or a face too small: a clear answer, and nothing stored. The first time, the guest is told what is
kept and asked to agree ("I agree"); until then the template lives only in this process's memory (a small TTL
cache keyed by the button's random token), so nothing of it reaches the database without agreement. "I agree"
pressed on another replica, or after the cache expired: the agreement is recorded and the guest is asked to send
the selfie again. A follower's first delivery is every photo of their current answer.

The "New photos of me" button under a photos answer keeps nothing of the query photo: pressing it explains how
to follow (a selfie captioned /follow), since the query photo is never stored (privacy rules of the answer).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from cachetools import TTLCache
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import TelegramError

from bot.admission import Admissions
from bot.delivery import download
from bot.follow_store import CONSENT_TEXT_VERSION, FirstPhotos, FollowerTemplate, FollowInfo, FollowStore
from bot.render import draw_boxes
from bot.runtime import BotRuntime
from engine import EngineError
from engine.backends import BACKENDS
from engine.search.fusion import MAX_SELFIES, fuse

log = logging.getLogger(__name__)

_FOLLOW = re.compile(r"^/follow(?:@\w+)?(?:\s+(?P<arg>.*))?$", re.IGNORECASE | re.DOTALL)
PENDING_TTL_S = 900  # a template waiting for "I agree" stays this long in this process's memory
PENDING_MAX = 1024
CONSENT_BUTTON = "I agree"
ONLY_EVENTS = (
    "Following works for event galleries only (photos of an event): this bot's gallery is a gallery of people."
)
HOW_TO_FOLLOW = (
    "Send me a selfie captioned /follow (or reply /follow to your selfie): I'll send you every photo of you in this "
    "gallery, and the new ones as they are taken. Up to 5 selfies in one album, captioned /follow, work even better."
)


def is_follow(caption: str | None) -> bool:
    return caption is not None and _FOLLOW.match(caption.strip()) is not None


def follow_choice(text: str | None) -> int | None:
    """The face number in "/follow 2" (None: no number; 0: not a number)."""
    match = _FOLLOW.match((text or "").strip())
    arg = (match.group("arg") or "").strip() if match else ""
    if not arg:
        return None
    return int(arg) if arg.isascii() and arg.isdigit() else 0


def consent_text(days: float) -> str:
    return (
        "To send you your photos as they are taken, I keep one face template made from your selfie: a list of "
        "numbers describing your face, not the photo. It is kept until you send /unfollow or /forget, or for "
        f"{days:g} days. Your selfie itself is not kept. Nothing is stored unless you press “{CONSENT_BUTTON}”."
    )


@dataclass(frozen=True)
class Selfie:
    """A photo sent to follow with: its Telegram file."""

    file_id: str
    file_size: int | None
    name: str


@dataclass(frozen=True)
class PendingFollow:
    """A template waiting for "I agree" (this process's memory only)."""

    user_id: int
    chat_id: int
    model: str
    template: np.ndarray
    selfies: int


@dataclass(frozen=True)
class Template:
    """A selfie's outcome: the template, or what to say (and the numbered-boxes photo when several faces)."""

    vector: np.ndarray | None = None
    refusal: str | None = None
    boxes_photo: bytes | None = None


FirstDelivery = Callable[[FollowerTemplate], Awaitable[FirstPhotos]]


class FollowService:
    """/follow, "I agree", /following and /unfollow over the runtime; `first_delivery` queues a new follower's
    photos (Deliveries.follow_started, handed in by bot/lifecycle.py)."""

    def __init__(self, runtime: BotRuntime, admissions: Admissions, first_delivery: FirstDelivery):
        self.rt = runtime
        self.admissions = admissions
        self.first_delivery = first_delivery
        self.pending: TTLCache[str, PendingFollow] = TTLCache(maxsize=PENDING_MAX, ttl=PENDING_TTL_S)

    @property
    def follows(self) -> FollowStore:
        return FollowStore(self.rt.store)

    def _model(self, chat_model: str) -> str:
        """The chat's model when it embeds faces, else the first one that does."""
        if BACKENDS[chat_model].embeds_faces:
            return chat_model
        return next(name for name, backend in BACKENDS.items() if backend.embeds_faces)

    async def follow(self, chat_id: int, user_id: int, selfies: Sequence[Selfie], choice: int | None = None) -> None:
        """A selfie (or an album of selfies) to follow with: the template, then consent or following at once."""
        rt, send = self.rt, self.rt.sender
        if rt.settings.gallery_layout != "photos":
            await send.text(chat_id, ONLY_EVENTS)
            return
        if len(selfies) > MAX_SELFIES:
            await send.text(chat_id, f"Send at most {MAX_SELFIES} selfies to follow with.")
            return
        chat_model, _ = await rt.chat_settings(chat_id)
        model = self._model(chat_model)
        if await rt.db(rt.engine.index_info, model) is None:
            await send.text(chat_id, "There are no photos to follow yet: the gallery has no index. Try again later.")
            return
        async with self.admissions.admit(user_id, len(selfies)) as admission:
            if admission.refusal:
                await send.text(chat_id, admission.refusal)
                return
            template = await self.template(model, selfies, choice)
        if template.boxes_photo is not None:
            await send.photo(chat_id, template.boxes_photo, template.refusal or "")
            return
        if template.vector is None:
            await send.text(chat_id, template.refusal or "I could not use that photo.")
            return
        pending = PendingFollow(user_id, chat_id, model, template.vector, len(selfies))
        if await rt.db(self.follows.has_consent, user_id):
            await self._start(pending)
            return
        token = secrets.token_urlsafe(12)
        self.pending[token] = pending
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(CONSENT_BUTTON, callback_data=f"consent:{token}")]])
        await send.text(chat_id, consent_text(rt.settings.follow_ttl_days), reply_markup=keyboard)

    async def template(
        self, model: str, selfies: Sequence[Selfie], choice: int | None, command: str = "follow"
    ) -> Template:
        """The selfies' template, or what to say (`command`: the command its answers name; /optout reuses this)."""
        rt = self.rt
        images = []
        for selfie in selfies:
            try:
                data = await download(rt.sender.bot, selfie.file_id, rt.settings.send_retries)
            except TelegramError as error:
                return Template(refusal=f"Telegram would not give me the photo ({error}). Please send it again.")
            images.append((data, selfie.name))
        try:
            return await rt.compute(self._faces, model, images, choice, command)
        except EngineError as error:
            return Template(refusal=f"Sorry, I can't use that: {rt.public(str(error))}")

    def _faces(
        self, model: str, images: list[tuple[bytes, str]], choice: int | None, command: str = "follow"
    ) -> Template:
        """Runs in the worker pool: one usable face per selfie, fused into one template."""
        rt = self.rt
        rt.engine.load_networks(model)
        decoded = [rt.engine.decode(data, name=name) for data, name in images]
        regions, vectors = rt.engine.searcher(model).query_vectors(decoded, rt.settings.max_faces)
        album = len(images) > 1
        smallest = rt.settings.photos_min_face_size
        chosen: list[np.ndarray] = []
        offset = 0
        for number, (image, faces) in enumerate(zip(decoded, regions), start=1):
            prefix = f"Photo {number}: " if album else ""
            face_vectors = vectors[offset : offset + len(faces)]
            offset += len(faces)
            if not faces:
                return Template(refusal=f"{prefix}I found no face. Send a clear, front-facing selfie.")
            if len(faces) > 1 and (album or choice is None):
                if album:
                    return Template(refusal=f"{prefix}I found {len(faces)} faces: send selfies with only your face.")
                return Template(
                    refusal=f"I found {len(faces)} faces. Which one is you? Reply /{command} N to your photo "
                    f"(or send it again captioned /{command} N), N being the number of your face.",
                    boxes_photo=draw_boxes(image, [face.box for face in faces]),
                )
            index = 0 if len(faces) == 1 or choice is None else choice - 1
            if not 0 <= index < len(faces):
                return Template(refusal=f"There is no face {choice}: the photo has {len(faces)}.")
            if max(faces[index].box[2], faces[index].box[3]) < smallest:
                return Template(
                    refusal=f"{prefix}Your face is too small in this photo: send a closer selfie, your face filling "
                    "a good part of it."
                )
            chosen.append(face_vectors[index])
        fused = fuse(np.stack(chosen))  # DifferentPeopleError (a BadInputError): the selfies are not one person
        return Template(vector=fused.vector)

    async def _start(self, pending: PendingFollow) -> None:
        """Store the template and queue every photo of the current answer."""
        rt = self.rt
        await rt.db(
            self.follows.put_follower,
            pending.user_id,
            pending.chat_id,
            pending.model,
            pending.template,
            pending.selfies,
            rt.settings.follow_ttl_days,
        )
        follower = (await rt.db(self.follows.templates, pending.model, [pending.user_id]))[0]
        first = await self.first_delivery(follower)
        count = first.queued
        if count:
            now = f"{count} photo{'s' if count != 1 else ''} of you so far: they are on their way."
        elif first.gallery_too_small:  # DELIVERY_MIN_FACES: too few faces yet to tell look-alikes apart
            now = "The gallery is still small: your photos will start coming once it holds enough faces to be sure."
        else:
            now = "No photo of you yet."
        await rt.sender.text(
            pending.chat_id,
            f"You're following this event. {now} New photos of you will come as they are taken, for "
            f"{rt.settings.follow_ttl_days:g} days. /following says more; /unfollow stops it.",
        )

    async def agree(self, token: str, user_id: int, chat_id: int) -> str | None:
        """ "I agree": the agreement recorded, then the template stored (when this process still holds it)."""
        rt = self.rt
        pending = self.pending.get(token)
        if pending is not None and pending.user_id != user_id:
            return "Only the person who sent the selfie can agree."
        await rt.db(self.follows.record_consent, user_id, CONSENT_TEXT_VERSION)
        pending = self.pending.pop(token, None)
        if pending is None:
            await rt.sender.text(chat_id, "Thank you. Please send your selfie captioned /follow again to start.")
            return None
        await self._start(pending)
        return None

    async def following(self, user_id: int) -> str:
        """/following: what is followed, since and until when, how many photos went."""
        info: FollowInfo | None = await self.rt.db(self.follows.follower, user_id)
        if info is None:
            return "You're not following anything. " + HOW_TO_FOLLOW
        since, until = _day(info.created_at), _day(info.expires_at)
        selfies = f"{info.selfies} selfies" if info.selfies > 1 else "your selfie"
        waiting = f", {info.waiting} on their way" if info.waiting else ""
        return (
            f"You're following your photos in this event (the face of {selfies}) since {since}, until {until}: "
            f"{info.delivered} photo{'s' if info.delivered != 1 else ''} sent so far{waiting}. /unfollow stops it."
        )

    async def unfollow(self, user_id: int) -> str:
        """/unfollow: the template and the photos not sent yet are deleted at once."""
        removed = await self.rt.db(self.follows.remove_follower, user_id)
        if not removed:
            return "You're not following anything."
        return "Done: your face template is deleted and no more photos will come."

    async def forget(self, user_id: int) -> None:
        """Part of /forget: the template, the outbox and the agreement."""
        for token, pending in list(self.pending.items()):
            if pending.user_id == user_id:
                self.pending.pop(token, None)
        await self.rt.db(self.follows.forget_user, user_id)


def _day(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"
