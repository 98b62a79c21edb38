"""Answers within Telegram's limits and the queue's (issue 20): a people-layout album summary longer than 4,096
characters is split (its buttons under the last part), photos-layout work holds places of `MAX_QUEUE`, and a gallery
file that is no image of the gallery's formats is skipped while the rest of the answer goes. End to end through the
fake Bot API, which refuses texts over 4,096 characters and captions over 1,024 as Telegram does."""

from __future__ import annotations

import re
import shutil

import pytest
from PIL import Image
from test_bot_photos import MADONNA_SELFIE, event_engine  # noqa: F401 - the photos-layout gallery, as a fixture

from bot.render import ThumbnailCache
from bot.services.persons import face_tile
from bot.services.photos_answer import mark_face
from engine.errors import BadImageError
from support.bot_helpers import USER, albums, captions, person_photo, running_service
from support.fake_bot_api import TEXT_LIMIT
from support.helpers_engine import BEN, CLEAR_FACES, ELTON, copy_photos, encode, first_photos, png_header_only, sample

TIMEOUT = 120


@pytest.fixture(scope="module")
def two_people_engine(tmp_path_factory, make_engine):
    """A gallery of Ben Afflek and Elton John only (first photos and clear faces), indexed once."""
    gallery = tmp_path_factory.mktemp("limits-gallery") / "gallery"
    copy_photos(gallery, first_photos("Ben_Afflek", 3) + first_photos("Elton_John", 3) + [BEN, ELTON])
    engine = make_engine(data_dir=tmp_path_factory.mktemp("limits-data"), gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


def five_faces() -> bytes:
    """One photo of five clear faces side by side: two people of the gallery, three strangers to it."""
    tiles = []
    for person in ("Ben Afflek", "Madonna", "Elton John", "Jerry Seinfeld", "Mindy Kaling"):
        with Image.open(sample(CLEAR_FACES[person])) as image:
            image = image.convert("RGB")
            tiles.append(image.resize((round(image.width * 250 / image.height), 250)))
    canvas = Image.new("RGB", (sum(t.width for t in tiles), 250), (128, 128, 128))
    left = 0
    for tile in tiles:
        canvas.paste(tile, (left, 0))
        left += tile.width
    return encode(canvas, quality=90)


async def test_a_long_album_summary_is_split_with_the_buttons_on_its_last_part(api, two_people_engine, tmp_path):
    """Ten photos of five faces: a summary of ~5,000 characters comes as two messages, every face named."""
    async with running_service(api, two_people_engine, tmp_path, default_k=1, max_answer_photos=1):
        since = len(api.calls)
        api.send_album(USER, [five_faces()] * 10)

        def done(calls):
            mine = [c for c in calls[since:] if c.chat_id == USER and c.method == "sendMessage"]
            if any("went wrong" in c.text for c in mine):
                return mine
            return mine if any(c.params.get("reply_markup") for c in mine) else None

        texts = await api.wait_for(done, timeout=TIMEOUT)
        assert not any("went wrong" in c.text for c in texts), [c.text[:200] for c in texts]
        assert not [c for c in api.failed if c.chat_id == USER], "Telegram refused a call"
        parts = [c for c in texts if re.match(r"Photo \d+: Face \d+: (most likely|not in the gallery \()", c.text)]
        assert len(parts) >= 2, [len(c.text) for c in parts]
        assert all(len(c.text) <= TEXT_LIMIT for c in parts)
        lines = [line for c in parts for line in c.text.splitlines()]
        named = {(int(m[1]), int(m[2])) for line in lines if (m := re.match(r"Photo (\d+): Face (\d+): ", line))}
        assert named == {(p, f) for p in range(1, 11) for f in range(1, 6)}  # every face of every photo, once
        assert any("Show faces" in line for line in lines)  # the hint goes with the last part...
        assert [bool(c.params.get("reply_markup")) for c in parts] == [False] * (len(parts) - 1) + [True]  # ...buttons
        assert parts[-1] is texts[-1]


# ---- MAX_QUEUE in the photos layout ---------------------------------------------------------------------------


async def test_photos_layout_marking_and_more_photos_hold_queue_places(api, event_engine, tmp_path):  # noqa: F811
    """One queue place: while a selfie's answer (or its More photos) marks and sends gallery photos, another user's
    photo is answered busy, not admitted past the pool's bound."""
    other, selfie = USER + 1, sample(MADONNA_SELFIE).read_bytes()
    assert len(event_engine.search_bytes(selfie).faces[0].photos) >= 2  # a page of one photo, then More photos
    sends = ("sendPhoto", "sendMediaGroup")
    async with running_service(api, event_engine, tmp_path, max_queue=1, workers=1, default_k=1) as service:
        for method in sends:  # the answer's gallery photo waits in the fake: its marking is done, not its page
            api.hold(method)
        since = len(api.calls)
        api.send_photo(USER, selfie)
        await api.wait_for(lambda calls: api.held, timeout=TIMEOUT)
        api.send_photo(other, person_photo("Elton John"))
        reply = await _reply_of(api, other, since)
        assert "busy" in reply.text, reply.method
        for method in sends:
            api.release(method)
        summary = await api.wait_for_text(USER, "appears in", since=since, timeout=TIMEOUT)
        assert "More photos" in str(summary.params.get("reply_markup"))

        for method in sends:
            api.hold(method)
        since = len(api.calls)
        api.press(USER, summary, "More photos")
        await api.wait_for(lambda calls: api.held, timeout=TIMEOUT)
        api.send_photo(other, person_photo("Elton John"))
        reply = await _reply_of(api, other, since)
        assert "busy" in reply.text, reply.method
        for method in sends:
            api.release(method)
        await api.wait_for_text(USER, "photo 2 of", since=since, timeout=TIMEOUT)
        await api.wait_for(lambda calls: service.pending == 0, timeout=TIMEOUT)  # every place given back


async def _reply_of(api, user: int, since: int):
    """The bot's first reaction to `user`'s photo: its "busy" text, or its download (getFile) when admitted."""
    return (
        await api.wait_for(
            lambda calls: (
                [c for c in calls[since:] if c.chat_id == user and c.method == "sendMessage"]
                or [
                    c
                    for c in calls[since:]
                    if c.method == "getFile" and c.params.get("file_id") in _files_of(api, user)
                ]
            ),
            timeout=TIMEOUT,
        )
    )[0]


def _files_of(api, user: int) -> set[str]:
    return {
        size["file_id"]
        for message in api.messages.values()
        if message.get("from", {}).get("id") == user
        for size in message.get("photo", [])
    }


# ---- gallery files that are no images of the gallery's formats ------------------------------------------------


def odd_files(folder) -> dict[str, object]:
    """Gallery files named .jpg that the gallery's formats do not open: a decompression-bomb header (Pillow raises
    DecompressionBombError, not OSError) and a real image of a format the gallery never indexes (PCX)."""
    folder.mkdir(parents=True, exist_ok=True)
    bomb, pcx = folder / "bomb.jpg", folder / "pcx.jpg"
    bomb.write_bytes(png_header_only(30_000, 30_000))
    Image.new("RGB", (64, 64), (200, 30, 30)).save(pcx, format="PCX")
    return {"bomb": bomb, "pcx": pcx}


@pytest.mark.parametrize("kind", ["bomb", "pcx"])
def test_gallery_side_readers_refuse_files_outside_the_gallery_formats(tmp_path, kind):
    path = odd_files(tmp_path)[kind]
    with pytest.raises(BadImageError):
        ThumbnailCache(side=64).get(path)
    with pytest.raises(BadImageError):
        mark_face(path, (1, 1, 8, 8))
    with pytest.raises(BadImageError):
        face_tile(path, (1, 1, 8, 8))


async def test_an_odd_gallery_file_is_skipped_and_the_rest_of_the_answer_goes(api, two_people_engine, tmp_path):
    """Two of the matches' gallery files were replaced since the index (a bomb header, a PCX, both named .jpg):
    the other matches are sent, the summary comes, nothing "went wrong"."""
    query = person_photo("Elton John")
    matches = two_people_engine.search_bytes(query, k=4).faces[0].matches
    odd = odd_files(tmp_path / "odd")
    kept = tmp_path / "kept"
    kept.mkdir()
    replaced = {matches[0].path: odd["bomb"], matches[1].path: odd["pcx"]}
    for number, (path, source) in enumerate(replaced.items()):
        shutil.move(path, kept / f"{number}.jpg")
        shutil.copyfile(source, path)
    try:
        async with running_service(api, two_people_engine, tmp_path, default_k=4):
            since = len(api.calls)
            api.send_photo(USER, query)
            summary = await api.wait_for(
                lambda calls: [c for c in calls[since:] if c.chat_id == USER and c.method == "sendMessage"],
                timeout=TIMEOUT,
            )
            assert "most likely Elton John" in summary[0].text, summary[0].text
            sent = [caption for call in albums(api, USER, since) for caption in captions(call)]
            assert len(sent) == 2, sent  # matches 3 and 4
            assert all("#1 " not in caption and "#2 " not in caption for caption in sent)
    finally:
        for number, path in enumerate(replaced):
            shutil.move(kept / f"{number}.jpg", path)
