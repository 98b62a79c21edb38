"""End-to-end tests of the Telegram bot against a local fake Bot API server (real HTTP, real engine)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3

import numpy as np
import pytest

from support.bot_helpers import ADMIN, USER, albums, captions, jpeg_size, last_call, person_photo, running_bot
from support.fake_bot_api import FakeBotAPI
from support.helpers_engine import (
    CLEAR_FACES,
    bad_image_files,
    encode,
    first_photos,
    gradient_image,
    sample,
    side_by_side,
)

TIMEOUT = 60
OTHER_USER = USER + 77


@pytest.fixture(scope="session")
def bot_gallery(tmp_path_factory, sample_gallery):
    """A copy of the sample gallery that the /reindex test may add files to."""
    gallery = tmp_path_factory.mktemp("bot-gallery") / "gallery"
    shutil.copytree(sample_gallery, gallery)
    return gallery


@pytest.fixture(scope="session")
def bot_engine(tmp_path_factory, make_engine, bot_gallery):
    """One Engine (networks shared with the session's) with the sample gallery indexed once."""
    engine = make_engine(
        data_dir=tmp_path_factory.mktemp("bot-data"), gallery_dir=bot_gallery, max_image_pixels=4_000_000
    )
    engine.load("facenet")
    report = engine.build_index("facenet")
    assert report.faces_indexed > 100
    return engine


@pytest.fixture
async def bot(api, bot_engine, tmp_path):
    async with running_bot(api, bot_engine, tmp_path) as settings:
        yield settings


async def search(api: FakeBotAPI, user: int, data: bytes) -> int:
    """Send a photo and wait for the summary; returns the call index where the answer starts."""
    since = len(api.calls)
    api.send_photo(user, data)
    reply = await api.wait_for(
        lambda calls: [c for c in calls[since:] if c.chat_id == user and ("likely" in c.text or "no face" in c.text)],
        timeout=TIMEOUT,
    )
    assert "likely" in reply[0].text, reply[0].text
    return since


async def test_start_registers_commands_and_help(api, bot):
    assert any(c.method == "setMyCommands" for c in api.calls)
    commands = next(c for c in api.calls if c.method == "setMyCommands").params["commands"]
    assert {"model", "k", "history", "forget", "reindex", "stats"} <= {c["command"] for c in commands}
    api.send_text(USER, "/start")
    await api.wait_for_text(USER, "send me a photo")
    api.send_text(USER, "/help")
    await api.wait_for_text(USER, "/model", since=len(api.calls) - 1)


async def test_photo_answered_with_album_naming_the_person(api, bot):
    since = len(api.calls)
    api.send_photo(USER, person_photo("Madonna"))
    summary = await api.wait_for_text(USER, "most likely", timeout=TIMEOUT)
    assert "Madonna" in summary.text
    answer = api.calls_to(USER, since=since)
    assert answer[0].method == "sendChatAction"
    sent = albums(api, USER, since)
    assert len(sent) == 1 and sent[0].method == "sendMediaGroup"
    items = sent[0].media()
    assert len(items) == 5  # DEFAULT_K
    assert items[0]["caption"].startswith("Face 1 · #1 Madonna · 0.")
    for item in items:  # gallery photos are downscaled JPEGs
        assert max(jpeg_size(item["data"])) <= 512
    assert sent[0].at <= summary.at


async def test_k_controls_the_number_of_matches(api, bot):
    api.send_text(USER, "/k 3")
    await api.wait_for_text(USER, "set to 3")
    since = await search(api, USER, person_photo("Elton John"))
    sent = albums(api, USER, since)
    assert [len(captions(c)) for c in sent] == [3]
    assert "Elton John" in captions(sent[0])[0]

    api.send_text(USER, "/k 25")
    await api.wait_for_text(USER, "set to 25")
    since = await search(api, USER, person_photo("Elton John"))
    sent = albums(api, USER, since)
    assert [len(captions(c)) for c in sent] == [10]  # k over 10 is paged, not sent as several albums
    summary = last_call(api, USER, "most likely")
    assert "of the 25 closest faces" in summary.text  # the summary weighs all k matches
    ranks = []
    for first, last in ((11, 20), (21, 30)):  # 21-25 from the first search, 26-30 searched again
        since = len(api.calls)
        api.press(USER, summary, "More matches")
        summary = await api.wait_for_text(USER, f"Matches {first}–{last}", since=since, timeout=TIMEOUT)
        sent = albums(api, USER, since)
        assert [len(captions(c)) for c in sent] == [10]
        ranks += [caption.split("#")[1].split()[0] for c in sent for caption in captions(c)]
    assert ranks == [str(r) for r in range(11, 31)]
    assert any(c.method == "editMessageReplyMarkup" for c in api.calls_to(USER))  # the pressed button goes away

    api.send_text(USER, "/k 1")
    await api.wait_for_text(USER, "set to 1")
    since = await search(api, USER, person_photo("Jerry Seinfeld"))
    sent = albums(api, USER, since)
    assert [c.method for c in sent] == ["sendPhoto"]
    assert "Jerry Seinfeld" in sent[0].text

    api.send_text(USER, "/k")
    await api.wait_for_text(USER, "Matches per face: 1")


async def test_model_command_and_unavailable_vgg16(api, bot):
    api.send_text(USER, "/model")
    shown = await api.wait_for_text(USER, "Current backend: facenet")
    assert "vgg16" in shown.text and "unavailable" in shown.text and "python -m engine models fetch vgg16" in shown.text
    api.send_text(USER, "/model vgg16")
    refusal = await api.wait_for_text(USER, "Can't switch to vgg16")
    assert "python -m engine models fetch vgg16" in refusal.text
    api.send_text(USER, "/model")
    await api.wait_for_text(USER, "Current backend: facenet", since=len(api.calls))
    api.send_text(USER, "/model facenet")
    await api.wait_for_text(USER, "switched to facenet")


async def test_two_faces_get_a_boxes_photo_then_albums(api, bot, bot_engine):
    data = encode(side_by_side(sample(CLEAR_FACES["Madonna"]), sample(CLEAR_FACES["Elton John"])))
    faces = bot_engine.search_bytes(data, k=1).faces
    assert len(faces) >= 2
    api.send_text(USER, "/k 2")
    await api.wait_for_text(USER, "set to 2")
    since = len(api.calls)
    api.send_photo(USER, data)
    summary = await api.wait_for_text(USER, "Face 2:", since=since, timeout=TIMEOUT)
    face_albums = albums(api, USER, since)
    assert len(face_albums) == len(faces)  # no boxes photo unless asked
    for number, call in enumerate(face_albums, start=1):
        assert all(caption.startswith(f"Face {number} · ") for caption in captions(call))
    names = {captions(call)[0].split(" · ")[1].split(" ", 1)[1] for call in face_albums}
    assert {"Madonna", "Elton John"} <= names
    assert "Madonna" in summary.text and "Elton John" in summary.text
    since = len(api.calls)
    api.press(USER, summary, "Show faces")
    boxes = await api.wait_for(
        lambda calls: [c for c in calls[since:] if c.chat_id == USER and c.method == "sendPhoto"], TIMEOUT
    )
    assert "found" in boxes[0].text and "faces" in boxes[0].text
    assert jpeg_size(boxes[0].uploaded("photo"))  # the photo itself, with boxes drawn
    api.press(OTHER_USER, summary, "Show faces")  # someone else's answer: refused with a notice
    await api.wait_for(
        lambda calls: [
            c for c in calls if c.method == "answerCallbackQuery" and "Only the person" in str(c.params.get("text"))
        ]
    )


async def test_photo_without_face(api, bot):
    api.send_photo(USER, encode(gradient_image(400, 300)))
    reply = await api.wait_for_text(USER, "no face", timeout=TIMEOUT)
    assert "/model vgg16" in reply.text
    assert not albums(api, USER)


async def test_bad_inputs_get_clear_answers(api, bot):
    bad = bad_image_files()
    cases = [
        (lambda: api.send_photo(USER, bad["random.jpg"]), "can't use"),
        (lambda: api.send_photo(USER, bad["truncated.jpg"]), "can't use"),
        (lambda: api.send_document(USER, bad["text.jpg"], "notes.jpg", "image/jpeg"), "can't use"),
        (lambda: api.send_document(USER, b"%PDF-1.4 ...", "report.pdf", "application/pdf"), "isn't an image"),
        (lambda: api.send_document(USER, b"\xff\xd8", "huge.jpg", "image/jpeg", file_size=50_000_000), "50.0 MB"),
        (
            lambda: api.send_document(USER, encode(np.zeros((2100, 2100, 3), np.uint8), "PNG"), "big.png", "image/png"),
            "megapixels",
        ),
        (lambda: api.send_document(USER, bad["bomb-header.png"], "bomb.png", "image/png"), "can't use"),
        (lambda: api.send_sticker(USER), "sticker"),
        (lambda: api.send_animation(USER), "GIF"),
        (lambda: api.send_video(USER), "video"),
        (lambda: api.send_voice(USER), "voice"),
        (lambda: api.send_text(USER, "hello, who is this?"), "send me a photo"),
        (lambda: api.send_text(USER, "/k abc"), "from 1 to 50"),
        (lambda: api.send_text(USER, "/k 0"), "from 1 to 50"),
        (lambda: api.send_text(USER, "/k 51"), "from 1 to 50"),
        (lambda: api.send_text(USER, "/model foo"), "choose one of: facenet, vgg16"),
        (lambda: api.send_text(USER, "/frobnicate"), "/help"),
    ]
    for send, expected in cases:
        since = len(api.calls)
        send()
        await api.wait_for_text(USER, expected, since=since, timeout=TIMEOUT)
    assert not albums(api, USER)
    assert not any("something went wrong" in c.text for c in api.calls)
    # a valid photo sent as a file still works
    since = len(api.calls)
    api.send_document(USER, person_photo("Mindy Kaling"), "mindy.jpg", "image/jpeg")
    summary = await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
    assert "Mindy Kaling" in summary.text


async def test_allow_list(api, bot_engine, tmp_path):
    async with running_bot(api, bot_engine, tmp_path, allowed_user_ids={USER}):
        stranger = 4242
        api.send_photo(stranger, person_photo("Madonna"))
        await api.wait_for_text(stranger, "private")
        api.send_text(stranger, "/k 3")  # told once per REFUSAL_INTERVAL_S (tests/bot/test_bot_access.py): dropped
        await search(api, USER, person_photo("Madonna"))
        assert not albums(api, stranger) and len(api.calls_to(stranger, "sendMessage")) == 1
        api.send_text(ADMIN, "/stats")  # admins are always allowed
        await api.wait_for_text(ADMIN, "Queries: 1")


async def test_history_forget_and_settings_survive_restart(api, bot_engine, tmp_path):
    async with running_bot(api, bot_engine, tmp_path):
        api.send_text(USER, "/history")
        await api.wait_for_text(USER, "No queries yet")
        api.send_text(USER, "/k 4")
        await api.wait_for_text(USER, "set to 4")
        await search(api, USER, person_photo("Ben Afflek"))
        await search(api, USER + 1, person_photo("Madonna"))
    database = tmp_path / "bot.sqlite3"
    with sqlite3.connect(database) as connection:
        rows = connection.execute("select user_id, model, k, faces from queries order by id").fetchall()
        assert rows == [(USER, "facenet", 4, 1), (USER + 1, "facenet", 5, 1)]
        columns = {row[1] for row in connection.execute("pragma table_info(queries)")}
        assert not any("sha" in column or "hash" in column for column in columns)  # no photo fingerprint kept
        assert connection.execute("select count(*) from matches").fetchone()[0] == 4 + 5
        decisions = connection.execute("select identity_name from query_faces order by query_id").fetchall()
        assert decisions == [("Ben Afflek",), ("Madonna",)]  # each face's open-set answer is kept

    async with running_bot(api, bot_engine, tmp_path):  # a new Application on the same database
        since = len(api.calls)
        api.send_text(USER, "/k")
        await api.wait_for_text(USER, "Matches per face: 4", since=since)
        api.send_text(USER, "/history")
        listed = await api.wait_for_text(USER, "last 1 queries", since=since)
        assert "facenet · Ben Afflek (0." in listed.text
        api.send_text(USER, "/forget")
        await api.wait_for_text(USER, "Deleted 1", since=since)
        api.send_text(USER, "/history")
        await api.wait_for_text(USER, "No queries yet", since=since)
        api.send_text(USER + 1, "/history")  # other users keep theirs
        await api.wait_for_text(USER + 1, "Madonna", since=since)
        api.send_text(USER, "/stats")
        await api.wait_for_text(USER, "admins only", since=since)
        api.send_text(ADMIN, "/stats")
        stats = await api.wait_for_text(ADMIN, "Queries: 1", since=since)
        assert "facenet: 118 faces indexed" in stats.text and "median latency" in stats.text
        assert "Embedding on: CPU (" in stats.text or "Embedding on: GPU (" in stats.text


async def test_several_users_at_once(api, bot):
    people = ["Madonna", "Elton John", "Jerry Seinfeld", "Mindy Kaling", "Ben Afflek"]
    users = [USER + 10 + n for n in range(len(people))]
    since = len(api.calls)
    for user, person in zip(users, people):
        api.send_photo(user, person_photo(person))
    for user, person in zip(users, people):
        summary = await api.wait_for_text(user, "most likely", since=since, timeout=TIMEOUT)
        assert person in summary.text
        assert person in captions(albums(api, user, since)[0])[0]


async def test_second_photo_while_first_is_running(api, bot):
    since = len(api.calls)
    api.send_photo(USER, person_photo("Madonna"))
    api.send_photo(USER, person_photo("Elton John"))
    await api.wait_for_text(USER, "still working on your previous photo", since=since, timeout=TIMEOUT)
    await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
    await asyncio.sleep(0.5)
    assert len(api.calls_to(USER, "sendMediaGroup", since=since)) == 1


async def test_reindex_admin_progress_and_non_admin_refused(api, bot, bot_gallery, bot_engine):
    bot_engine_no_face = 0  # MTCNN finds a face in every photo of the sample gallery
    api.send_text(USER, "/reindex")
    await api.wait_for_text(USER, "admins only")

    added = []
    for number in range(20):  # new photos without faces: the index's faces stay the same for other tests
        path = bot_gallery / "Nobody" / f"gradient{number:02d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode(gradient_image(800 + number, 600)))  # large enough that the run shows its progress
        added.append(path)
    broken = bot_gallery / "Nobody" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    added.append(broken)
    try:
        since = len(api.calls)
        api.send_text(ADMIN, "/reindex facenet")
        await api.wait_for_text(ADMIN, "Reindexing facenet", since=since)
        api.send_text(ADMIN, "/reindex")
        await api.wait_for_text(ADMIN, "already running", since=since)
        api.send_photo(USER, person_photo("Madonna"))  # searches go on meanwhile
        done = await api.wait_for_text(ADMIN, "Reindex done", since=since, timeout=120)
        assert "20 added, 0 updated, 0 removed, 1 skipped" in done.text, done.text  # the broken file: skipped only
        assert f"{20 + bot_engine_no_face} without a face" in done.text, done.text  # counts the whole gallery
        assert "images/s" in done.text
        edits = [c for c in api.calls_to(ADMIN, "editMessageText", since=since)]
        progress = [c.text for c in edits if "/21 images" in c.text]
        assert progress, [c.text for c in edits]
        assert "%" in progress[0]
        assert len({int(c.params["message_id"]) for c in edits}) == 1  # one message, edited
        await api.wait_for_text(USER, "most likely Madonna", since=since, timeout=TIMEOUT)

        api.send_text(ADMIN, "/reindex all")
        again = await api.wait_for_text(ADMIN, "Reindex done", since=len(api.calls), timeout=60)
        assert "0 added, 0 updated, 0 removed, 1 skipped" in again.text, again.text  # still reported, not re-read
        api.send_text(ADMIN, "/reindex bogus")
        await api.wait_for_text(ADMIN, "Usage: /reindex", since=len(api.calls))
    finally:
        for path in added:
            path.unlink()
        (bot_gallery / "Nobody").rmdir()


async def test_vgg16_whole_image_search(api, make_engine, tmp_path, tmp_path_factory):
    gallery = tmp_path_factory.mktemp("vgg-gallery")
    for person in ["Madonna", "Elton_John", "Jerry_Seinfeld", "Mindy_Kaling", "Ben_Afflek"]:
        for relative in first_photos(person, 2):
            target = gallery / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample(relative), target)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, vgg16_random_weights=True)
    async with running_bot(api, engine, tmp_path):
        api.send_text(USER, "/model vgg16")
        await api.wait_for_text(USER, "switched to vgg16", timeout=TIMEOUT)
        api.send_text(USER, "/k 3")
        await api.wait_for_text(USER, "set to 3")
        since = len(api.calls)
        # a gallery photo: its own row is the best match whatever the (seeded, random) weights make of the others
        api.send_photo(USER, sample(first_photos("Madonna", 1)[0]).read_bytes())
        await api.wait_for_text(USER, "most likely Madonna", since=since, timeout=TIMEOUT)
        sent = albums(api, USER, since)
        assert [len(captions(c)) for c in sent] == [3]  # no boxes photo: the whole image is one query
        assert captions(sent[0])[0].startswith("Face 1 · #1 ")
        since = len(api.calls)
        api.send_photo(USER, encode(gradient_image(300, 300)))  # no face needed with vgg16
        # random weights: whether the best match clears the threshold is chance, but an album always comes
        await api.wait_for(
            lambda calls: [
                c for c in calls[since:] if c.chat_id == USER and ("likely" in c.text or "no confident" in c.text)
            ],
            timeout=TIMEOUT,
        )
        assert [len(captions(c)) for c in albums(api, USER, since)] == [3]


async def test_unexpected_error_is_logged_and_answered(api, bot, bot_engine, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated engine crash")

    monkeypatch.setattr(bot_engine, "search_image", broken)
    api.send_photo(USER, person_photo("Madonna"))
    await api.wait_for_text(USER, "something went wrong", timeout=TIMEOUT)
    assert any(record.exc_info and "simulated engine crash" in str(record.exc_info[1]) for record in caplog.records)
    monkeypatch.undo()
    await search(api, USER, person_photo("Madonna"))  # the user is not left "still working"
