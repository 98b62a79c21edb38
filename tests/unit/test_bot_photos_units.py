"""The photos layout's small parts in the bot, without TensorFlow or Telegram: the answer's stored state, its texts,
the marked photo and the contact sheet on real photos, and which person an answer message shows on real SQLite."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import numpy as np
from PIL import Image

from bot.answer_refs import AnswerRef, AnswerRefs, ShownPerson
from bot.db import HistoryStore, upgrade
from bot.services.persons import PAGE, contact_sheet, page_keyboard, parse_number
from bot.services.photos_answer import (
    FaceAppearances,
    PhotosState,
    ShownPhoto,
    appearances_of,
    caption,
    face_line,
    history_answer,
    mark_face,
    split_text,
    state_from_payload,
    state_to_payload,
)
from bot.state import SharedState
from engine.people import FaceRef, Person
from engine.types import FaceResult, PersonRef, PhotoMatch
from support.helpers_engine import BEN, ELTON, JERRY, MADONNA, MINDY, sample

JANE = ShownPerson(7, "Jane Doe")


def face(total: int, *, person: ShownPerson | None = JANE, number: int = 1, of: int = 1, photo: int | None = None):
    photos = [ShownPhoto(f"/g/day-1/IMG_{n:04d}.jpg", (10, 20, 30, 40), 0.9 - n / 100, person) for n in range(total)]
    return FaceAppearances(face=number, faces_in_photo=of, photo=photo, person=person, photos=photos)


def test_the_state_goes_through_json_and_knows_what_is_left():
    state = PhotosState(1, 2, page=5, faces=[face(12), face(0, person=None, number=2, of=2)])
    state.faces[0].shown = 5
    again = state_from_payload(json.loads(json.dumps(state_to_payload(state))))
    assert again == state and again.has_more
    again.faces[0].shown = 12
    assert not again.has_more  # the face found nowhere has nothing to page


def test_the_engines_answer_becomes_the_state():
    photos = [
        PhotoMatch("/g/a.jpg", (1, 2, 3, 4), 0.8, PersonRef(3, None)),
        PhotoMatch("/g/b.jpg", (5, 6, 7, 8), 0.7, None),  # its face waits to be grouped: the face's person
    ]
    faces = [
        FaceResult((0, 0, 9, 9), 0.99, [], photos=photos, photos_total=2, person=PersonRef(3, None)),
        FaceResult((0, 0, 9, 9), 0.99, [], photos=[], photos_total=0, person=None),
    ]
    got = appearances_of(faces, photo=2)
    assert [f.total for f in got] == [2, 0] and got[0].person == ShownPerson(3, None) and got[1].person is None
    assert [p.person for p in got[0].photos] == [ShownPerson(3, None), ShownPerson(3, None)]
    assert got[0].label() == "Photo 2 · Face 1"


def test_what_the_answer_says():
    assert face_line(face(14), admin=False) == "appears in 14 photos — Jane Doe."
    assert face_line(face(1, person=ShownPerson(3, None)), admin=True) == "appears in 1 photo (person #3)."
    assert face_line(face(2, number=2, of=3), admin=True) == "Face 2: appears in 2 photos — Jane Doe (person #7)."
    assert face_line(face(0, person=None), admin=True) == "not in any photo of this gallery."
    one = face(3, number=1, of=1, photo=2)
    text = caption(one, 2, one.photos[1], lambda path: path.removeprefix("/g/"))
    assert text == "Photo 2 · Face 1 · 2/3 · day-1/IMG_0001.jpg · 0.89 · Jane Doe"


def test_what_the_history_keeps():
    assert history_answer(face(14)) == "Jane Doe, in 14 photos"
    assert history_answer(face(1, person=ShownPerson(3, None))) == "in 1 photo"
    assert history_answer(face(0, person=None)) is None


def test_long_summaries_are_split_within_telegrams_limit():
    lines = [f"Face {n}: appears in {n} photos — {'N' * 60}." for n in range(1, 121)]
    parts = split_text(lines)
    assert len(parts) > 1 and all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts).split("\n") == lines
    assert split_text(["x" * 5000]) == ["x" * 4095 + "…"]


def test_person_numbers_are_plain_ascii_numbers():
    assert parse_number("12") == 12 and parse_number("#12") == 12
    for bad in ("", "twelve", "1a", "١٢", "12.0", "-3", "#", "1234567890"):
        assert parse_number(bad) is None, bad
    assert page_keyboard(0, 1) is None
    keyboard = page_keyboard(1, 3)
    assert keyboard is not None
    assert [b.callback_data for b in keyboard.inline_keyboard[0]] == ["persons:0", "persons:1", "persons:2"]


def red(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 0] > 170) & (pixels[..., 1] < 110) & (pixels[..., 2] < 110)


def test_the_face_is_marked_where_it_is_even_on_a_large_rotated_photo(tmp_path):
    # a 24-Mpx photo stored rotated (EXIF orientation 6): the engine's boxes are in the upright photo; the JPEG
    # is decoded at half its size (draft), so the box is scaled by what was decoded
    upright = Image.new("RGB", (4000, 6000), (40, 90, 160))
    upright.paste(Image.open(sample(MADONNA)).convert("RGB").resize((800, 800)), (1600, 3600))
    box = (1600, 3600, 800, 800)
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer rotates 90 degrees clockwise to show it upright
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "big.jpg", quality=92, exif=exif.tobytes())
    marked = Image.open(io.BytesIO(mark_face(tmp_path / "big.jpg", box)))
    assert marked.format == "JPEG" and marked.size == (853, 1280)
    pixels = np.asarray(marked.convert("RGB"), np.int32)
    scale = 1280 / 6000
    x, y, w, h = (round(v * scale) for v in box)
    line = round(1280 / 200)
    assert red(pixels[y - line - 1 : y - 3, x : x + w]).mean() > 0.8  # the top edge, just above the face
    assert red(pixels[y + h + 3 : y + h + line + 1, x : x + w]).mean() > 0.8  # the bottom edge
    assert red(pixels[y + 10 : y + h - 10, x + 10 : x + w - 10]).mean() < 0.05  # not over the face
    assert red(pixels[: y - 2 * line]).mean() < 0.01  # nowhere else


def test_the_contact_sheet_numbers_each_persons_face(tmp_path):
    paths = [BEN, ELTON, JERRY, MADONNA, MINDY]
    persons = []
    for number, relative in enumerate(paths, start=1):
        with Image.open(sample(relative)) as image:
            width, height = image.size
        side = min(width, height) // 2
        face = FaceRef(relative, ((width - side) // 2, (height - side) // 2, side, side))
        persons.append(Person(number * 10, "Jane Doe" if number == 1 else None, False, [face]))
    sheet = Image.open(io.BytesIO(contact_sheet(sample(BEN).parent.parent, persons)))
    assert sheet.size == (4 * 192, 2 * (192 + 36)) and PAGE >= len(persons)
    pixels = np.asarray(sheet.convert("RGB"), np.int32)
    for index in range(len(persons)):
        left, top = (index % 4) * 192, (index // 4) * 228
        assert red(pixels[top + 2 : top + 8, left + 2 : left + 8]).mean() > 0.8  # the number's label
        tile = pixels[top + 60 : top + 190, left + 20 : left + 170]
        assert tile.std() > 20  # a photo, not an empty tile
    empty = pixels[228 + 10 : 228 + 180, 192 + 10 : 192 + 180]
    assert (empty > 240).all()  # no sixth person


def test_answer_messages_remember_their_persons_until_expiry_or_forget(database_url):
    url = database_url
    upgrade(url)
    store = HistoryStore(url)
    try:
        refs = AnswerRefs(store, timedelta(hours=1))
        refs.put(5, [AnswerRef(-100123, 41, [JANE]), AnswerRef(-100123, 42, [None, ShownPerson(8, None)])])
        assert refs.get(-100123, 41) == AnswerRef(-100123, 41, [JANE])
        assert refs.get(-100123, 42) == AnswerRef(-100123, 42, [None, ShownPerson(8, None)])
        assert refs.get(-100123, 43) is None and refs.get(99, 41) is None
        refs.put(5, [AnswerRef(-100123, 41, [ShownPerson(9, "Someone")])])  # recorded again: replaced
        assert refs.get(-100123, 41) == AnswerRef(-100123, 41, [ShownPerson(9, "Someone")])
        SharedState(store, timedelta(hours=1)).forget_user(5)  # the asker's /forget
        assert refs.get(-100123, 41) is None
        AnswerRefs(store, timedelta(hours=-1)).put(6, [AnswerRef(1, 1, [JANE])])
        assert refs.get(1, 1) is None  # expired
        assert SharedState(store, timedelta(hours=1)).purge_expired() == 1
    finally:
        store.close()
