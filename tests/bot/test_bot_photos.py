"""The bot on a photos-layout gallery (GALLERY_LAYOUT=photos), end to end through the fake Bot API with real weights
and real photos: "appears in N photos" with each photo's face marked and paged, "not in any photo of this gallery",
an answer capped and paged, and the persons commands for admins (/people, /name, /merge, /hide, /name as a reply).

The gallery is an event composed from sample-gallery photos, in nested folders: two-person photos and portraits.
Madonna is in four photos, Jerry Seinfeld in two; Elton John in none (the stranger).
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from bot.services import persons
from engine.errors import PersonNotFoundError
from support.bot_helpers import ADMIN, USER, albums, captions, running_service
from support.helpers_engine import BEN, ELTON, JERRY, MADONNA, MINDY, encode, first_photos, sample, side_by_side

TIMEOUT = 120
# selfies: other photos of the two people than the ones in the gallery
MADONNA_SELFIE = "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg"
JERRY_SELFIE = "Jerry_Seinfeld/httpaurorasblogcomwpcontentuploadsjerryseinfeldpublicityshotjpg.jpg"
MADONNA_PHOTOS = {
    "day-1/ceremony/IMG_0001.jpg",
    "day-1/ceremony/IMG_0002.jpg",
    "day-2/portraits/IMG_0004.jpg",
    "day-2/portraits/IMG_0005.jpg",
}


def others(person: str, *used: str) -> list[str]:
    return [p for p in first_photos(person, 30) if p not in used]


@pytest.fixture(scope="module")
def event_engine(make_engine, tmp_path_factory):
    """The event gallery (8 photos, 11 faces), indexed in the photos layout; its faces grouped into persons."""
    root = tmp_path_factory.mktemp("event-gallery")
    madonna = others("Madonna", MADONNA, MADONNA_SELFIE)
    jerry = others("Jerry_Seinfeld", JERRY, JERRY_SELFIE)
    mindy = others("Mindy_Kaling", MINDY)
    ben = others("Ben_Afflek", BEN)
    photos = {
        "day-1/ceremony/IMG_0001.jpg": side_by_side(sample(JERRY), sample(MADONNA)),
        "day-1/ceremony/IMG_0002.jpg": side_by_side(sample(madonna[0]), sample(MINDY)),
        "day-1/party/IMG_0003.jpg": side_by_side(sample(jerry[0]), sample(mindy[0])),
        "day-2/portraits/IMG_0004.jpg": Image.open(sample(madonna[1])),
        "day-2/portraits/IMG_0005.jpg": Image.open(sample(madonna[2])),
        "day-2/portraits/IMG_0006.jpg": Image.open(sample(mindy[1])),
        "day-2/portraits/IMG_0007.jpg": Image.open(sample(BEN)),
        "day-2/portraits/IMG_0008.jpg": Image.open(sample(ben[0])),
    }
    for relative, image in photos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / relative, quality=92)
    engine = make_engine(data_dir=tmp_path_factory.mktemp("event-data"), gallery_dir=root, gallery_layout="photos")
    report = engine.build_index("facenet")
    assert report.faces_indexed == 11
    assert engine.people().list(), "no person found in the event gallery"
    yield engine
    engine.close()


def relative(engine, path: str) -> str:
    return str(Path(path).relative_to(Path(engine.index_info("facenet").gallery)))


def sent_items(api, chat_id: int, since: int) -> list[tuple[str, bytes | None]]:
    """(caption, uploaded JPEG) of every gallery photo sent to `chat_id` since call `since`, in order (not the
    query photo with numbered faces)."""
    items: list[tuple[str, bytes | None]] = []
    for call in albums(api, chat_id, since):
        if call.method == "sendMediaGroup":
            items += [(item.get("caption", ""), item.get("data")) for item in call.media()]
        else:
            items.append((call.text, call.uploaded("photo")))
    return [item for item in items if "I found" not in item[0]]


def caption_path(text: str) -> str:
    return next(part for part in text.split(" · ") if part.endswith(".jpg"))


def red_share(image: Image.Image, x: int, width: int, row: int, rows: int) -> float:
    """The share of red pixels in `rows` rows from `row`, columns x..x+width."""
    pixels = np.asarray(image.convert("RGB"), np.int32)
    band = pixels[max(0, row) : max(0, row + rows), max(0, x) : x + width]
    red = (band[..., 0] > 170) & (band[..., 1] < 110) & (band[..., 2] < 110)
    return float(red.mean()) if band.size else 0.0


def assert_marked(image: Image.Image, box: tuple[int, int, int, int], scale: float) -> None:
    """A red rectangle around the face: its top edge just above the box (the box widened by the line and 2
    pixels), and no red across the face itself."""
    x, y, w, h = (round(v * scale) for v in box)
    line = max(3, round(max(image.size) / 200))
    top = y - (line + 2)
    assert red_share(image, x, w, top + 1, line - 2) > 0.6
    assert red_share(image, x, w, y + h // 2, 2) < 0.3


async def test_a_selfie_gets_the_photos_it_appears_in_marked_and_paged_a_stranger_none(api, event_engine, tmp_path):
    selfie = sample(MADONNA_SELFIE).read_bytes()
    want = event_engine.search_bytes(selfie).faces[0]
    want_paths = [relative(event_engine, p.path) for p in want.photos]
    assert {"day-1/ceremony/IMG_0001.jpg", "day-1/ceremony/IMG_0002.jpg"} <= set(want_paths) <= MADONNA_PHOTOS
    assert len(want_paths) >= 2  # enough to page with k=1
    async with running_service(api, event_engine, tmp_path) as service:
        api.send_text(USER, "/k 1")
        await api.wait_for_text(USER, "set to 1", timeout=TIMEOUT)
        since = len(api.calls)
        api.send_photo(USER, selfie)
        summary = await api.wait_for_text(USER, "appears in", since=since, timeout=TIMEOUT)
        assert f"appears in {len(want_paths)} photos" in summary.text
        assert "person #" not in summary.text  # ids are for admins
        first = sent_items(api, USER, since)
        assert [caption_path(text) for text, _ in first] == want_paths[:1]  # best first, one page of k=1
        assert first[0][0].startswith(f"1/{len(want_paths)} · ")
        # the face is marked on the gallery photo: a red rectangle around the matching face's box
        original = Image.open(Path(want.photos[0].path))
        marked = Image.open(io.BytesIO(first[0][1] or b""))
        assert marked.format == "JPEG" and max(marked.size) <= 1280
        scale = marked.width / original.width
        assert_marked(marked, want.photos[0].box, scale)

        # More photos: the next one, with a More button while photos are left
        since = len(api.calls)
        api.press(USER, summary, "More photos")
        page = await api.wait_for_text(USER, f"of {len(want_paths)}.", since=since, timeout=TIMEOUT)
        assert page.text.startswith("Photo 2 of")
        rest = sent_items(api, USER, since)
        assert [caption_path(text) for text, _ in rest] == want_paths[1:2]
        if len(want_paths) > 2:
            assert "More photos" in str(page.params.get("reply_markup"))
        else:
            assert "More photos" not in str(page.params.get("reply_markup"))
        api.press(USER, summary, "More photos")  # pressed again: shown once
        await api.wait_for(
            lambda calls: [c for c in calls if c.method == "answerCallbackQuery" and "Already" in c.text]
        )

        # a stranger's selfie: in no photo, and no album
        since = len(api.calls)
        api.send_photo(USER, sample(ELTON).read_bytes())
        await api.wait_for_text(USER, "not in any photo of this gallery", since=since, timeout=TIMEOUT)
        assert not albums(api, USER, since)

        # the history says where each face was found
        since = len(api.calls)
        api.send_text(USER, "/history")
        history = await api.wait_for_text(USER, "Your last", since=since, timeout=TIMEOUT)
        assert f"in {len(want_paths)} photos (" in history.text and "not in the gallery" in history.text

        # a crowded photo (3 people, or more faces) with MAX_ANSWER_PHOTOS=3 in effect: capped, the rest paged
        service.settings.max_answer_photos = 3
        crowd = side_by_side(sample(MADONNA_SELFIE), sample(JERRY_SELFIE))
        crowd.save(tmp_path / "pair.jpg")
        crowd = side_by_side(tmp_path / "pair.jpg", sample(ELTON))
        crowded = encode(crowd, quality=92)
        since = len(api.calls)
        api.send_photo(USER, crowded)
        answer = await api.wait_for_text(USER, "Face 1:", since=since, timeout=TIMEOUT)
        assert len(sent_items(api, USER, since)) <= 3
        assert "not in any photo of this gallery" in answer.text and "appears in" in answer.text
        numbered = albums(api, USER, since)[0]  # first: which face is which
        faces = len([line for line in answer.text.splitlines() if line.startswith("Face ")])
        assert faces >= 3 and numbered.method == "sendPhoto" and numbered.text.startswith(f"I found {faces} faces")
        assert Image.open(io.BytesIO(numbered.uploaded("photo") or b"")).format == "JPEG"
        assert "More photos" in str(answer.params.get("reply_markup"))
        since = len(api.calls)
        api.press(USER, answer, "More photos")
        await api.wait_for_text(USER, " of ", since=since, timeout=TIMEOUT)
        assert 1 <= len(sent_items(api, USER, since)) <= 3

    # the query photos were never stored: no row of the bot's database holds their Telegram files
    dump = "\n".join(sqlite3.connect(tmp_path / "bot.sqlite3").iterdump())
    uploaded = [file_id for file_id, data in api.files.items() if data in (selfie, crowded)]
    assert uploaded and not any(file_id in dump for file_id in uploaded)


def face_person(engine, photo: str, selfie: str) -> int:
    """The person id of the face the selfie's person has in the gallery photo `photo`."""
    face = engine.search_bytes(sample(selfie).read_bytes()).faces[0]
    match = next(p for p in face.photos if relative(engine, p.path) == photo)
    assert match.person is not None
    return match.person.id


