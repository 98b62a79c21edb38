"""The photos layout's answer (GALLERY_LAYOUT=photos): each face of a query photo is answered with the gallery
photos its person appears in ("appears in 14 photos", with the person's name once named), shown as albums with
that face marked on each photo; "More photos" pages through all of them. A face found nowhere: "not in any photo
of this gallery". An answer sends at most MAX_ANSWER_PHOTOS photos; the rest wait for "More photos".

What "More photos" needs (every face's photos, how many are shown) is a button state in the database, so any
replica serves it; which person each sent message shows is recorded too (bot/answer_refs.py), for `/name` as a
reply. The query photo itself is never stored (the button keeps Telegram's file_id only in the people layout).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageDraw
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, Message
from telegram.error import BadRequest, TelegramError

from bot.admission import Admissions
from bot.answer_refs import AnswerRef, ShownPerson
from bot.delivery import FileIdCache, FileKey, download, file_key
from bot.paging import PAGE_LIMIT
from bot.queries import QueryRecord, Searched
from bot.render import ALBUM_SIZE, chunks, draw_boxes, to_jpeg
from bot.render import split_text as split_text  # where the tests and older callers import it from
from bot.runtime import BotRuntime
from engine import EngineError
from engine.errors import BadImageError
from engine.images import open_reduced
from engine.runtime.onnx import return_freed_memory
from engine.types import FaceResult, PersonRef, SearchResult

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
BUTTON_KIND = "photos"
MARKED_SIDE = 1280  # longest side of a marked gallery photo: a face in the back row stays visible
MARK_COLOUR = "#ff3b30"
HISTORY_PHOTOS = 50  # photos of a face kept in the history
TOO_OLD = "This answer is too old: please send the photo again."
NOT_YOURS = "Only the person who sent the photo can use these buttons."


# ---- the answer's state --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownPhoto:
    """A gallery photo the face appears in: its file, the matching face's box, and that face's person."""

    path: str  # absolute path of the gallery photo
    box: Box
    similarity: float
    person: ShownPerson | None


@dataclass
class FaceAppearances:
    """One face of the query and every gallery photo its person appears in, best first."""

    face: int  # the face's number in its query photo (from 1)
    faces_in_photo: int
    photo: int | None  # the query photo's number in an album; None for a single photo
    person: ShownPerson | None
    photos: list[ShownPhoto]
    shown: int = 0  # photos sent so far

    @property
    def total(self) -> int:
        return len(self.photos)

    def label(self) -> str:
        """ "Photo 2 · Face 1", "Face 1", or "" (the only face of a single photo)."""
        parts = [f"Photo {self.photo}"] if self.photo is not None else []
        if self.faces_in_photo > 1 or self.photo is not None:
            parts.append(f"Face {self.face}")
        return " · ".join(parts)


@dataclass
class PhotosState:
    chat_id: int
    user_id: int
    page: int  # photos per face and page (the chat's k, at most one album)
    faces: list[FaceAppearances] = field(default_factory=list)

    @property
    def has_more(self) -> bool:
        return any(face.shown < face.total for face in self.faces)


def page_jobs(state: PhotosState, budget: int) -> int:
    """The pool jobs (one per album of marked photos) that the next page of `state` runs, as `_send_page` sends it
    within `budget` photos: the queue places (MAX_QUEUE) it holds."""
    jobs = 0
    for face in state.faces:
        if face.shown >= face.total or budget <= 0:
            continue
        count = len(face.photos[face.shown : face.shown + min(state.page, budget)])
        jobs += math.ceil(count / ALBUM_SIZE)
        budget -= count
    return jobs


def person_of(ref: PersonRef | None) -> ShownPerson | None:
    return None if ref is None else ShownPerson(ref.id, ref.name)


def appearances_of(faces: Sequence[FaceResult], photo: int | None) -> list[FaceAppearances]:
    """The engine's photos-layout answer of one query photo, as the bot keeps it."""
    return [
        FaceAppearances(
            face=number,
            faces_in_photo=len(faces),
            photo=photo,
            person=person_of(face.person),
            photos=[
                ShownPhoto(p.path, p.box, p.similarity, person_of(p.person) or person_of(face.person))
                for p in face.photos or []
            ],
        )
        for number, face in enumerate(faces, start=1)
    ]


