"""Opt out (issue 22, part 4) end to end through the fake Bot API with real weights and photos: a selfie captioned
/optout (several faces: which one), "Hide me" (forged, pressed twice: nothing more), then another user's search of that
face finds nothing, a follower of that face gets nothing more, /forget keeps the opt-out; in both layouts.

The photos layout's event: Madonna in four photos (IMG_0001, 0002, 0004, 0005), Jerry Seinfeld, Mindy Kaling and Ben
Afflek around her. The people layout: the session's sample gallery (read only: the opt-out lives in the bot's
database there).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import PersonOptedOutError
from support.bot_helpers import ADMIN, USER, albums, captions, person_photo, running_service
from support.fake_bot_api import Call, FakeBotAPI
from support.helpers_engine import BEN, JERRY, MADONNA, MINDY, encode, first_photos, sample, side_by_side

TIMEOUT = 120
MADONNA_SELFIE = "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg"
OPTED = USER  # Madonna, who opts out
OTHER = USER + 1  # someone else, searching her face
FOLLOWER = USER + 2  # someone following her face


def others(person: str, *used: str) -> list[str]:
    return [p for p in first_photos(person, 30) if p not in used]


MADONNA_MORE = others("Madonna", MADONNA, MADONNA_SELFIE)


def add_photo(root: Path, relative: str, image: Image.Image) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(root / relative, quality=92)


@pytest.fixture
def event(make_engine, tmp_path):
    """A fresh indexed event per test (the opt-out hides a registry person, and a photo is added)."""
    root = tmp_path / "gallery"
    photos = {
        "IMG_0001.jpg": side_by_side(sample(JERRY), sample(MADONNA)),
        "IMG_0002.jpg": side_by_side(sample(MADONNA_MORE[0]), sample(MINDY)),
        "IMG_0003.jpg": side_by_side(sample(others("Jerry_Seinfeld", JERRY)[0]), sample(others("Mindy_Kaling")[0])),
        "IMG_0004.jpg": Image.open(sample(MADONNA_MORE[1])),
        "IMG_0005.jpg": Image.open(sample(MADONNA_MORE[2])),
        "IMG_0006.jpg": Image.open(sample(BEN)),
    }
    for relative, image in photos.items():
        add_photo(root, relative, image)
    # a looser grouping than the default, so that her four faces make one person in this small event
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=root, gallery_layout="photos", cluster_threshold=0.5)
    assert engine.build_index("facenet").faces_indexed == 9
    yield engine
    engine.close()


def db_rows(tmp_path: Path, query: str, *args) -> list[tuple]:
    with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:
        return connection.execute(query, args).fetchall()


def texts_to(api: FakeBotAPI, chat_id: int, since: int = 0) -> list[str]:
    return [c.text for c in api.calls_to(chat_id, "sendMessage", since=since)]


async def answer_of(api: FakeBotAPI, user: int, photo: bytes, fragments: tuple[str, ...]) -> tuple[Call, int]:
    """Send a photo; the answer's summary (one of `fragments` in it) and how many photo messages came with it."""
    since = len(api.calls)
    api.send_photo(user, photo)

    def done(calls):
        found = [c for c in calls[since:] if c.chat_id == user and c.method == "sendMessage"]
        return next((c for c in found if any(f in c.text for f in fragments)), None)

    call = await api.wait_for(done, timeout=TIMEOUT)
    return call, len(albums(api, user, since))


async def opt_out_confirmed(api: FakeBotAPI, user: int, prompt: Call) -> str:
    since = len(api.calls)
    api.press(user, prompt, "Hide me")
    return (await api.wait_for_text(user, "Done", since=since, timeout=TIMEOUT)).text


