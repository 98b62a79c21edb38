"""Following (live events, GALLERY_LAYOUT=photos) end to end through the fake Bot API with real weights and photos:
a selfie captioned /follow, the agreement, the template row in the real SQLite file, the first delivery (every photo
of the guest so far), a new photo indexed and delivered to the follower alone, /following, /unfollow and /forget,
selfies that give nothing to store, and batching by DELIVERY_INTERVAL_S.

The gallery is an event composed from sample-gallery photos: Madonna in four photos, Jerry Seinfeld in two; Elton
John in none (the stranger who follows and must get nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support.bot_helpers import USER, albums, running_service
from support.helpers_engine import BEN, ELTON, JERRY, MADONNA, MINDY, encode, first_photos, sample, side_by_side

TIMEOUT = 120
MADONNA_SELFIE = "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg"
JERRY_SELFIE = "Jerry_Seinfeld/httpaurorasblogcomwpcontentuploadsjerryseinfeldpublicityshotjpg.jpg"
STRANGER = USER + 1
WITNESS = USER + 2  # follows Madonna too: what reaches them shows a match has run


def others(person: str, *used: str) -> list[str]:
    return [p for p in first_photos(person, 30) if p not in used]


MADONNA_MORE = others("Madonna", MADONNA, MADONNA_SELFIE)


def new_madonna(number: int) -> Image.Image:
    """A new group photo with a face of Madonna the selfie finds (those of IMG_0001 and IMG_0002), and another."""
    face = (MADONNA, MADONNA_MORE[0])[number % 2]
    return side_by_side(sample(others("Ben_Afflek", BEN)[number]), sample(face))


def event_gallery(root: Path) -> Path:
    """8 photos, 11 faces; Madonna in IMG_0001, 0002, 0004 and 0005."""
    jerry = others("Jerry_Seinfeld", JERRY, JERRY_SELFIE)
    mindy = others("Mindy_Kaling", MINDY)
    photos = {
        "day-1/ceremony/IMG_0001.jpg": side_by_side(sample(JERRY), sample(MADONNA)),
        "day-1/ceremony/IMG_0002.jpg": side_by_side(sample(MADONNA_MORE[0]), sample(MINDY)),
        "day-1/party/IMG_0003.jpg": side_by_side(sample(jerry[0]), sample(mindy[0])),
        "day-2/portraits/IMG_0004.jpg": Image.open(sample(MADONNA_MORE[1])),
        "day-2/portraits/IMG_0005.jpg": Image.open(sample(MADONNA_MORE[2])),
        "day-2/portraits/IMG_0006.jpg": Image.open(sample(mindy[1])),
        "day-2/portraits/IMG_0007.jpg": Image.open(sample(BEN)),
        "day-2/portraits/IMG_0008.jpg": Image.open(sample(others("Ben_Afflek", BEN)[0])),
    }
    for relative, image in photos.items():
        add_photo(root, relative, image)
    return root


def add_photo(root: Path, relative: str, image: Image.Image) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(root / relative, quality=92)


@pytest.fixture
def event(make_engine, tmp_path):
    """A fresh indexed event gallery per test (tests add photos to it)."""
    root = event_gallery(tmp_path / "gallery")
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=root, gallery_layout="photos")
    assert engine.build_index("facenet").faces_indexed == 11
    yield engine
    engine.close()


def db_rows(tmp_path: Path, query: str, *args) -> list[tuple]:
    with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:
        return connection.execute(query, args).fetchall()


def delivered_paths(api, chat_id: int, since: int = 0) -> list[str]:
    """The gallery paths in the captions of every photo sent to `chat_id` since call `since`."""
    paths = []
    for call in albums(api, chat_id, since):
        items = call.media() if call.method == "sendMediaGroup" else [{"caption": call.text}]
        paths += [item.get("caption", "").split(" · ")[0] for item in items]
    return [p for p in paths if p.endswith(".jpg")]


def madonna_answer(engine) -> set[str]:
    gallery = Path(engine.index_info("facenet").gallery)
    found = engine.search_bytes(sample(MADONNA_SELFIE).read_bytes()).faces[0].photos
    return {Path(p.path).relative_to(gallery).as_posix() for p in found}


async def follow_and_agree(api, user: int, selfie: bytes) -> str:
    """Follow with `selfie` and agree; the bot's "You're following" answer."""
    since = len(api.calls)
    api.send_photo(user, selfie, caption="/follow")
    prompt = await api.wait_for_text(user, "I keep one face template", since=since, timeout=TIMEOUT)
    assert "not kept" in prompt.text and "/unfollow" in prompt.text
    api.press(user, prompt, "I agree")
    return (await api.wait_for_text(user, "You're following", since=since, timeout=TIMEOUT)).text