async def test_admins_list_name_merge_and_hide_persons(api, event_engine, tmp_path, monkeypatch):
    people = event_engine.people()
    madonna = face_person(event_engine, "day-1/ceremony/IMG_0001.jpg", MADONNA_SELFIE)
    jerry = face_person(event_engine, "day-1/ceremony/IMG_0001.jpg", JERRY_SELFIE)
    before = {p.id: (p.name, p.photos) for p in people.list()}
    async with running_service(api, event_engine, tmp_path) as service:
        # non-admins are refused and nothing is written
        since = len(api.calls)
        for command in ("/people", f"/name {madonna} Someone", f"/merge {madonna} {jerry}", f"/hide {jerry}"):
            api.send_text(USER, command)
        await api.wait_for(lambda calls: len([c for c in calls[since:] if "admins only" in c.text]) == 4, TIMEOUT)
        assert {p.id: (p.name, p.photos) for p in people.list()} == before

        # /people: a contact sheet of numbered faces with photo counts, largest first
        since = len(api.calls)
        api.send_text(ADMIN, "/people")
        sheet = (await api.wait_for(lambda calls: api.calls_to(ADMIN, "sendPhoto", since=since), TIMEOUT))[0]
        listed = people.list()
        for person in listed[:12]:
            assert f"#{person.id} (not named) · {person.photos} photo" in sheet.text
        image = Image.open(io.BytesIO(sheet.uploaded("photo") or b""))
        assert image.format == "JPEG" and image.width == 192 * min(4, len(listed))
        # paged with buttons: each page a new sheet
        assert len(listed) >= 3
        monkeypatch.setattr(persons, "PAGE", 2)
        since = len(api.calls)
        api.send_text(ADMIN, "/people")
        first = (await api.wait_for(lambda calls: api.calls_to(ADMIN, "sendPhoto", since=since), TIMEOUT))[0]
        assert f"Persons 1–2 of {len(listed)}" in first.text and f"#{listed[1].id} " in first.text
        api.press(ADMIN, first, "Next")
        second = (await api.wait_for(lambda calls: api.calls_to(ADMIN, "sendPhoto", since=since)[1:], TIMEOUT))[0]
        assert second.text.startswith("Persons 3–4 of" if len(listed) > 3 else "Person 3 of")
        assert f"#{listed[2].id} " in second.text and f"#{listed[0].id} " not in second.text
        api.press(
            USER, second, "‹ Previous"
        )  # the last page may have no Next: a non-admin's press is refused either way
        await api.wait_for(lambda calls: [c for c in calls if c.method == "answerCallbackQuery" and "admins" in c.text])

        # /name N, with bad ids and names answered clearly
        since = len(api.calls)
        api.send_text(ADMIN, f"/name {madonna} Madonna Ciccone")
        named = await api.wait_for_text(ADMIN, "Named person", since=since, timeout=TIMEOUT)
        assert f"#{madonna} Madonna Ciccone" in named.text
        assert people.get(madonna).name == "Madonna Ciccone"
        api.send_text(ADMIN, "/name 99999 Someone Else")
        await api.wait_for_text(ADMIN, "no person with id 99999", since=since, timeout=TIMEOUT)
        api.send_text(ADMIN, f"/name {jerry} {'x' * 65}")
        await api.wait_for_text(ADMIN, "at most 64 characters", since=since, timeout=TIMEOUT)
        api.send_text(ADMIN, f"/name {jerry} Madonna Ciccone")  # another person's name
        await api.wait_for_text(ADMIN, "already named", since=since, timeout=TIMEOUT)
        api.send_text(ADMIN, "/name")
        await api.wait_for_text(ADMIN, "Usage: /name N", since=since, timeout=TIMEOUT)
        assert people.get(jerry).name is None

        # answers say the name
        since = len(api.calls)
        api.send_photo(ADMIN, sample(MADONNA_SELFIE).read_bytes())
        answer = await api.wait_for_text(ADMIN, "appears in", since=since, timeout=TIMEOUT)
        assert f"— Madonna Ciccone (person #{madonna})" in answer.text

        # /name as a reply to a photo of an answer names the person marked on it
        since = len(api.calls)
        api.send_photo(ADMIN, sample(JERRY_SELFIE).read_bytes())
        await api.wait_for_text(ADMIN, "appears in", since=since, timeout=TIMEOUT)
        sent = albums(api, ADMIN, since)[0]
        photo_message = sent.result[0] if isinstance(sent.result, list) else sent.result
        marked = caption_path(captions(sent)[0])
        marked_person = next(
            p.person.id
            for p in event_engine.search_bytes(sample(JERRY_SELFIE).read_bytes()).faces[0].photos
            if relative(event_engine, p.path) == marked and p.person is not None
        )
        since = len(api.calls)
        api.push_message(
            ADMIN,
            text="/name Jerry Seinfeld",
            entities=[{"type": "bot_command", "offset": 0, "length": 5}],
            reply_to_message=photo_message,
        )
        await api.wait_for_text(ADMIN, "Named person", since=since, timeout=TIMEOUT)
        assert people.get(marked_person).name == "Jerry Seinfeld"
        api.send_text(ADMIN, "/name Nobody", reply_to=api.send_text(ADMIN, "just text"))
        await api.wait_for_text(ADMIN, "not one of my answers", since=since, timeout=TIMEOUT)

        # /merge N M: M's faces join N, M is gone; /hide N: never listed again
        other = next(
            (p.id for p in people.list() if p.id != madonna and {f.path for f in p.faces} <= MADONNA_PHOTOS),
            None,
        )  # a second group of Madonna's faces, when clustering split her
        if other is None:  # then any other person (at least three are listed, above)
            other = next(p.id for p in people.list() if p.id not in (madonna, jerry))
        faces = len(people.get(madonna).faces) + len(people.get(other).faces)
        since = len(api.calls)
        api.send_text(ADMIN, f"/merge {madonna} {other}")
        await api.wait_for_text(ADMIN, f"Merged person #{other} into person #{madonna}", since=since, timeout=TIMEOUT)
        assert len(people.get(madonna).faces) == faces and people.get(madonna).name == "Madonna Ciccone"
        with pytest.raises(PersonNotFoundError):
            people.get(other)
        api.send_text(ADMIN, f"/merge {madonna} {madonna}")
        await api.wait_for_text(ADMIN, "Nothing merged: cannot merge", since=since, timeout=TIMEOUT)
        api.send_text(ADMIN, f"/hide {jerry}")
        await api.wait_for_text(ADMIN, f"Person #{jerry} is hidden", since=since, timeout=TIMEOUT)
        assert people.get(jerry).hidden and jerry not in {p.id for p in people.list()}
        api.send_text(ADMIN, f"/hide {jerry}")
        await api.wait_for_text(ADMIN, "Nothing hidden: no person with id", since=since, timeout=TIMEOUT)
        assert service.settings.gallery_layout == "photos"