async def test_opt_out_in_the_photos_layout(api, event, tmp_path):
    async with running_service(api, event, tmp_path, gallery_layout="photos", delivery_interval_s=0) as service:
        # a follower of Madonna's face gets her photos so far
        since = len(api.calls)
        api.send_photo(FOLLOWER, sample(MADONNA_SELFIE).read_bytes(), caption="/follow")
        consent = await api.wait_for_text(FOLLOWER, "I keep one face template", since=since, timeout=TIMEOUT)
        api.press(FOLLOWER, consent, "I agree")
        await api.wait_for_text(FOLLOWER, "of you, new in the gallery", since=since, timeout=TIMEOUT)
        first = db_rows(tmp_path, "select count(*) from deliveries where user_id = ?", FOLLOWER)[0][0]
        assert first >= 2  # IMG_0001 and IMG_0002 at least

        # an opt-out selfie with two faces: which one?
        since = len(api.calls)
        api.send_photo(OPTED, encode(side_by_side(sample(JERRY), sample(MADONNA))), caption="/optout")
        boxes = await api.wait_for(lambda calls: api.calls_to(OPTED, "sendPhoto", since=since), timeout=TIMEOUT)
        assert "I found 2 faces" in boxes[0].text and "/optout N" in boxes[0].text
        assert not db_rows(tmp_path, "select * from optouts")
        # "/optout 1" (her face) as a reply to it: the confirmation, nothing stored before "Hide me"
        reply_to = max(u for u, m in api.messages.items() if m["from"]["id"] == OPTED and m.get("photo"))
        since = len(api.calls)
        api.send_text(OPTED, "/optout 1", reply_to=reply_to)
        prompt = await api.wait_for_text(OPTED, "is hidden from everyone", since=since, timeout=TIMEOUT)
        assert not db_rows(tmp_path, "select * from optouts")
        # a forged button, and the real one pressed by someone else: nothing hidden
        api.press_data(OPTED, prompt, "optout:forged-token")
        await api.wait_for_text(OPTED, "no longer valid", since=since, timeout=TIMEOUT)
        api.press(OTHER, prompt, "Hide me")
        await api.wait_for(
            lambda calls: [
                c for c in calls[since:] if c.method == "answerCallbackQuery" and "Only the person" in c.text
            ],
            timeout=TIMEOUT,
        )
        assert not db_rows(tmp_path, "select * from optouts")
        done = await opt_out_confirmed(api, OPTED, prompt)
        assert "you are hidden" in done
        assert db_rows(tmp_path, "select model, layout, person_key like '#%' from optouts") == [
            ("facenet", "photos", 1)
        ]
        registry = event.people("facenet")
        [person] = registry.opted_out()
        assert {"IMG_0004.jpg", "IMG_0005.jpg"} & {face.path for face in registry.get(person).faces}  # her
        assert person not in {p.id for p in registry.list()}  # hidden: listed only as opted out
        with pytest.raises(PersonOptedOutError, match="opted out"):
            registry.unhide(person)
        # pressed twice: nothing more
        since = len(api.calls)
        api.press(OPTED, prompt, "Hide me")
        await api.wait_for_text(OPTED, "no longer valid", since=since, timeout=TIMEOUT)
        assert len(db_rows(tmp_path, "select * from optouts")) == 1

        # another user's search of her face: found nowhere, no photo sent
        answer, photos = await answer_of(api, OTHER, person_photo("Madonna"), ("appears in", "not in any photo"))
        assert "not in any photo of this gallery" in answer.text and photos == 0
        # Jerry's answer leaves out the photos matched by her face
        answer, photos = await answer_of(api, OTHER, person_photo("Jerry Seinfeld"), ("appears in", "not in any"))
        assert "appears in" in answer.text

        # a new photo of her: nothing more to the follower
        sent_before = db_rows(tmp_path, "select count(*) from deliveries where user_id = ?", FOLLOWER)[0][0]
        add_photo(Path(event.settings.gallery_dir), "IMG_0007.jpg", Image.open(sample(MADONNA_MORE[3])))
        await asyncio.to_thread(event.build_index, "facenet")
        assert await service.deliveries.match() == 0
        assert db_rows(tmp_path, "select count(*) from deliveries where user_id = ?", FOLLOWER)[0][0] == sent_before
        assert not db_rows(tmp_path, "select * from deliveries where path = 'IMG_0007.jpg'")

        # /forget by the person who opted out keeps the opt-out
        since = len(api.calls)
        api.send_text(OPTED, "/forget")
        await api.wait_for(lambda calls: api.calls_to(OPTED, "sendMessage", since=since), timeout=TIMEOUT)
        assert len(db_rows(tmp_path, "select * from optouts")) == 1
        answer, photos = await answer_of(api, OTHER + 5, person_photo("Madonna"), ("appears in", "not in any photo"))
        assert "not in any photo of this gallery" in answer.text and photos == 0

        # admins: /people says someone opted out; the engine's unhide needs the explicit flag
        since = len(api.calls)
        api.send_text(ADMIN, "/people")
        await api.wait_for(
            lambda calls: [c for c in api.calls_to(ADMIN, since=since) if "Opted out" in c.text], timeout=TIMEOUT
        )
        registry.unhide(person, opted_out=True)
        assert not registry.opted_out()


async def test_opt_out_in_the_people_layout(api, indexed_engine, tmp_path):
    async with running_service(api, indexed_engine, tmp_path):
        # no face: a clear answer, nothing stored
        since = len(api.calls)
        api.send_photo(OPTED, encode(Image.new("RGB", (300, 300), (128, 120, 110))), caption="/optout")
        await api.wait_for_text(OPTED, "no face", since=since, timeout=TIMEOUT)
        api.send_photo(OPTED, sample(MADONNA_SELFIE).read_bytes(), caption="/optout")
        prompt = await api.wait_for_text(OPTED, "is hidden from everyone", since=since, timeout=TIMEOUT)
        assert "you are hidden" in await opt_out_confirmed(api, OPTED, prompt)
        assert db_rows(tmp_path, "select layout, person_key from optouts") == [("people", "Madonna")]

        # another user: not named, no photo of her; others' answers never show her folder
        since = len(api.calls)
        answer, _ = await answer_of(api, OTHER, person_photo("Madonna"), ("no confident match", "most likely"))
        assert "not in the gallery" in answer.text
        assert not any("Madonna" in text for text in texts_to(api, OTHER, since))
        assert not any("Madonna" in c for call in albums(api, OTHER, since) for c in captions(call))
        since = len(api.calls)
        answer, photos = await answer_of(api, OTHER, person_photo("Jerry Seinfeld"), ("most likely", "no confident"))
        assert "Jerry Seinfeld" in answer.text and photos > 0
        assert not any("Madonna" in c for call in albums(api, OTHER, since) for c in captions(call))

        # /forget keeps it
        since = len(api.calls)
        api.send_text(OPTED, "/forget")
        await api.wait_for(lambda calls: api.calls_to(OPTED, "sendMessage", since=since), timeout=TIMEOUT)
        assert db_rows(tmp_path, "select layout, person_key from optouts") == [("people", "Madonna")]
        answer, _ = await answer_of(api, OTHER + 1, person_photo("Madonna"), ("no confident match", "most likely"))
        assert "not in the gallery" in answer.text and "Madonna" not in answer.text
