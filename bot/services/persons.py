"""Persons of a photos-layout gallery, for admins (engine/people: faces grouped into persons, named by hand).

`/people` sends a page of numbered face thumbnails (each person's representative face, cropped from its gallery
photo) with photo counts, paged with buttons; `/name N Firstname Lastname`, `/merge N M`, `/hide N` edit the
registry; `/name Firstname Lastname` as a reply to an answer names the person that answer message shows
(bot/answer_refs.py). N is the person's id as `/people` and the answers show it. The engine's typed errors
(PersonNotFoundError, BadPersonNameError, ...) become the answer's text. `PersonsService`'s blocking methods run
through the runtime's `db` executor; the handlers (bot/handlers/persons.py) parse and reply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps
from telegram import InlineKeyboardMarkup

from bot.paging import pager_keyboard
from bot.render import to_jpeg
from bot.runtime import BotRuntime
from engine import EngineError
from engine.backends import FACE_MODELS
from engine.errors import BadImageError
from engine.images import open_image
from engine.people import Person

MODEL = FACE_MODELS[0]  # persons are made of faces
PAGE = 12  # persons per contact sheet
COLUMNS = 4
TILE = 192  # a face's tile on the sheet (pixels)
LABEL = 36  # the line under each tile
CONTEXT = 0.35  # share of the face box shown around it on each side
CAPTION_LIMIT = 1024
NAME_USAGE = (
    "Usage: /name N Firstname Lastname (N: the person's number in /people), or reply /name Firstname Lastname "
    "to one of my answers."
)
MERGE_USAGE = "Usage: /merge N M — person M's faces join person N (numbers as in /people)."
HIDE_USAGE = "Usage: /hide N — person N is never listed or named again (numbers as in /people)."
_NUMBER = re.compile(r"^#?([0-9]{1,9})$")


@dataclass(frozen=True)
class PeoplePage:
    """One /people page: the contact sheet (None: no person yet), its caption and page buttons."""

    sheet: bytes | None
    text: str
    keyboard: InlineKeyboardMarkup | None


def parse_number(text: str) -> int | None:
    """A person's number as typed ("12" or "#12"); ASCII digits only."""
    match = _NUMBER.match(text.strip())
    return int(match.group(1)) if match and text.strip().lstrip("#").isascii() else None


# ---- /people ---------------------------------------------------------------------------------------------------


def photos(count: int) -> str:
    return f"{count} photo{'s' if count != 1 else ''}"


def page_keyboard(page: int, pages: int) -> InlineKeyboardMarkup | None:
    return pager_keyboard(page, pages, lambda number: f"persons:{number}")


def face_tile(path: Path, box: tuple[int, int, int, int], side: int = TILE) -> Image.Image:
    """The face at `box` of the (upright) gallery photo with a little context, as a `side` x `side` square."""
    half = max(box[2], box[3]) * (0.5 + CONTEXT)
    with open_image(path) as opened:  # BadImageError: gone, or no image of the gallery's formats
        width, height = opened.size
        wanted = min(1.0, side / (2 * half))  # a large photo's JPEG is decoded at a reduced scale
        opened.draft("RGB", (math.ceil(width * wanted), math.ceil(height * wanted)))
        scale = opened.size[0] / width
        image = ImageOps.exif_transpose(opened).convert("RGB")
    x, y, w, h = (v * scale for v in box)
    half *= scale
    cx, cy = x + w / 2, y + h / 2
    crop = image.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return crop.resize((side, side), Image.Resampling.LANCZOS)