async def test_add_in_the_photos_layout_names_the_person_and_answers_say_it(api, make_engine, tmp_path):
    """`/add Name` with a photo: its face's person is named (as /people numbers it), and a selfie's answer says the
    name; a face already named otherwise keeps its name, and the answer says how to change it."""
    root = tmp_path / "gallery"
    (root / "day-1").mkdir(parents=True)
    side_by_side(sample(JERRY), sample(MINDY)).save(root / "day-1" / "IMG_0001.jpg", quality=92)
    Image.open(sample(BEN)).convert("RGB").save(root / "day-1" / "IMG_0002.jpg", quality=92)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=root, gallery_layout="photos")
    engine.build_index("facenet")
    try:
        async with running_service(api, engine, tmp_path):
            since = len(api.calls)
            api.send_photo(ADMIN, sample(MADONNA).read_bytes(), caption="/add Madonna Ciccone")
            added = await api.wait_for_text(
                ADMIN, "Added 1 photo of Madonna Ciccone (person #", since=since, timeout=TIMEOUT
            )
            (person,) = [p for p in engine.people().list() if p.name == "Madonna Ciccone"]
            assert f"(person #{person.id}); Madonna Ciccone is in 1 photo now" in added.text
            assert [f.path for f in person.faces] == [
                p.relative_to(root).as_posix() for p in (root / "Madonna_Ciccone").glob("*.jpg")
            ]

            since = len(api.calls)
            api.send_photo(USER, sample(MADONNA_SELFIE).read_bytes())
            answer = await api.wait_for_text(USER, "appears in", since=since, timeout=TIMEOUT)
            assert "appears in 1 photo" in answer.text and "Madonna Ciccone" in answer.text

            since = len(api.calls)
            mirrored = encode(ImageOps.mirror(Image.open(sample(MADONNA)).convert("RGB")), quality=92)
            api.send_photo(ADMIN, mirrored, caption="/add Someone Else")
            refused = await api.wait_for_text(ADMIN, "already Madonna Ciccone's", since=since, timeout=TIMEOUT)
            assert f"that face is already Madonna Ciccone's (person #{person.id}): /name or /merge to change it" in (
                refused.text
            )
            assert [p.name for p in engine.people().list() if p.name] == ["Madonna Ciccone"]
            assert len(engine.searcher("facenet").store.files()) == 4  # the refused name's photo stays indexed
    finally:
        engine.close()
