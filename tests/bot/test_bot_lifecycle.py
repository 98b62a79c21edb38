"""The bot's start, stop and reindex, end to end through the fake Bot API server (real HTTP, real engine): a bot started
without an index answers "being indexed" while it builds; a stop ends /reindex at the next chunk and keeps the old
index; /reindex waits, and says so, while another run holds the index; SIGTERM to `python -m bot` during its start-up
build stops it at the next chunk without a half index."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp

from support.bot_helpers import ADMIN, USER, person_photo, running_service, small_gallery
from support.fake_bot_api import TOKEN
from support.helpers_engine import encode, gradient_image

TIMEOUT = 60


async def test_start_without_an_index_answers_while_indexing(api, make_engine, tmp_path):
    gallery = small_gallery(tmp_path / "gallery", per_person=6)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, detect_batch_size=4)
    assert engine.index_info("facenet") is None
    async with running_service(api, engine, tmp_path, wait_ready=False, metrics_port=0) as service:
        since = len(api.calls)
        api.send_photo(USER, person_photo("Madonna"))
        reply = await api.wait_for_text(USER, "being indexed", since=since, timeout=TIMEOUT)
        assert "% done" in reply.text
        url = f"http://127.0.0.1:{service.metrics.port}/healthz"  # not healthy while the model loads or indexes
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 503
            health = await response.json()
        assert "facenet" in health["preparing"] and health["ready"] is False and health["database"] == "ok"
        await asyncio.wait_for(service.ready.wait(), timeout=300)
        assert engine.index_info("facenet").count >= 25
        since = len(api.calls)
        api.send_photo(USER, person_photo("Madonna"))
        await api.wait_for_text(USER, "most likely Madonna", since=since, timeout=TIMEOUT)


async def test_stop_during_reindex_keeps_the_old_index(api, make_engine, tmp_path):
    """A stop ends /reindex at the next chunk: the old index stays, plus what was embedded (committed), and the
    next run does only the rest."""
    gallery = small_gallery(tmp_path / "gallery", per_person=1)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, detect_batch_size=2, index_workers=0)
    engine.load("facenet")
    engine.build_index("facenet")
    before = engine.index_info("facenet")
    extra = gallery / "Many_Copies"
    extra.mkdir()
    for number in range(40):  # real faces, each a new file to embed
        (extra / f"copy{number:02d}.jpg").write_bytes(
            encode(gradient_image(300 + number, 200)) if number % 2 else person_photo("Madonna")
        )
    async with running_service(api, engine, tmp_path) as service:
        api.send_text(ADMIN, "/reindex facenet")
        await api.wait_for_text(ADMIN, "/40 images", timeout=TIMEOUT)
        job = service.reindex_job
    stopped = await api.wait_for_text(ADMIN, "stopped", timeout=5)
    assert "The index stays as it was, plus the" in stopped.text
    assert job.progress.done < job.progress.total  # ended at a chunk, not after the whole build
    reloaded = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, index_workers=0)
    store = reloaded.searcher("facenet").store
    committed = [path for path in store.files() if path.startswith("Many_Copies/")]
    assert len(committed) < 40
    assert set(store.files()) - set(committed) == {p for p in store.files() if not p.startswith("Many_Copies/")}
    assert reloaded.index_info("facenet").count == before.count + sum(store.files()[p].faces for p in committed)
    rest = reloaded.build_index("facenet")
    assert (rest.added, rest.embedded_images) == (40 - len(committed), 40 - len(committed))
    assert reloaded.index_info("facenet").count == before.count + 20  # the 20 Madonna copies; gradients have no face


async def test_reindex_while_another_run_holds_the_index_waits_and_says_so(api, make_engine, tmp_path):
    """/reindex while another replica (or `python -m engine index`) writes the index: the status message says
    it waits for that run, and the rebuild goes on once the lock is free."""
    from engine.stores.local import LocalStore

    gallery = small_gallery(tmp_path / "gallery", per_person=1)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, index_workers=0)
    engine.load("facenet")
    engine.build_index("facenet")
    holder = LocalStore(tmp_path / "data" / "index" / "facenet")  # its own lock file handle, as another process's
    async with running_service(api, engine, tmp_path, progress_interval_s=0.1):
        with holder.writer(timeout=0):
            since = len(api.calls)
            api.send_text(ADMIN, "/reindex facenet")
            waiting = await api.wait_for_text(ADMIN, "waiting for it to finish", since=since, timeout=TIMEOUT)
            assert waiting.text == (
                "Reindexing facenet: another index run is writing the facenet index; waiting for it to finish…"
            )
            api.send_text(ADMIN, "/reindex")
            await api.wait_for_text(ADMIN, "A reindex is already running", since=since, timeout=TIMEOUT)
            assert not [c for c in api.calls[since:] if "Reindex done" in c.text]
        done = await api.wait_for_text(ADMIN, "Reindex done", since=since, timeout=TIMEOUT)
        assert "facenet: 0 added, 0 updated, 0 removed" in done.text, done.text
    holder.close()


async def test_sigterm_during_the_start_up_build_stops_at_the_next_chunk(api, tmp_path, sample_gallery):
    """`python -m bot` as a container runs it: SIGTERM while the missing index is built ends the process
    at the next chunk, without writing a half index, and exits cleanly."""
    import signal
    import sys

    from PIL import Image

    from support.helpers_engine import MODELS_DIR, fresh_env

    gallery = tmp_path / "gallery"
    shutil.copytree(sample_gallery, gallery)
    for photo in sorted(gallery.glob("*/*.jpg")):  # 3x the photos, so that the build outlasts a few polls anywhere
        with Image.open(photo) as image:
            for copy, quality in ((1, 90), (2, 80)):  # re-encoded: other bytes, embedded again
                image.convert("RGB").save(photo.with_name(f"copy{copy}-{photo.name}"), quality=quality)
    env = fresh_env(
        BOT_TOKEN=TOKEN, BOT_API_URL=api.url, DATA_DIR=str(tmp_path / "data"), GALLERY_DIR=str(gallery),
        MODELS_DIR=str(MODELS_DIR), DETECT_BATCH_SIZE="2", DATABASE_URL=f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        ALLOWED_USER_IDS="*",
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        percent = 0
        while percent == 0:  # ask until the build has done at least one chunk
            since = len(api.calls)
            api.send_photo(USER, person_photo("Madonna"))
            reply = await api.wait_for_text(USER, "being indexed", since=since, timeout=180)
            percent = int(reply.text.split("indexed, ")[1].split("%")[0])
            await asyncio.sleep(0.3)
        assert percent < 100
        process.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(process.communicate(), timeout=120))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output[-3000:]
    assert "stopped building the facenet index" in output, output[-3000:]
    assert not (tmp_path / "data" / "index" / "facenet" / "CURRENT").exists()  # no half index made live
    assert TOKEN not in output  # the token is never logged