async def wait_paths(api, chat_id: int, count: int, since: int = 0) -> list[str]:
    await api.wait_for(lambda calls: len(delivered_paths(api, chat_id, since)) >= count, timeout=TIMEOUT)
    return delivered_paths(api, chat_id, since)


async def test_follow_agree_first_delivery_new_photo_following_unfollow_and_forget(api, event, tmp_path):
    want = madonna_answer(event)
    assert {"day-1/ceremony/IMG_0001.jpg", "day-1/ceremony/IMG_0002.jpg"} <= want
    async with running_service(api, event, tmp_path, gallery_layout="photos", delivery_interval_s=0):
        await follow_and_agree(api, USER, sample(MADONNA_SELFIE).read_bytes())
        template = db_rows(tmp_path, "select model, length(template), selfies from followers where user_id = ?", USER)
        assert template == [("facenet", 128 * 4, 1)]
        assert db_rows(tmp_path, "select purpose from consents where user_id = ?", USER) == [("follow",)]
        # the first delivery: every photo of the current answer, each once, with the face marked
        first = await wait_paths(api, USER, len(want))
        assert sorted(first) == sorted(want)
        note = await api.wait_for_text(USER, "of you, new in the gallery", timeout=TIMEOUT)
        assert "Download originals" in str(note.params.get("reply_markup"))

        # a stranger follows too: nothing of theirs in the gallery
        await follow_and_agree(api, STRANGER, sample(ELTON).read_bytes())
        assert "No photo of you yet" in api.calls_to(STRANGER, "sendMessage")[-1].text

        # a new photo of Madonna indexed (as `python -m engine index` would): the follower gets exactly it
        since = len(api.calls)
        add_photo(Path(event.settings.gallery_dir), "day-3/IMG_0009.jpg", new_madonna(1))
        add_photo(
            Path(event.settings.gallery_dir), "day-3/IMG_0010.jpg", Image.open(sample(others("Mindy_Kaling", MINDY)[2]))
        )
        await asyncio.to_thread(event.build_index, "facenet")
        assert "day-3/IMG_0009.jpg" in madonna_answer(event)
        assert await wait_paths(api, USER, 1, since) == ["day-3/IMG_0009.jpg"]
        await api.wait_for_text(USER, "1 photo of you", since=since, timeout=TIMEOUT)
        assert not delivered_paths(api, STRANGER)
        statuses = db_rows(tmp_path, "select path, status from deliveries where user_id = ? order by path", USER)
        assert {path for path, _ in statuses} == want | {"day-3/IMG_0009.jpg"}
        assert {status for _, status in statuses} == {"sent"}

        # /following says since when and how many
        since = len(api.calls)
        api.send_text(USER, "/following")
        info = await api.wait_for_text(USER, "since", since=since, timeout=TIMEOUT)
        assert f"{len(want) + 1} photos sent so far" in info.text

        # /unfollow deletes the template at once; /forget deletes the rest (outbox and agreement)
        api.send_text(USER, "/unfollow")
        await api.wait_for_text(USER, "template is deleted", since=since, timeout=TIMEOUT)
        assert not db_rows(tmp_path, "select * from followers where user_id = ?", USER)
        api.send_text(STRANGER, "/forget")
        await api.wait_for(lambda calls: not db_rows(tmp_path, "select * from followers where user_id = ?", STRANGER))
        await api.wait_for(lambda calls: not db_rows(tmp_path, "select * from consents where user_id = ?", STRANGER))

        # after /unfollow, a new photo of Madonna goes to her other follower only
        await follow_and_agree(api, WITNESS, sample(MADONNA_SELFIE).read_bytes())
        await wait_paths(api, WITNESS, len(want) + 1)
        since = len(api.calls)
        add_photo(Path(event.settings.gallery_dir), "day-3/IMG_0011.jpg", new_madonna(2))
        await asyncio.to_thread(event.build_index, "facenet")
        assert await wait_paths(api, WITNESS, 1, since) == ["day-3/IMG_0011.jpg"]
        assert not delivered_paths(api, USER, since)
        assert db_rows(tmp_path, "select user_id from deliveries where path = 'day-3/IMG_0011.jpg'") == [(WITNESS,)]


