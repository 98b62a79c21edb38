"""Regression tests of the bot bugs of issue 8, end to end through the fake Bot API server (real HTTP, real engine)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import timedelta

import aiohttp
import pytest

from bot.app import ALLOWED_UPDATES, build_application, webhook_secret
from bot.settings import Settings
from bot_helpers import ADMIN, USER, albums, bot_settings, captions, last_call, person_photo, running_service
from fake_bot_api import TOKEN, FakeBotAPI
from helpers_engine import CLEAR_FACES, copy_photos, encode, first_photos, gradient_image, sample, side_by_side

TIMEOUT = 60
PEOPLE = ["Ben_Afflek", "Elton_John", "Jerry_Seinfeld", "Madonna", "Mindy_Kaling"]


def small_gallery(root, per_person: int = 3):
    """The first photos of each sample person, plus each person's clear face (the searches' best match)."""
    relatives = [p for person in PEOPLE for p in first_photos(person, per_person)]
    relatives += [r for r in CLEAR_FACES.values() if r not in relatives]
    copy_photos(root, relatives)
    return root


@pytest.fixture(scope="module")
def issues_engine(tmp_path_factory, make_engine):
    """An Engine over a 20-photo copy of the sample gallery, indexed once (tests may move files and restore them)."""
    gallery = small_gallery(tmp_path_factory.mktemp("issues-gallery") / "gallery")
    engine = make_engine(data_dir=tmp_path_factory.mktemp("issues-data"), gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


async def answered(api: FakeBotAPI, user: int, since: int, timeout: float = TIMEOUT):
    return await api.wait_for(
        lambda calls: [c for c in calls[since:] if c.chat_id == user and ("likely" in c.text or "no face" in c.text)],
        timeout=timeout,
    )


async def test_edited_messages_and_channel_posts_are_ignored(api, issues_engine, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    async with running_service(api, issues_engine, tmp_path):
        assert api.allowed_updates == list(ALLOWED_UPDATES) == ["message", "callback_query"]
        assert any("ALLOWED_USER_IDS=*" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        channel = -1001234
        api.send_photo(USER, person_photo("Madonna"), kind="edited_message")  # served anyway (queued before the change)
        api.send_photo(channel, person_photo("Madonna"), chat_id=channel, kind="channel_post")
        api.push_message(
            channel,
            channel,
            kind="channel_post",
            text="/k 3",
            entities=[{"type": "bot_command", "offset": 0, "length": 2}],
        )
        since = len(api.calls)
        api.send_text(USER, "/k")  # processed after the three above
        await api.wait_for_text(USER, "Matches per face", since=since)
        await asyncio.sleep(0.5)
        assert not [c for c in api.calls if c.chat_id in (USER, channel) and c.method != "sendMessage"]
        assert [c.text for c in api.calls if c.chat_id in (USER, channel)] == [
            api.calls_to(USER, "sendMessage")[-1].text
        ]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_k_with_a_superscript_digit(api, issues_engine, tmp_path):
    async with running_service(api, issues_engine, tmp_path):
        for value in ("²", "٣", "1²"):
            since = len(api.calls)
            api.send_text(USER, f"/k {value}")
            await api.wait_for_text(USER, "whole number from 1 to 50", since=since)
        assert not any("went wrong" in c.text for c in api.calls)


async def test_missing_gallery_file_answers_with_the_rest(api, issues_engine, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    query = person_photo("Madonna")
    top = issues_engine.search_bytes(query, k=5).faces[0].matches[0]
    moved = tmp_path / "moved.jpg"
    shutil.move(top.path, moved)
    try:
        async with running_service(api, issues_engine, tmp_path) as service:
            since = len(api.calls)
            api.send_photo(USER, query)
            summary = await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
            assert "Madonna" in summary.text
            sent = albums(api, USER, since)
            assert [len(captions(c)) for c in sent] == [4]  # the other four matches
            assert all("#1 " not in caption for caption in captions(sent[0]))
            assert any(top.path in r.getMessage() for r in caplog.records)  # logged for the operator...
            assert not any(
                str(issues_engine.settings.gallery_dir) in c.text for c in api.calls
            )  # ...not shown to users
            history = await asyncio.to_thread(service.store.history, USER, USER)
            assert len(history) == 1  # the query is recorded
            assert service.metrics.value("facesearch_errors_total", {"kind": "missing_gallery_file"}) >= 1
    finally:
        shutil.move(moved, top.path)


async def test_full_queue_answers_busy_without_downloading(api, issues_engine, tmp_path):
    async with running_service(api, issues_engine, tmp_path, max_queue=1, workers=1):
        users = [USER + n for n in range(3)]
        update_ids = [api.send_photo(user, person_photo("Elton John")) for user in users]
        file_ids = {user: api.messages[u]["photo"][-1]["file_id"] for user, u in zip(users, update_ids)}
        await api.wait_for(
            lambda calls: (
                len([c for c in calls if c.chat_id in users and ("likely" in c.text or "busy" in c.text)]) == 3
            )
        )
        busy = [user for user in users if any("busy" in c.text for c in api.calls_to(user))]
        done = [user for user in users if any("most likely" in c.text for c in api.calls_to(user))]
        # One worker and one queue place: the third photo at the latest finds them taken; whether the second does
        # too depends on whether the worker has taken the first from the queue yet (the machine's speed).
        assert len(done) + len(busy) == 3 and 1 <= len(done) <= 2, [c.text for c in api.calls if c.chat_id in users]
        if len({api.served_at[u] for u in update_ids}) == 1:  # one getUpdates batch: admitted concurrently, and
            assert len(done) == 1  # each admission sees the places the others took (no race past the queue)
        downloaded = {c.params.get("file_id") for c in api.calls if c.method == "getFile"}
        assert {file_ids[user] for user in done} <= downloaded
        assert not downloaded & {file_ids[user] for user in busy}  # refused before the download
        since = len(api.calls)
        api.send_photo(busy[0], person_photo("Elton John"))  # once the queue has room, the next photo is served
        await api.wait_for_text(busy[0], "most likely Elton John", since=since, timeout=TIMEOUT)
        api.send_album(busy[0], [person_photo("Madonna"), person_photo("Ben Afflek")])  # larger than the queue
        await api.wait_for_text(busy[0], "Photo 2: most likely Ben Afflek", since=since, timeout=TIMEOUT)


async def test_album_from_a_user_gets_one_answer(api, issues_engine, tmp_path):
    pair = encode(side_by_side(sample(CLEAR_FACES["Madonna"]), sample(CLEAR_FACES["Elton John"])))
    photos = [person_photo("Madonna"), person_photo("Elton John"), encode(gradient_image(300, 200)), pair]
    async with running_service(api, issues_engine, tmp_path, default_k=2):
        since = len(api.calls)
        api.send_album(USER, photos)
        summary = await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
        await asyncio.sleep(0.5)
        lines = summary.text.splitlines()
        assert lines[0].startswith("Photo 1: most likely Madonna"), summary.text
        assert lines[1].startswith("Photo 2: most likely Elton John"), summary.text
        assert lines[2] == "Photo 3: no face found", summary.text
        assert lines[3].startswith("Photo 4: Face 1: most likely"), summary.text
        assert lines[4].startswith("Photo 4: Face 2: most likely"), summary.text
        texts = [c.text for c in api.calls_to(USER, "sendMessage", since=since)]
        assert texts == [summary.text], texts  # one answer: no "still working", no second summary
        sent = albums(api, USER, since)
        labels = ["Photo 1 · Face 1", "Photo 2 · Face 1", "Photo 4 · Face 1", "Photo 4 · Face 2"]
        assert [captions(c)[0].split(" · #")[0] for c in sent] == labels
        assert [len(captions(c)) for c in sent] == [2, 2, 2, 2]

        since = len(api.calls)
        api.press(USER, summary, "Show faces")
        boxes = await api.wait_for(lambda calls: [c for c in calls[since:] if c.method == "sendPhoto"], TIMEOUT)
        assert boxes[0].text == "Photo 4: I found 2 faces; their numbers match the captions."
        since = len(api.calls)
        api.press(USER, summary, "More matches")
        await api.wait_for_text(USER, "Matches 3–4", since=since, timeout=TIMEOUT)
        sent = albums(api, USER, since)
        assert [captions(c)[0].split(" · #")[0] for c in sent] == labels  # the next page of every face
        assert all(captions(c)[0].split(" · #")[1].startswith("3 ") for c in sent)


async def test_flood_waits_and_network_errors_are_retried(api, issues_engine, tmp_path, caplog):
    async with running_service(api, issues_engine, tmp_path):
        api.fail_next("sendMediaGroup", times=3, code=429, retry_after=1)  # a third 429 used to end the answer
        api.fail_next("sendMessage", times=1, code=502)
        since = len(api.calls)
        api.send_photo(USER, person_photo("Jerry Seinfeld"))
        summary = await api.wait_for_text(USER, "most likely Jerry Seinfeld", since=since, timeout=TIMEOUT)
        assert len([c for c in api.failed if c.method == "sendMediaGroup"]) == 3
        assert len([c for c in api.failed if c.method == "sendMessage"]) == 1
        assert [len(captions(c)) for c in albums(api, USER, since)] == [5]  # sent once, complete
        assert summary.params.get("reply_markup")  # the summary carries its buttons
        assert not any("went wrong" in c.text for c in api.calls)


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


async def test_file_ids_are_reused_and_refreshed(api, issues_engine, tmp_path):
    async with running_service(api, issues_engine, tmp_path) as service:
        since = len(api.calls)
        api.send_photo(USER, person_photo("Mindy Kaling"))
        await answered(api, USER, since)
        first = albums(api, USER, since)[0].media()
        assert all(item.get("data") for item in first)  # uploaded once
        since = len(api.calls)
        api.send_photo(USER, person_photo("Mindy Kaling"))
        await answered(api, USER, since)
        second = albums(api, USER, since)[0].media()
        assert not any(item.get("data") for item in second)  # sent again by file_id, no upload
        assert all(str(item["media"]).startswith("file-") for item in second)
        assert [i["caption"] for i in first] == [i["caption"] for i in second]
        del api.files[second[0]["media"]]  # Telegram forgot a file_id: the bot uploads again
        since = len(api.calls)
        api.send_photo(USER, person_photo("Mindy Kaling"))
        await answered(api, USER, since)
        third = albums(api, USER, since)
        assert third[-1].media()[0].get("data") and len(third) == 1
        assert service.file_ids.hits >= 5


async def test_webhook_requires_the_secret(api, issues_engine, tmp_path, unused_tcp_port):
    settings = bot_settings(api, issues_engine, tmp_path, webhook_url="https://example.org/hook")
    secret = webhook_secret(settings)
    assert len(secret) >= 32 and secret == webhook_secret(settings)  # derived from the token when unset
    given = Settings(**{**settings.model_dump(), "bot_token": TOKEN, "webhook_secret": "s3cr3t-value"})
    assert webhook_secret(given) == "s3cr3t-value"
    assert TOKEN not in repr(given) and "s3cr3t-value" not in repr(given) and TOKEN not in str(given.model_dump())
    application = build_application(settings, engine=issues_engine)
    async with application:
        await application.post_init(application)
        await application.updater.start_webhook(
            listen="127.0.0.1", port=unused_tcp_port, url_path="hook", webhook_url=settings.webhook_url,
            secret_token=secret, allowed_updates=ALLOWED_UPDATES,
        )  # fmt: skip
        await application.start()
        try:
            update = {"update_id": 1, "message": {"message_id": 5, "date": 0, "chat": {"id": ADMIN, "type": "private"},
                      "from": {"id": ADMIN, "is_bot": False, "first_name": "Eve"}, "text": "/help",
                      "entities": [{"type": "bot_command", "offset": 0, "length": 5}]}}  # fmt: skip
            url = f"http://127.0.0.1:{unused_tcp_port}/hook"
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json=update) as response:
                    assert response.status == 403  # a forged update without the secret
                async with http.post(
                    url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
                ) as response:
                    assert response.status == 403
                await asyncio.sleep(0.3)
                assert not api.calls_to(ADMIN)
                async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret}) as response:
                    assert response.status == 200
            await api.wait_for_text(ADMIN, "/model")
            webhook = [c for c in api.calls if c.method == "setWebhook"][-1]
            assert webhook.params["secret_token"] == secret
        finally:
            await application.updater.stop()
            await application.stop()
            await application.post_stop(application)
            await application.post_shutdown(application)


async def test_metrics_and_healthz_over_http(api, issues_engine, tmp_path):
    async with running_service(api, issues_engine, tmp_path, metrics_port=0) as service:
        since = len(api.calls)
        api.send_photo(USER, person_photo("Ben Afflek"))
        await answered(api, USER, since)
        api.send_document(USER, b"not an image at all", "x.jpg", "image/jpeg")
        await api.wait_for_text(USER, "can't use", since=since)
        base = f"http://127.0.0.1:{service.metrics.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/metrics") as response:
                assert response.status == 200
                text = await response.text()
            async with http.get(base + "/healthz") as response:
                assert response.status == 200
                health = await response.json()
        assert "facesearch_photos_searched_total 1.0" in text
        assert "facesearch_faces_found_total 1.0" in text
        assert 'facesearch_stage_seconds_count{stage="detect"} 1.0' in text
        assert 'facesearch_stage_seconds_bucket{le="+Inf",stage="total"} 1.0' in text
        assert f'facesearch_index_size{{model="facenet"}} {issues_engine.index_info("facenet").count}.0' in text
        assert "facesearch_queue_length 0.0" in text
        assert 'facesearch_errors_total{kind="BadImageError"} 1.0' in text
        assert health["ready"] is True and health["queue"] == 0 and health["database"] == "ok"
        assert service.metrics.host == "127.0.0.1"  # METRICS_LISTEN's default: not every interface
        api.send_text(ADMIN, "/stats")
        stats = await api.wait_for_text(ADMIN, "photos searched")
        assert "1 photos searched, 1 faces found" in stats.text and "BadImageError 1" in stats.text


async def test_model_answer_shows_no_server_paths(api, issues_engine, tmp_path):
    async with running_service(api, issues_engine, tmp_path) as service:
        api.send_text(USER, "/model")
        shown = await api.wait_for_text(USER, "Current backend")
        assert "python -m engine models fetch vgg16" in shown.text
        for folder in (
            service.settings.models_dir,
            service.settings.data_dir,
            issues_engine.settings.resolved_gallery(),
        ):
            assert str(folder) not in shown.text and str(folder.resolve()) not in shown.text
        assert last_call(api, USER, "Current backend") is shown


async def test_history_retention_purges_old_queries_at_start(api, issues_engine, tmp_path):
    import sqlite3

    from bot.db import Store, upgrade

    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    store = Store(url)
    store.add_query(chat_id=USER, user_id=USER, model="facenet", k=5, faces=1, latency_ms=9.0, matches=[])
    store.close()
    with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:
        connection.execute("update queries set created_at = '2020-01-01 00:00:00'")
    async with running_service(api, issues_engine, tmp_path, history_retention_days=30):
        since = len(api.calls)
        api.send_text(USER, "/history")
        await api.wait_for_text(USER, "No queries yet", since=since)


async def test_sigterm_during_the_start_up_build_stops_at_the_next_chunk(api, tmp_path, sample_gallery):
    """`python -m bot` as a container runs it: SIGTERM while the missing index is built ends the process
    at the next chunk, without writing a half index, and exits cleanly."""
    import signal
    import sys

    from PIL import Image

    from helpers_engine import MODELS_DIR, fresh_env

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


# ---- issue 16 ----------------------------------------------------------------------------------


async def test_an_album_of_group_photos_is_capped(api, issues_engine, tmp_path):
    """Three two-face photos at k=5 would send 30 gallery photos; MAX_ANSWER_PHOTOS caps them, the summary says so."""
    pair = encode(side_by_side(sample(CLEAR_FACES["Madonna"]), sample(CLEAR_FACES["Elton John"])))
    async with running_service(api, issues_engine, tmp_path, default_k=5, max_answer_photos=12):
        since = len(api.calls)
        api.send_album(USER, [pair, pair, pair])
        summary = await api.wait_for_text(USER, "not shown", since=since, timeout=TIMEOUT)
        sent = sum(len(captions(c)) for c in albums(api, USER, since))
        assert 10 <= sent <= 12, sent
        assert "The matches of 3 more faces are not shown" in summary.text  # 5 + 5 + 2 photos sent, 3 faces left
        assert summary.text.count("most likely") == 6  # every face is still named


async def test_a_failure_recording_history_keeps_the_summary_and_its_buttons(api, issues_engine, tmp_path, caplog):
    import sqlite3

    async with running_service(api, issues_engine, tmp_path, default_k=3) as service:
        with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:  # the history's table breaks under the bot
            connection.execute("DROP TABLE query_faces")
        since = len(api.calls)
        api.send_photo(USER, person_photo("Madonna"))
        summary = await api.wait_for_text(USER, "most likely Madonna", since=since, timeout=TIMEOUT)
        assert "More matches" in str(summary.params.get("reply_markup"))
        assert not any("went wrong" in c.text for c in api.calls[since:])
        assert service.metrics.value("facesearch_errors_total", {"kind": "history"}) == 1
        api.press(USER, summary, "More matches")
        await api.wait_for_text(USER, "Matches 4–6", since=since, timeout=TIMEOUT)


async def test_more_matches_follows_the_one_search_per_user_rule_and_runs_once(api, issues_engine, tmp_path):
    async with running_service(api, issues_engine, tmp_path, default_k=2) as service:
        since = len(api.calls)
        api.send_photo(USER, person_photo("Madonna"))
        summary = await api.wait_for_text(USER, "most likely Madonna", since=since, timeout=TIMEOUT)
        assert await service.db(service.state.lease, f"user:{USER}", timedelta(minutes=1))  # a search of theirs runs
        since = len(api.calls)
        api.press(USER, summary, "More matches")
        refused = await api.wait_for(lambda calls: [c for c in calls[since:] if c.method == "answerCallbackQuery"])
        assert "still working" in refused[0].params.get("text", "")
        assert not api.calls_to(USER, "sendMediaGroup", "sendPhoto", since=since)
        await service.db(service.state.release, f"user:{USER}")
        since = len(api.calls)
        api.press(USER, summary, "More matches")
        api.press(USER, summary, "More matches")  # a double press
        await api.wait_for_text(USER, "Matches 3–4", since=since, timeout=TIMEOUT)
        await api.wait_for(lambda calls: len([c for c in calls[since:] if c.method == "answerCallbackQuery"]) == 2)
        assert len([c for c in api.calls_to(USER, "sendMessage", since=since) if "Matches 3–4" in c.text]) == 1
        assert len(albums(api, USER, since)) == 1


async def test_a_gallery_edit_waiting_for_a_busy_index_says_so(api, make_engine, tmp_path):
    """A long `python -m engine index` holds the index's writer lock: /add says it waits, then answers."""
    from filelock import FileLock

    gallery = small_gallery(tmp_path / "gallery", per_person=1)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    lock = FileLock(str(tmp_path / "data" / "index" / "facenet" / "write.lock"), thread_local=False)
    async with running_service(api, engine, tmp_path, index_lock_wait_s=120):
        since = len(api.calls)
        with lock:
            api.send_photo(ADMIN, person_photo("Madonna"), caption="/add Ada Lovelace")
            await api.wait_for_text(ADMIN, "index is busy", since=since, timeout=TIMEOUT)
            assert not [c for c in api.calls[since:] if "Nothing added" in c.text or "Added" in c.text]
        added = await api.wait_for_text(ADMIN, "Added 1 photo of Ada Lovelace", since=since, timeout=TIMEOUT)
        assert "searchable now" in added.text


async def test_removing_the_last_person_removes_them_and_says_so(api, make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(
        gallery, [CLEAR_FACES["Madonna"], *[p for p in first_photos("Madonna", 2) if p != CLEAR_FACES["Madonna"]]]
    )
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    async with running_service(api, engine, tmp_path, default_k=1) as service:
        since = len(api.calls)
        api.send_text(ADMIN, "/remove Madonna")
        question = await api.wait_for_text(ADMIN, "Remove Madonna", since=since, timeout=TIMEOUT)
        api.press(ADMIN, question, "Yes, remove")
        done = await api.wait_for_text(ADMIN, "Removed Madonna", since=since, timeout=TIMEOUT)
        assert "searches no longer find them" in done.text and "now empty" in done.text
        assert not (gallery / "Madonna").exists()
        assert service.engine.index_info("facenet").count == 0
        since = len(api.calls)
        api.send_photo(USER, person_photo("Madonna"))
        answer = await api.wait_for(lambda calls: [c for c in calls[since:] if c.chat_id == USER and c.text])
        assert "went wrong" not in answer[0].text
        assert not any("Madonna" in c.text for c in api.calls_to(USER, since=since)), answer[0].text
