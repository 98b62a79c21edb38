""" "Download originals" (issue 21, part 4), end to end through the fake Bot API with real weights and photos: a
photos-layout answer's button sends the gallery files themselves as documents (their own bytes), a file over the
upload limit is named with its size, a file gone from the gallery is named as gone, and only the user the answer
was for may press it; forged or stale button data is refused.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bot.services.originals import NOT_YOURS, TOO_OLD, parse_callback, size_text, upload_limit
from bot.settings import Settings
from support.bot_helpers import USER, running_service
from support.helpers_engine import JERRY, MADONNA, MINDY, first_photos, sample, side_by_side

TIMEOUT = 120
OTHER = 3000
SELFIE = "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg"


@pytest.fixture(scope="module")
def originals_engine(make_engine, tmp_path_factory):
    """A photos-layout gallery: Madonna in three photos (one with Jerry Seinfeld), Mindy Kaling in one."""
    root = tmp_path_factory.mktemp("originals-gallery")
    madonna = [p for p in first_photos("Madonna", 30) if p not in (MADONNA, SELFIE)]
    photos = {
        "day-1/ceremony/IMG_0001.jpg": side_by_side(sample(JERRY), sample(MADONNA)),
        "day-2/portraits/IMG_0002.jpg": Image.open(sample(madonna[0])),
        "day-2/portraits/IMG_0003.jpg": Image.open(sample(madonna[1])),
        "day-2/portraits/IMG_0004.jpg": Image.open(sample(MINDY)),
    }
    for relative, image in photos.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / relative, quality=95)
    engine = make_engine(data_dir=tmp_path_factory.mktemp("originals-data"), gallery_dir=root, gallery_layout="photos")
    engine.build_index("facenet")
    yield engine
    engine.close()


def sha(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


async def answer_with_button(api, engine):
    """The selfie's answer (its summary, with the button) and the gallery files it found."""
    selfie = sample(SELFIE).read_bytes()
    want = [Path(p.path) for p in engine.search_bytes(selfie).faces[0].photos]
    assert len(want) >= 2
    since = len(api.calls)
    api.send_photo(USER, selfie)
    summary = await api.wait_for_text(USER, "appears in", since=since, timeout=TIMEOUT)
    assert "Download originals" in str(summary.params.get("reply_markup"))
    return summary, want


def documents(api, since: int) -> list:
    return api.calls_to(USER, "sendDocument", since=since)


def callback_answers(api, since: int) -> list[str]:
    return [c.text for c in api.calls[since:] if c.method == "answerCallbackQuery" and c.text]


async def test_download_originals_sends_the_files_own_bytes_and_names_those_too_large(api, originals_engine, tmp_path):
    gallery = Path(originals_engine.index_info("facenet").gallery)
    selfie_photos = [Path(p.path) for p in originals_engine.search_bytes(sample(SELFIE).read_bytes()).faces[0].photos]
    largest = max(selfie_photos, key=lambda p: p.stat().st_size)
    limit = largest.stat().st_size - 1  # the largest of the answer's files is over the limit
    async with running_service(api, originals_engine, tmp_path, originals_max_bytes=limit):
        summary, want = await answer_with_button(api, originals_engine)
        since = len(api.calls)
        api.press(USER, summary, "Download originals")
        done = await api.wait_for_text(USER, f"of {len(want)}.", since=since, timeout=TIMEOUT)
        sent = documents(api, since)
        expected = [p for p in want if p != largest]
        assert [sha(c.uploaded("document")) for c in sent] == [sha(p.read_bytes()) for p in expected]
        assert [c.text for c in sent] == [p.relative_to(gallery).as_posix() for p in expected]
        assert [c.params.get("document.filename") for c in sent] == [p.name for p in expected]
        large = largest.relative_to(gallery).as_posix()
        assert f"{large}: {size_text(largest.stat().st_size)}, over the {size_text(limit)}" in done.text
        for call in api.calls:  # no server path anywhere
            assert str(gallery) not in call.text

        # pressed again: sent once
        since = len(api.calls)
        api.press(USER, summary, "Download originals")
        await api.wait_for(lambda calls: "Already sent." in callback_answers(api, since))
        assert not documents(api, since)


async def test_only_the_user_it_was_for_may_press_it_and_forged_data_is_refused(api, originals_engine, tmp_path):
    async with running_service(api, originals_engine, tmp_path):
        summary, _ = await answer_with_button(api, originals_engine)
        data = str(summary.params["reply_markup"])
        token = data.split("orig:")[1].split("'")[0].split('"')[0]
        since = len(api.calls)
        api.press(OTHER, summary, "Download originals")
        for forged in ("orig:not-a-token", f"orig:{token}:999", f"orig:{token}:x", "orig:"):
            api.press_data(USER, summary, forged)
        await api.wait_for(lambda calls: len(callback_answers(api, since)) >= 5)
        answers = callback_answers(api, since)
        assert answers.count(NOT_YOURS) == 1 and answers.count(TOO_OLD) == 4
        assert not documents(api, since)


async def test_a_file_gone_from_the_gallery_is_named_the_others_still_go(api, originals_engine, tmp_path):
    gallery = Path(originals_engine.index_info("facenet").gallery)
    async with running_service(api, originals_engine, tmp_path):
        summary, want = await answer_with_button(api, originals_engine)
        gone = want[-1]
        kept = tmp_path / "kept.jpg"
        shutil.move(gone, kept)
        try:
            since = len(api.calls)
            api.press(USER, summary, "Download originals")
            done = await api.wait_for_text(USER, "no longer in the gallery", since=since, timeout=TIMEOUT)
        finally:
            shutil.move(kept, gone)
        assert f"{gone.relative_to(gallery).as_posix()}: no longer in the gallery." in done.text
        assert [sha(c.uploaded("document")) for c in documents(api, since)] == [sha(p.read_bytes()) for p in want[:-1]]


def test_the_upload_limit_follows_the_bot_api_server(tmp_path):
    official = Settings(bot_api_url="https://api.telegram.org/", data_dir=tmp_path)
    local = Settings(bot_api_url="http://telegram-bot-api:8081", data_dir=tmp_path)
    assert upload_limit(official) == 50 * 1024 * 1024
    assert upload_limit(local) == 2000 * 1024 * 1024
    assert upload_limit(local.model_copy(update={"originals_max_bytes": 10})) == 10
    assert parse_callback("abc") == ("abc", 0) and parse_callback("abc:20") == ("abc", 20)
    assert parse_callback("abc:-1") is None and parse_callback("") is None