def _person_payload(person: ShownPerson | None) -> list | None:
    return None if person is None else [person.id, person.name]


def _person_from(value: list | None) -> ShownPerson | None:
    return None if value is None else ShownPerson(int(value[0]), value[1])


def state_to_payload(state: PhotosState) -> dict[str, Any]:
    return {
        "chat_id": state.chat_id,
        "user_id": state.user_id,
        "page": state.page,
        "faces": [
            {
                "face": f.face,
                "faces_in_photo": f.faces_in_photo,
                "photo": f.photo,
                "person": _person_payload(f.person),
                "shown": f.shown,
                "photos": [[p.path, list(p.box), p.similarity, _person_payload(p.person)] for p in f.photos],
            }
            for f in state.faces
        ],
    }


def state_from_payload(payload: dict[str, Any]) -> PhotosState:
    faces = [
        FaceAppearances(
            face=int(f["face"]),
            faces_in_photo=int(f["faces_in_photo"]),
            photo=f["photo"],
            person=_person_from(f["person"]),
            photos=[
                ShownPhoto(p[0], (p[1][0], p[1][1], p[1][2], p[1][3]), float(p[2]), _person_from(p[3]))
                for p in f["photos"]
            ],
            shown=int(f["shown"]),
        )
        for f in payload["faces"]
    ]
    return PhotosState(payload["chat_id"], payload["user_id"], payload["page"], faces)


FOLLOW_LABEL = "New photos of me"  # its press explains /follow (bot/handlers/follow.py); no state: nothing is kept


def with_follow(markup: InlineKeyboardMarkup | None) -> InlineKeyboardMarkup:
    """The answer's buttons and, below them, "New photos of me" (live events: how to follow)."""
    rows = [list(row) for row in markup.inline_keyboard] if markup is not None else []
    return InlineKeyboardMarkup([*rows, [InlineKeyboardButton(FOLLOW_LABEL, callback_data="follow:")]])


def more_keyboard(token: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("More photos", callback_data=f"pmore:{token}")]])


# ---- what it says ----------------------------------------------------------------------------------------------


def photos_word(count: int) -> str:
    return f"{count} photo{'s' if count != 1 else ''}"


def face_line(face: FaceAppearances, *, admin: bool) -> str:
    """ "appears in 14 photos — Jane Doe." or "not in any photo of this gallery." (with its face's label)."""
    prefix = f"{face.label()}: " if face.label() else ""
    if not face.total:
        return f"{prefix}not in any photo of this gallery."
    text = f"{prefix}appears in {photos_word(face.total)}"
    if face.person is not None and face.person.name:
        text += f" — {face.person.name}"
    if admin and face.person is not None:
        text += f" (person #{face.person.id})"
    return text + "."


def history_answer(face: FaceAppearances) -> str | None:
    """What /history says of the face: "Jane Doe, in 14 photos", "in 3 photos", or None (not in any photo)."""
    if not face.total:
        return None
    where = f"in {photos_word(face.total)}"
    return f"{face.person.name}, {where}" if face.person is not None and face.person.name else where


def _name(person: ShownPerson | None) -> str:
    if person is None:
        return ""
    return person.name or f"person #{person.id}"


def caption(face: FaceAppearances, number: int, photo: ShownPhoto, public: Callable[[str], str]) -> str:
    """ "Face 1 · 3/14 · day-1/IMG_0042.jpg · 0.83 · Jane Doe" (the path as relative to the gallery)."""
    parts = [face.label()] if face.label() else []
    parts += [f"{number}/{face.total}", public(photo.path), f"{photo.similarity:.2f}"]
    if photo.person is not None and photo.person.name:
        parts.append(photo.person.name)
    return " · ".join(parts)[:1024]


