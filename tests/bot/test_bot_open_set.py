"""The bot's open-set answers, end to end through the fake Bot API (real HTTP, real engine, real photos).

The gallery holds three of the five sample people, without their clear-face photos: those photos are
the queries. A never-enrolled person is told "not in the gallery" before any photo is shown, and the
photos that follow are captioned as closest faces, not matches; an enrolled person is named with a score.
"""

from __future__ import annotations

import pytest

from support.bot_helpers import USER, albums, captions, running_bot
from support.fake_bot_api import FakeBotAPI
from support.helpers_engine import CLEAR_FACES, copy_enrolled, sample

TIMEOUT = 60
ENROLLED = ("Ben_Afflek", "Elton_John", "Jerry_Seinfeld")


@pytest.fixture(scope="module")
def open_set_bot_engine(tmp_path_factory, make_engine):
    root = tmp_path_factory.mktemp("bot-open-set")
    copy_enrolled(root / "gallery", ENROLLED)
    engine = make_engine(data_dir=root / "data", gallery_dir=root / "gallery")
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


@pytest.fixture
async def bot(api, open_set_bot_engine, tmp_path):
    async with running_bot(api, open_set_bot_engine, tmp_path) as settings:
        yield settings


def photo(person: str) -> bytes:
    """The person's clear-face photo as sent by a user (it is not in this gallery)."""
    return sample(CLEAR_FACES[person]).read_bytes()


async def test_unknown_face_is_said_first_and_closest_faces_are_not_matches(api: FakeBotAPI, bot):
    since = len(api.calls)
    api.send_photo(USER, photo("Madonna"))
    summary = await api.wait_for_text(USER, "the photos shown are only the closest faces", since=since, timeout=TIMEOUT)
    assert summary.text.startswith("not in the gallery (no confident match, score ")
    texts = api.calls_to(USER, "sendMessage", since=since)
    assert texts[0].text.startswith("not in the gallery — I don't know this person (score 0.")
    assert "closest faces in the gallery, not matches" in texts[0].text
    sent = albums(api, USER, since)
    assert len(sent) == 1 and texts[0].at <= sent[0].at <= summary.at  # the decision comes before the photos
    labels = captions(sent[0])
    assert len(labels) == 5
    assert all(label.startswith("Face 1 · closest #") and label.endswith(" · not a match") for label in labels)
    assert not any("Madonna" in label for label in labels)


async def test_known_face_is_named_with_its_score(api: FakeBotAPI, bot):
    since = len(api.calls)
    api.send_photo(USER, photo("Elton John"))
    summary = await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
    assert summary.text.startswith("most likely Elton John (score 0.")
    assert not [c for c in api.calls_to(USER, "sendMessage", since=since) if "not in the gallery" in c.text]
    labels = captions(albums(api, USER, since)[0])
    assert labels[0].startswith("Face 1 · #1 Elton John · 0.") and "not a match" not in labels[0]


async def test_history_keeps_each_decision(api: FakeBotAPI, bot):
    for person, expected in (("Madonna", "summary"), ("Elton John", "most likely")):
        since = len(api.calls)
        api.send_photo(USER, photo(person))
        await api.wait_for_text(USER, "most likely" if expected == "most likely" else "only the closest faces",
                                since=since, timeout=TIMEOUT)  # fmt: skip
    since = len(api.calls)
    api.send_text(USER, "/history")
    listed = await api.wait_for_text(USER, "last 2 queries", since=since, timeout=TIMEOUT)
    newest, older = listed.text.splitlines()[1:3]
    assert newest.endswith("facenet · Elton John (0." + newest.rsplit("(0.", 1)[1])
    assert older.endswith("facenet · not in the gallery")
