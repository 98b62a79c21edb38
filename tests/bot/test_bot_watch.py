"""WATCH_GALLERY=true: the bot indexes a photo copied into its photos-layout gallery as it lands (no /reindex), a
selfie then finds it, and /stats says how the watch goes. Real weights, real photos, the fake Bot API over HTTP."""

from __future__ import annotations

import asyncio

from support.bot_helpers import ADMIN, USER, albums, captions, running_service
from support.helpers_engine import JERRY, MADONNA, MINDY, encode, first_photos, sample, side_by_side

TIMEOUT = 120
MADONNA_SELFIE = "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg"
NEW_PHOTO = "day-2/IMG_0004.jpg"


async def test_a_photo_copied_into_the_watched_gallery_is_found_without_reindex(api, make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    (gallery / "day-1").mkdir(parents=True)
    madonna = [p for p in first_photos("Madonna", 10) if p not in (MADONNA, MADONNA_SELFIE)]
    for number, photo in enumerate([madonna[0], madonna[1], MINDY], start=1):
        (gallery / "day-1" / f"IMG_000{number}.jpg").write_bytes(sample(photo).read_bytes())
    engine = make_engine(
        data_dir=tmp_path / "data", gallery_dir=gallery, gallery_layout="photos", watch_settle_s=0.4
    )  # fmt: skip
    try:
        async with running_service(api, engine, tmp_path, watch_gallery=True) as service:
            indexed = asyncio.Event()

            async def on_indexed() -> None:
                if NEW_PHOTO in await asyncio.to_thread(lambda: engine.searcher("facenet").store.files()):
                    indexed.set()

            service.watch.on_indexed.append(on_indexed)
            api.send_text(ADMIN, "/stats")
            await api.wait_for_text(ADMIN, "Watching the gallery", timeout=TIMEOUT)

            # the photographer's group photo lands in a new folder
            (gallery / "day-2").mkdir()
            (gallery / NEW_PHOTO).write_bytes(encode(side_by_side(sample(JERRY), sample(MADONNA)), quality=92))
            await asyncio.wait_for(indexed.wait(), timeout=TIMEOUT)

            selfie = sample(MADONNA_SELFIE).read_bytes()
            want = await asyncio.to_thread(lambda: engine.search_bytes(selfie).faces[0].photos)
            since = len(api.calls)
            api.send_photo(USER, selfie)
            summary = await api.wait_for_text(USER, "appears in", since=since, timeout=TIMEOUT)
            assert f"appears in {len(want)} photos" in summary.text, summary.text
            sent = [text for call in albums(api, USER, since) for text in captions(call)]
            assert any(NEW_PHOTO in text for text in sent), sent

            since = len(api.calls)
            api.send_text(ADMIN, "/stats")
            stats = await api.wait_for_text(ADMIN, "Watching the gallery", since=since, timeout=TIMEOUT)
            line = next(line for line in stats.text.splitlines() if line.startswith("Watching the gallery"))
            assert "last run" in line and "1 added" in line, line
    finally:
        engine.close()