def mark_face(path: str | Path, box: Box, side: int = MARKED_SIDE) -> bytes:
    """The gallery photo (upright, longest side at most `side`) with a rectangle around the face at `box`
    (the engine's box, in the upright photo's pixels), as JPEG. Large JPEGs are decoded at a reduced scale."""
    # BadImageError: gone, or no image of the gallery's formats
    with open_reduced(path, (side, side)) as (photo, scale):
        fit = min(1.0, side / max(photo.size))
        if fit < 1.0:
            image = photo.resize((round(photo.width * fit), round(photo.height * fit)), Image.Resampling.LANCZOS)
        else:
            image = photo.copy()  # the file's image is closed with it
    scale *= fit
    x, y, w, h = (v * scale for v in box)
    line = max(3, round(max(image.size) / 200))
    pad = line + 2
    draw = ImageDraw.Draw(image)
    outer = (x - pad - 1, y - pad - 1, x + w + pad + 1, y + h + pad + 1)
    draw.rectangle(outer, outline="white", width=1)  # a thin white edge: the mark shows on red clothes too
    draw.rectangle((x - pad, y - pad, x + w + pad, y + h + pad), outline=MARK_COLOUR, width=line)
    jpeg = to_jpeg(image)
    del image
    return_freed_memory()  # the decoded photo (12 MB of a camera photo), freed on a worker thread's heap
    return jpeg


# ---- sending ---------------------------------------------------------------------------------------------------


class OriginalsButton(Protocol):
    """ "Download originals" (bot/services/originals.py `Originals`), handed in by bot/lifecycle.py."""

    async def add_to(
        self, markup: InlineKeyboardMarkup | None, chat_id: int, user_id: int, paths: Sequence[str]
    ) -> InlineKeyboardMarkup | None: ...


@dataclass(frozen=True)
class _Ready:
    photo: ShownPhoto
    key: tuple[FileKey, Box]
    media: str | bytes  # a cached file_id, or the marked JPEG
    cached: bool
    caption: str