async def test_without_agreement_or_a_usable_face_nothing_is_stored(api, event, tmp_path):
    async with running_service(api, event, tmp_path, gallery_layout="photos", delivery_interval_s=0):
        # "New photos of me" under a search's answer explains how to follow (the query photo is not kept)
        api.send_photo(USER, sample(MADONNA_SELFIE).read_bytes())
        answer = await api.wait_for_text(USER, "appears in", timeout=TIMEOUT)
        since = len(api.calls)
        api.press(USER, answer, "New photos of me")
        await api.wait_for_text(USER, "selfie captioned /follow", since=since, timeout=TIMEOUT)
        since = len(api.calls)
        api.send_photo(USER, sample(MADONNA_SELFIE).read_bytes(), caption="/follow")
        await api.wait_for_text(USER, "I keep one face template", since=since, timeout=TIMEOUT)
        # two faces: the photo with numbered boxes, and how to pick one
        api.send_photo(USER + 5, encode(side_by_side(sample(JERRY), sample(MADONNA))), caption="/follow")
        boxes = await api.wait_for(
            lambda calls: [c for c in calls if c.chat_id == USER + 5 and c.method == "sendPhoto"], timeout=TIMEOUT
        )
        assert "I found 2 faces" in boxes[0].text and "/follow N" in boxes[0].text
        # no face
        noise = np.random.default_rng(0).integers(90, 110, (300, 300, 3), dtype=np.uint8)
        api.send_photo(USER + 6, encode(Image.fromarray(noise)), caption="/follow")
        await api.wait_for_text(USER + 6, "no face", timeout=TIMEOUT)
        assert not db_rows(tmp_path, "select * from followers")
        assert not db_rows(tmp_path, "select * from consents")
        assert not db_rows(tmp_path, "select * from deliveries")
        # "/follow 2" as a reply to the two-face photo: face 2 (Madonna) followed, once agreed
        reply_to = max(u for u, m in api.messages.items() if m["from"]["id"] == USER + 5 and m.get("photo"))
        since = len(api.calls)
        api.send_text(USER + 5, "/follow 2", reply_to=reply_to)
        prompt = await api.wait_for_text(USER + 5, "I keep one face template", since=since, timeout=TIMEOUT)
        api.press(USER + 5, prompt, "I agree")
        await api.wait_for_text(USER + 5, "You're following", since=since, timeout=TIMEOUT)
        assert "day-1/ceremony/IMG_0001.jpg" in await wait_paths(api, USER + 5, 2)


async def test_delivery_interval_batches_new_versions(api, event, tmp_path):
    interval = 6.0
    async with running_service(api, event, tmp_path, gallery_layout="photos", delivery_interval_s=interval):
        await follow_and_agree(api, USER, sample(MADONNA_SELFIE).read_bytes())
        await wait_paths(api, USER, len(madonna_answer(event)))
        first_batch = time.monotonic()
        since = len(api.calls)
        gallery = Path(event.settings.gallery_dir)
        for number in (9, 10):  # two index versions inside the interval
            add_photo(gallery, f"day-3/IMG_00{number:02d}.jpg", new_madonna(number))
            await asyncio.to_thread(event.build_index, "facenet")
        paths = await wait_paths(api, USER, 2, since)
        assert sorted(paths) == ["day-3/IMG_0009.jpg", "day-3/IMG_0010.jpg"]
        sends = albums(api, USER, since)
        assert len(sends) == 1 and sends[0].method == "sendMediaGroup"  # one batch: one album
        assert sends[0].at - first_batch >= interval - 1.0


async def test_a_follower_who_blocked_the_bot_is_no_longer_followed(api, event, tmp_path):
    async with running_service(api, event, tmp_path, gallery_layout="photos", delivery_interval_s=0):
        api.fail_next("sendMediaGroup", 1, code=403)  # Forbidden: bot was blocked by the user
        await follow_and_agree(api, USER, sample(MADONNA_SELFIE).read_bytes())
        await api.wait_for(lambda calls: not db_rows(tmp_path, "select * from followers"), timeout=TIMEOUT)
        assert not db_rows(tmp_path, "select * from deliveries where status != 'sent'")


async def test_follow_by_a_user_not_allowed_is_refused_and_nothing_is_stored(api, event, tmp_path):
    async with running_service(api, event, tmp_path, gallery_layout="photos", allowed_user_ids=frozenset({USER})):
        api.send_photo(STRANGER, sample(MADONNA_SELFIE).read_bytes(), caption="/follow")
        await api.wait_for_text(STRANGER, "this bot is private", timeout=TIMEOUT)
        api.send_text(STRANGER, "/following")
        await asyncio.sleep(1.0)  # a refused update gets no answer: give the bot time to do anything at all
        assert not db_rows(tmp_path, "select * from followers")
        assert not db_rows(tmp_path, "select * from consents")


