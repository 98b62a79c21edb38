"""Opt out (issue 22): anyone admitted sends a selfie captioned /optout (or replies /optout to their own selfie) and,
after a "Hide me" button, the person of that face is hidden from everyone, in both layouts.

The selfie's face becomes a template as for /follow (several faces: numbered boxes and "reply /optout N"; no face: a
clear answer); the selfie itself is never kept. Until "Hide me" the template lives only in this process's memory (a
TTL cache keyed by the button's random token): the button pressed on another replica, after the cache expired, a
second time, by someone else or forged finds nothing and hides nothing.

On "Hide me" the template is stored (`optouts` table, bot/lookups.py) — always: it protects the person, so /forget
does not delete it, and later photos of that face stay hidden. In the photos layout the registry person of the face's
best photos is hidden and marked "opted out" (engine/people/registry.py `opt_out`: /people lists them only as opted
out; `python -m engine people unhide ID --opted-out` undoes it); in the people layout the identity's folder name is
kept as the opt-out's person. The answer says whether a person was found and hidden, or the face was found nowhere.

Then, before the per-day limits (`filter`, called by the search and selfies flows):
- a query face the same person as an opted-out template (cosine >= fusion's SAME_PERSON) is answered as found nowhere:
  "not in any photo of this gallery" (photos layout) / "not in the gallery" with no closest faces (people layout);
- other faces lose the gallery photos whose matched face is an opted-out person's (photos layout) and the matches of an
  opted-out folder (people layout, its name never said).
Deliveries (bot/services/deliveries.py) ask `follower_opted_out` / `opted_out_faces` when matching and `stops` before
sending: a follower of an opted-out face gets nothing more, and an opted-out person's photos are never queued.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from cachetools import TTLCache
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.admission import Admissions
from bot.delivery import Attachment
from bot.follow_store import FollowStore
from bot.lookups import LookupStore
from bot.queries import Searched
from bot.runtime import BotRuntime
from engine import EngineError
from engine.backends import BACKENDS
from engine.search.fusion import SAME_PERSON
from engine.search.identity import identify
from engine.types import FaceResult, Identity

log = logging.getLogger(__name__)

_OPTOUT = re.compile(r"^/optout(?:@\w+)?(?:\s+(?P<arg>.*))?$", re.IGNORECASE | re.DOTALL)
PENDING_TTL_S = 900  # a template waiting for "Hide me" stays this long in this process's memory
PENDING_MAX = 1024
HIDE_BUTTON = "Hide me"
HOW_TO_OPT_OUT = (
    "To stop being findable in this gallery, send me a selfie captioned /optout (or reply /optout to your selfie). "
    "After you confirm, nobody is shown photos of you, and later photos of you stay hidden too."
)
CONFIRM_TEXT = (
    "After you press “{button}”, the person with this face is hidden from everyone: never shown in an answer, "
    "never sent to a follower; later photos of this face stay hidden too. To do that I keep one face template made "
    "from your selfie (a list of numbers, not the photo), also after /forget. Your selfie itself is not kept."
)
STALE = (
    "This confirmation is no longer valid (it expired, was already used, or was made by another copy of the bot): "
    "nothing was hidden by it. Send your selfie captioned /optout again."
)
Key = tuple[str, tuple[int, int, int, int]]


def is_optout(caption: str | None) -> bool:
    return caption is not None and _OPTOUT.match(caption.strip()) is not None


def optout_choice(text: str | None) -> int | None:
    """The face number in "/optout 2" (None: no number; 0: not a number)."""
    match = _OPTOUT.match((text or "").strip())
    arg = (match.group("arg") or "").strip() if match else ""
    if not arg:
        return None
    return int(arg) if arg.isascii() and arg.isdigit() else 0


class FaceTemplate(Protocol):
    """A selfie's face template, or what to say (bot/services/follow.py's Template)."""

    @property
    def vector(self) -> np.ndarray | None: ...

    @property
    def refusal(self) -> str | None: ...

    @property
    def boxes_photo(self) -> bytes | None: ...


# (model, the selfie, the face number asked or None) -> its template; handed in by bot/lifecycle.py
TemplateMaker = Callable[[str, Attachment, int | None], Awaitable[FaceTemplate]]


@dataclass(frozen=True)
class PendingOptOut:
    """A template waiting for "Hide me" (this process's memory only)."""

    user_id: int
    chat_id: int
    model: str
    template: np.ndarray


@dataclass(frozen=True)
class Applied:
    """What "Hide me" found: the registry person hidden (photos layout) or the folder (people layout), if any."""

    person_key: str | None
    person_id: int | None = None


@dataclass
class OptedOut:
    """One model's opt-outs as a filter reads them: the templates (unit rows), the opted-out folders (people layout)
    and the faces of opted-out registry persons (photos layout; gallery-relative path and box)."""

    templates: np.ndarray
    names: set[str] = field(default_factory=set)
    faces: set[Key] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not len(self.templates) and not self.names and not self.faces

    def same_person(self, vector: np.ndarray | None) -> bool:
        if vector is None or not len(self.templates):
            return False
        unit = np.asarray(vector, dtype=np.float32)
        unit = unit / (np.linalg.norm(unit) or 1.0)
        return bool((self.templates @ unit).max() >= SAME_PERSON)


def _unit_rows(vectors: Sequence[np.ndarray]) -> np.ndarray:
    if not vectors:
        return np.zeros((0, 0), np.float32)
    rows = np.stack([np.asarray(v, dtype=np.float32) for v in vectors])
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _relative(path: str, gallery: str) -> str:
    try:
        return Path(path).relative_to(gallery).as_posix()
    except ValueError:
        return path


class OptOuts:
    """/optout, "Hide me", and the filters the answers and deliveries apply."""

    def __init__(self, runtime: BotRuntime, admissions: Admissions, make_template: TemplateMaker):
        self.rt = runtime
        self.admissions = admissions
        self.make_template = make_template
        self.pending: TTLCache[str, PendingOptOut] = TTLCache(maxsize=PENDING_MAX, ttl=PENDING_TTL_S)

    def _model(self, chat_model: str) -> str:
        """The chat's model when it embeds faces, else the first one that does."""
        if BACKENDS[chat_model].embeds_faces:
            return chat_model
        return next(name for name, backend in BACKENDS.items() if backend.embeds_faces)

    # ---- /optout and "Hide me" -------------------------------------------------------------------

    async def optout(self, chat_id: int, user_id: int, selfie: Attachment, choice: int | None = None) -> None:
        """A selfie to opt out with: its face's template kept in memory, and the "Hide me" button."""
        rt, send = self.rt, self.rt.sender
        chat_model, _ = await rt.chat_settings(chat_id)
        model = self._model(chat_model)
        async with self.admissions.admit(user_id, 1) as admission:
            if admission.refusal:
                await send.text(chat_id, admission.refusal)
                return
            template = await self.make_template(model, selfie, choice)
        if template.boxes_photo is not None:
            await send.photo(chat_id, template.boxes_photo, template.refusal or "")
            return
        if template.vector is None:
            await send.text(chat_id, template.refusal or "I could not use that photo.")
            return
        token = secrets.token_urlsafe(16)
        self.pending[token] = PendingOptOut(user_id, chat_id, model, template.vector)
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(HIDE_BUTTON, callback_data=f"optout:{token}")]])
        await send.text(chat_id, CONFIRM_TEXT.format(button=HIDE_BUTTON), reply_markup=keyboard)

    async def confirm(self, token: str, user_id: int, chat_id: int) -> str | None:
        """ "Hide me": the template stored and the person hidden (when this process still holds it). Returns the
        button's short note (None: the answer went as a message)."""
        rt = self.rt
        pending = self.pending.get(token)
        if pending is not None and pending.user_id != user_id:
            return "Only the person who sent the selfie can confirm."
        pending = self.pending.pop(token, None)
        if pending is None:
            await rt.sender.text(chat_id, STALE)
            return None
        applied = await rt.compute(self._apply, pending.model, pending.template)
        layout = rt.settings.gallery_layout
        await rt.db(LookupStore(rt.store).add_optout, pending.model, pending.template, applied.person_key, layout)
        log.info("opt-out stored (%s layout, person found: %s)", layout, applied.person_key is not None)
        if applied.person_key is not None:
            text = (
                "Done: you are hidden. The photos of you in this gallery are no longer shown to anyone or sent to "
                "followers, and new photos of you stay hidden."
            )
        else:
            text = (
                "Done. Your face is not in any photo of this gallery now; I kept its template, so photos of you "
                "added later stay hidden."
            )
        await rt.sender.text(pending.chat_id, text)
        return None

    def _apply(self, model: str, template: np.ndarray) -> Applied:
        """Runs in the worker pool: the person of the face hidden (photos layout) or found (people layout)."""
        engine = self.rt.engine
        try:
            searcher = engine.searcher(model)
            searcher.check_store()
        except EngineError:
            return Applied(None)  # no index yet: the template alone keeps later photos hidden
        header = searcher.store.header
        if header is None:
            return Applied(None)
        if header.layout == "photos":
            photos = searcher.photos_for(template)
            people = Counter(photo.person for photo in photos if photo.person is not None)
            if people:
                person = people.most_common(1)[0][0]
                engine.people(model).opt_out(person.id)
                return Applied(f"#{person.id}", person.id)
            return Applied("photos" if photos else None)  # its photos have no person yet: the template hides them
        params = searcher.backend.identity_params()
        hits = searcher.store.search(np.asarray(template, np.float32)[None, :], params.neighbours)[0]
        name = identify([hit.row.name for hit in hits], [hit.similarity for hit in hits], params).name
        return Applied(name)

    async def forget(self, user_id: int) -> None:
        """Part of /forget: only a template still waiting for "Hide me" (a stored opt-out protects the person)."""
        for token, pending in list(self.pending.items()):
            if pending.user_id == user_id:
                self.pending.pop(token, None)

    # ---- filters -------------------------------------------------------------------------------

    def opted_out(self, model: str) -> OptedOut:
        """Blocking (db or worker pool): one model's opt-outs."""
        rows = LookupStore(self.rt.store).optouts(model)
        view = OptedOut(_unit_rows([row.template for row in rows]))
        view.names = {row.person_key for row in rows if row.layout == "people" and row.person_key}
        if self.rt.settings.gallery_layout == "photos" and BACKENDS[model].embeds_faces:
            try:
                view.faces = self.rt.engine.people(model).opted_out_faces()
            except EngineError:
                log.exception("could not read the opted-out persons of %s", model)
        return view

    async def filter(self, model: str, found: Sequence[Searched], notes: list[str]) -> list[Searched]:
        """The searched photos with opted-out people taken out (see the module docstring); nothing is said of it
        in `notes`: an opted-out face reads exactly as one found nowhere."""
        del notes  # the answer must not tell an opted-out person from one found nowhere
        view = await self.rt.db(self.opted_out, model)
        if view.empty:
            return list(found)
        gallery = await self._gallery(model)
        out = []
        for item in found:
            if item.result is None:
                out.append(item)
                continue
            faces = [self._face(face, view, gallery) for face in item.result.faces]
            out.append(dataclasses.replace(item, result=dataclasses.replace(item.result, faces=faces)))
        return out

    async def _gallery(self, model: str) -> str:
        info = await self.rt.db(self.rt.engine.index_info, model)
        return info.gallery if info is not None else str(self.rt.settings.resolved_gallery())

    @staticmethod
    def _face(face: FaceResult, view: OptedOut, gallery: str) -> FaceResult:
        if view.same_person(face.vector):  # found nowhere, as far as anyone asking can tell
            if face.photos is not None:
                return dataclasses.replace(face, matches=[], photos=[], photos_total=0, person=None)
            return dataclasses.replace(face, matches=[], identity=Identity(None, face.identity.score))
        if face.photos is not None:
            kept = [p for p in face.photos if (_relative(p.path, gallery), tuple(p.box)) not in view.faces]
            dropped = len(face.photos) - len(kept)
            if not dropped:
                return face
            return dataclasses.replace(face, photos=kept, photos_total=max(face.photos_total - dropped, len(kept)))
        matches = [m for m in face.matches if m.name not in view.names]
        identity = face.identity if face.identity.name not in view.names else Identity(None, face.identity.score)
        if len(matches) == len(face.matches) and identity is face.identity:
            return face
        return dataclasses.replace(face, matches=matches, identity=identity)

    # ---- deliveries ------------------------------------------------------------------------------

    def follower_opted_out(self, model: str, template: np.ndarray) -> bool:
        """Blocking: whether a follower's template is the same person as an opted-out one."""
        return self.opted_out(model).same_person(template)

    def opted_out_faces(self, model: str) -> set[Key]:
        """Blocking: the faces (gallery-relative path, box) of opted-out persons; never queued."""
        return self.opted_out(model).faces

    async def stops(self, user_id: int) -> bool:
        """Before a delivery is sent: whether the follower's template is now an opted-out person's."""
        follows = FollowStore(self.rt.store)
        for model in {name for name, backend in BACKENDS.items() if backend.embeds_faces}:
            followers = await self.rt.db(follows.templates, model, [user_id])
            for follower in followers:
                if await self.rt.db(self.follower_opted_out, model, follower.template):
                    return True
        return False