class PhotosAnswer:
    """The photos layout's answers and their "More photos" pages, over the runtime; `admissions` is shared with the
    search flow (the marking of gallery photos runs in the worker pool, and holds queue places as a search does)."""

    def __init__(
        self,
        runtime: BotRuntime,
        admissions: Admissions,
        originals: OriginalsButton | None = None,
        cache_size: int = 4096,
    ):
        self.rt = runtime
        self.admissions = admissions
        self.file_ids: FileIdCache[tuple[FileKey, Box]] = FileIdCache(cache_size)  # marked photos already uploaded
        self.originals = originals  # the "Download originals" button under every answer with photos

    def places(self, results: Sequence[SearchResult], k: int) -> int:
        """The queue places (pool jobs) the answer of these searches runs after them: the query photos with several
        faces drawn with numbered boxes, and the first page's albums of marked gallery photos. 0 for a people-layout
        answer (no photos of faces)."""
        if not any(face.photos is not None for result in results for face in result.faces):
            return 0
        state = PhotosState(0, 0, page=min(k, PAGE_LIMIT))
        for result in results:
            state.faces += appearances_of(result.faces, None)
        numbered = sum(len(result.faces) > 1 for result in results)
        return numbered + page_jobs(state, self.rt.settings.max_answer_photos)

    async def answer(
        self,
        chat_id: int,
        user_id: int,
        model: str,
        k: int,
        found: Sequence[Searched],
        notes: list[str],
        album: bool,
        started: float,
        release: Callable[[], Awaitable[None]],
    ) -> None:
        """One answer for a photo or an album: albums of marked photos per face, the history, then the summary."""
        rt = self.rt
        state = PhotosState(chat_id, user_id, page=min(k, PAGE_LIMIT))
        for item in found:
            assert item.result is not None
            state.faces += appearances_of(item.result.faces, item.photo.number if album else None)
            if len(item.result.faces) > 1:
                await self._numbered_faces(chat_id, item, album)
        await self._record_refs(user_id, await self._send_page(state))  # before the summary: a reply may follow it
        admin = rt.settings.is_admin(user_id)
        lines = list(notes)
        for item in found:
            assert item.result is not None
            if album and not item.result.faces:
                lines.append(f"Photo {item.photo.number}: no face found.")
        for face in state.faces:
            line = face_line(face, admin=admin)
            if face.total and face.shown < face.total:
                line += (
                    f" Showing {face.shown} of them: More photos shows the next."
                    if face.shown
                    else " Not shown yet, to keep this answer short: More photos shows them."
                )
            lines.append(line)
        if admin and any(face.person is not None for face in state.faces):
            lines.append("Admins: reply /name Firstname Lastname to a photo to name the person marked on it.")
        await self.record(chat_id, user_id, model, k, found, started)
        keyboard = await self._keyboard(state)
        await release()  # the user may send the next photo as soon as this summary arrives
        summary = await rt.sender.lines(chat_id, lines, reply_markup=keyboard)  # many faces: several messages
        await self._record_refs(user_id, [AnswerRef(chat_id, summary.message_id, [f.person for f in state.faces])])

    async def record(
        self, chat_id: int, user_id: int, model: str, k: int, found: Sequence[Searched], started: float
    ) -> None:
        """Each photo's query in the history: per face "Jane Doe, in 14 photos" (or "in 3 photos", or nothing: not
        in any photo) with its best similarity, and the photos found (at most HISTORY_PHOTOS a face)."""
        records = []
        for item in found:
            if item.result is None:
                continue
            faces = appearances_of(item.result.faces, None)
            records.append(
                QueryRecord(
                    faces=len(faces),
                    matches=[
                        (face.face, rank, _name(photo.person), photo.path, photo.similarity)
                        for face in faces
                        for rank, photo in enumerate(face.photos[:HISTORY_PHOTOS], start=1)
                    ],
                    answers=[
                        (face.face, history_answer(face), face.photos[0].similarity if face.photos else 0.0)
                        for face in faces
                    ],
                )
            )
        await self.rt.record_queries(chat_id, user_id, model, k, records, started)

    async def _numbered_faces(self, chat_id: int, item: Searched, album: bool) -> None:
        """Several faces: the query photo with numbered boxes first, so "Face 2" can be told apart. The photo is
        downloaded again from Telegram and dropped once drawn (nothing of it is kept for a button)."""
        rt = self.rt
        assert item.result is not None
        boxes = [face.box for face in item.result.faces]
        try:
            data = await download(rt.sender.bot, item.photo.file_id, rt.settings.send_retries)
            drawn = await rt.compute(lambda: draw_boxes(rt.engine.decode(data, name=item.photo.name), boxes))
        except (TelegramError, EngineError) as error:
            log.warning("could not draw the faces of a query photo: %s", error)
            return
        prefix = f"Photo {item.photo.number}: " if album else ""
        await rt.sender.photo(chat_id, drawn, f"{prefix}I found {len(boxes)} faces; their numbers match the answer.")

    async def more(self, token: str, user_id: int) -> str | None:
        """ "More photos": the next page of every face that has more. Returns the button's short answer."""
        rt = self.rt
        button = await rt.db(rt.state.button, token, BUTTON_KIND)
        if button is None:
            return TOO_OLD
        if button.user_id != user_id:
            return NOT_YOURS
        state = state_from_payload(button.payload)
        # the page's marking runs in the pool: it holds queue places as a search does
        async with self.admissions.admit(user_id, page_jobs(state, rt.settings.max_answer_photos)) as admission:
            if admission.refusal:
                return admission.refusal
            if not await rt.db(rt.state.claim, f"pmore:{token}"):
                return "Already shown."
            before = [face.shown for face in state.faces]
            await self._record_refs(user_id, await self._send_page(state))
            lines = []
            for face, start in zip(state.faces, before, strict=True):
                if face.shown > start:
                    prefix = f"{face.label()}: " if face.label() else ""
                    which = f"photo {face.shown}" if face.shown == start + 1 else f"photos {start + 1}–{face.shown}"
                    lines.append(
                        f"{prefix}{which} of {face.total}." if prefix else f"{which.capitalize()} of {face.total}."
                    )
            if state.has_more:
                lines.append("More photos shows the next.")
            keyboard = await self._keyboard(state)
            await self.admissions.release(admission)
            text = "\n".join(lines) or "No more photos."
            summary = await rt.sender.text(state.chat_id, text, reply_markup=keyboard)
        shown = [face.person for face, start in zip(state.faces, before, strict=True) if face.shown > start]
        await self._record_refs(user_id, [AnswerRef(state.chat_id, summary.message_id, shown)])
        return None

    async def _keyboard(self, state: PhotosState) -> InlineKeyboardMarkup | None:
        """ "More photos" while photos are left, and "Download originals" of all the answer's photos."""
        rt = self.rt
        markup = None
        if state.has_more:
            try:
                payload = state_to_payload(state)
                token = await rt.db(rt.state.put_button, BUTTON_KIND, state.chat_id, state.user_id, payload)
                markup = more_keyboard(token)
            except Exception:
                log.exception("could not store the answer's buttons")
                rt.metrics.error("state")
        if self.originals is None:
            return with_follow(markup)
        paths = list(dict.fromkeys(photo.path for face in state.faces for photo in face.photos))
        return with_follow(await self.originals.add_to(markup, state.chat_id, state.user_id, paths))

    async def _record_refs(self, user_id: int, refs: list[AnswerRef]) -> None:
        try:
            await self.rt.db(self.rt.answer_refs.put, user_id, refs)
        except Exception:
            log.exception("could not record which persons the answer shows")
            self.rt.metrics.error("state")

    async def _send_page(self, state: PhotosState) -> list[AnswerRef]:
        """The next page of each face's photos, within MAX_ANSWER_PHOTOS; advances `shown`. The sent messages'
        persons, to record."""
        budget = self.rt.settings.max_answer_photos
        refs: list[AnswerRef] = []
        for face in state.faces:
            if face.shown >= face.total or budget <= 0:
                continue
            page = face.photos[face.shown : face.shown + min(state.page, budget)]
            numbers = range(face.shown + 1, face.shown + 1 + len(page))
            refs += await self._album(state.chat_id, face, list(zip(numbers, page, strict=True)))
            face.shown += len(page)
            budget -= len(page)
        return refs

    async def _album(self, chat_id: int, face: FaceAppearances, page: list[tuple[int, ShownPhoto]]) -> list[AnswerRef]:
        refs: list[AnswerRef] = []
        for group in chunks(page, ALBUM_SIZE):
            ready = await self.rt.compute(self._prepare, face, group, True)
            if not ready:
                continue
            try:
                sent = await self._send(chat_id, ready)
            except BadRequest as error:
                if not any(item.cached for item in ready):
                    raise
                log.warning("Telegram refused cached file_ids (%s): uploading again", error)
                for item in ready:
                    if item.cached:
                        self.file_ids.put(item.key, "")
                ready = await self.rt.compute(self._prepare, face, group, False)
                sent = await self._send(chat_id, ready)
            for item, message in zip(ready, sent, strict=False):
                if not item.cached and message.photo:
                    self.file_ids.put(item.key, message.photo[-1].file_id)
                refs.append(AnswerRef(chat_id, message.message_id, [item.photo.person]))
        return refs

    async def _send(self, chat_id: int, ready: list[_Ready]) -> list[Message]:
        bot, send = self.rt.sender.bot, self.rt.sender.send
        if len(ready) == 1:
            return [await send(lambda: bot.send_photo(chat_id, ready[0].media, caption=ready[0].caption))]
        media = [InputMediaPhoto(item.media, caption=item.caption) for item in ready]
        return list(await send(lambda: bot.send_media_group(chat_id, media)))

    def _prepare(self, face: FaceAppearances, group: list[tuple[int, ShownPhoto]], use_cache: bool) -> list[_Ready]:
        """Runs in the worker pool: each photo's cached file_id, or the photo read and marked."""
        ready = []
        for number, photo in group:
            text = caption(face, number, photo, self.rt.public)
            try:
                key = (file_key(photo.path), photo.box)
                cached = self.file_ids.get(key) if use_cache else None
                if cached:
                    ready.append(_Ready(photo, key, cached, True, text))
                    continue
                ready.append(_Ready(photo, key, mark_face(photo.path, photo.box), False, text))
            except (OSError, BadImageError):
                log.warning("gallery file missing or unreadable since the last index: %s", photo.path)
                self.rt.metrics.error("missing_gallery_file")
        return ready