async def test_nothing_is_delivered_until_the_gallery_holds_delivery_min_faces(api, event, tmp_path):
    faces = event.index_info("facenet").count
    async with running_service(
        api, event, tmp_path, gallery_layout="photos", delivery_interval_s=0, delivery_min_faces=faces + 1
    ):
        answer = await follow_and_agree(api, USER, sample(MADONNA_SELFIE).read_bytes())
        assert "gallery is still small" in answer  # not "no photo of you": there are some, not matched yet
        assert not db_rows(tmp_path, "select * from deliveries")  # too few faces for the decision's cohort
        since = len(api.calls)
        add_photo(Path(event.settings.gallery_dir), "day-3/IMG_0009.jpg", new_madonna(1))
        await asyncio.to_thread(event.build_index, "facenet")
        assert event.index_info("facenet").count > faces
        # enough faces now: the first match takes every follower, old photos and new
        want = madonna_answer(event)
        assert "day-3/IMG_0009.jpg" in want
        assert sorted(await wait_paths(api, USER, len(want), since)) == sorted(want)


async def test_a_group_photo_uploaded_into_the_watched_gallery_reaches_its_follower(api, make_engine, tmp_path):
    root = event_gallery(tmp_path / "gallery")
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=root, gallery_layout="photos", watch_settle_s=0.4)
    try:
        async with running_service(api, engine, tmp_path, delivery_interval_s=0, watch_gallery=True):
            await follow_and_agree(api, USER, sample(MADONNA_SELFIE).read_bytes())
            await follow_and_agree(api, STRANGER, sample(ELTON).read_bytes())
            first = await wait_paths(api, USER, len(madonna_answer(engine)))
            since = len(api.calls)
            # the photographer's upload: written in parts under its final name, as an FTP upload writes it
            buffer = io.BytesIO()
            new_madonna(1).convert("RGB").save(buffer, "JPEG", quality=92)
            data, target = buffer.getvalue(), root / "day-3" / "IMG_0100.jpg"
            target.parent.mkdir()
            with target.open("wb") as upload:
                for start in range(0, len(data), len(data) // 4 + 1):
                    upload.write(data[start : start + len(data) // 4 + 1])
                    upload.flush()
                    await asyncio.sleep(0.1)  # an upload's pace, shorter than WATCH_SETTLE_S
            assert await wait_paths(api, USER, 1, since) == ["day-3/IMG_0100.jpg"]
            assert "day-3/IMG_0100.jpg" not in first
            assert not delivered_paths(api, STRANGER)
            assert db_rows(tmp_path, "select count(*) from deliveries where path = 'day-3/IMG_0100.jpg'") == [(1,)]
    finally:
        engine.close()


@contextlib.contextmanager
def database_down(url: str) -> Iterator[None]:
    """The bot's PostgreSQL database unavailable: new connections refused, the open ones cut; then back."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            )
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


async def test_a_database_outage_during_delivery_delays_the_photo_and_loses_nothing(
    api, event, tmp_path, postgres_server, caplog
):
    from sqlalchemy import create_engine, text

    from support.postgres_server import fresh_database

    with fresh_database(postgres_server) as url:
        overrides = {"gallery_layout": "photos", "delivery_interval_s": 0, "database_url": url}
        async with running_service(api, event, tmp_path, **overrides):
            await follow_and_agree(api, USER, sample(MADONNA_SELFIE).read_bytes())
            await wait_paths(api, USER, len(madonna_answer(event)))
            since = len(api.calls)
            with database_down(url):
                add_photo(Path(event.settings.gallery_dir), "day-3/IMG_0012.jpg", new_madonna(3))
                await asyncio.to_thread(event.build_index, "facenet")
                # the new photo was matched while the database was down: that failed, and the bot waits
                await api.wait_for(lambda calls: any("failed; retrying" in r.getMessage() for r in caplog.records))
                assert not delivered_paths(api, USER, since)
            assert await wait_paths(api, USER, 1, since) == ["day-3/IMG_0012.jpg"]
            database = create_engine(url)

            def statuses(calls) -> list[tuple]:
                with database.connect() as connection:
                    return [tuple(row) for row in connection.execute(text("SELECT path, status FROM deliveries"))]

            try:  # every row marked sent in the end (marks the outage cut off are made again), each photo sent once
                rows = await api.wait_for(
                    lambda calls: all(s == "sent" for _, s in statuses(calls)) and statuses(calls)
                )
            finally:
                database.dispose()
            assert ("day-3/IMG_0012.jpg", "sent") in rows
            paths = delivered_paths(api, USER)
            assert sorted(paths) == sorted({path for path, _ in rows})  # none lost, none repeated