def contact_sheet(gallery: Path, persons: list[Person]) -> bytes:
    """A grid of the persons' representative faces, each numbered with its id and its photo count, as JPEG."""
    columns = min(COLUMNS, len(persons))
    rows = math.ceil(len(persons) / columns)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=22)
        small = ImageFont.load_default(size=18)
    except TypeError:  # Pillow < 10.1
        font = small = ImageFont.load_default()
    for index, person in enumerate(persons):
        left, top = (index % columns) * TILE, (index // columns) * (TILE + LABEL)
        face = person.representative
        if face is not None:
            try:
                sheet.paste(face_tile(gallery / face.path, face.box), (left, top))
            except (OSError, BadImageError):  # the photo left (or broke in) the gallery since the index: grey
                draw.rectangle((left, top, left + TILE - 1, top + TILE - 1), fill="#cccccc")
        number = f"#{person.id}"
        box = draw.textbbox((0, 0), number, font=font)
        draw.rectangle((left, top, left + box[2] - box[0] + 10, top + box[3] - box[1] + 10), fill="#ff3b30")
        draw.text((left + 5 - box[0], top + 5 - box[1]), number, fill="white", font=font)
        label = photos(person.photos)
        if person.name:
            label = f"{person.name[:14]} · {label}"
        draw.text((left + 6, top + TILE + 8), label, fill="black", font=small)
    return to_jpeg(sheet)


# ---- the commands --------------------------------------------------------------------------------------------


class PersonsService:
    """The persons of a photos-layout gallery, for admins: /people pages, /name, /merge, /hide (blocking: call
    each through the runtime's `db`)."""

    def __init__(self, runtime: BotRuntime):
        self.rt = runtime

    def people_page(self, page: int) -> PeoplePage:
        """One page of visible persons, largest first, as a contact sheet."""
        persons = self.rt.engine.people(MODEL).list()
        if not persons:
            return PeoplePage(
                None, "No persons yet: faces are grouped into persons as the gallery is indexed (/reindex).", None
            )
        pages = math.ceil(len(persons) / PAGE)
        page = min(max(page, 0), pages - 1)
        shown = persons[page * PAGE : (page + 1) * PAGE]
        sheet = contact_sheet(self.gallery_root(), shown)
        first, last = page * PAGE + 1, page * PAGE + len(shown)
        which = f"Person {first}" if first == last else f"Persons {first}–{last}"
        lines = [f"{which} of {len(persons)} (largest first):"]
        for person in shown:
            lines.append(f"#{person.id} {person.name or '(not named)'} · {photos(person.photos)}")
        lines.append("Name: /name N Firstname Lastname · merge: /merge N M · hide: /hide N")
        opted = self.rt.engine.people(MODEL).opted_out()  # listed only as "opted out" (bot/services/optouts.py)
        if opted:
            lines.append(f"Opted out (hidden at their request): {len(opted)} person{'s' if len(opted) != 1 else ''}.")
        text = "\n".join(lines)
        if len(text) > CAPTION_LIMIT:
            text = text[: CAPTION_LIMIT - 1] + "…"
        return PeoplePage(sheet, text, page_keyboard(page, pages))

    def gallery_root(self) -> Path:
        """The gallery the index was built from (the registry's paths are relative to it)."""
        info = self.rt.engine.index_info(MODEL)
        return Path(info.gallery) if info is not None else self.rt.settings.resolved_gallery()

    def describe(self, person_id: int) -> str:
        person = self.rt.engine.people(MODEL).get(person_id)
        return f"#{person.id} {person.name or '(not named)'}, {photos(person.photos)}"

    def name_person(self, person_id: int, name: str) -> str:
        """Blocking: name (or rename) a person; the answer's text (the engine's error, in words, when refused)."""
        try:
            ref = self.rt.engine.people(MODEL).name(person_id, name)
            return f"Named person {self.describe(ref.id)}. Answers now say this name."
        except EngineError as error:
            return f"Nothing named: {self.rt.public(str(error))}"

    def merge_persons(self, into: int, other: int) -> str:
        try:
            self.rt.engine.people(MODEL).merge(into, other)
            return f"Merged person #{other} into person {self.describe(into)}."
        except EngineError as error:
            return f"Nothing merged: {self.rt.public(str(error))}"

    def hide_person(self, person_id: int) -> str:
        try:
            self.rt.engine.people(MODEL).hide(person_id)
            return f"Person #{person_id} is hidden: never listed or named in answers again."
        except EngineError as error:
            return f"Nothing hidden: {self.rt.public(str(error))}"

    def name_replied(self, chat_id: int, message_id: int, name: str) -> str:
        """Blocking: `/name Firstname Lastname` as a reply to an answer message: name the person it shows."""
        ref = self.rt.answer_refs.get(chat_id, message_id)
        if ref is None:
            return (
                "That message is not one of my answers (or it is too old). Reply to a photo of an answer, "
                "or use /name N Firstname Lastname (numbers as in /people)."
            )
        persons = {p.id: p for p in ref.persons if p is not None}
        if not persons:
            return (
                "The face of that answer is not a person yet (its faces wait to be grouped, or it is in no photo): "
                "nothing to name."
            )
        if len(persons) > 1:
            numbers = ", ".join(f"#{i}" for i in sorted(persons))
            return f"That answer shows several persons ({numbers}): reply to one of its photos, or use /name N Name."
        return self.name_person(next(iter(persons)), name)
