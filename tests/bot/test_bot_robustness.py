"""The bot under awkward input and a flaky network, end to end through the fake Bot API server (real HTTP, real engine):
edited messages and channel posts ignored, odd /k digits, a missing gallery file, a full queue, albums, flood waits and
network errors retried, file_id reuse, the webhook secret, /metrics and /healthz, no server paths in answers, history
retention, answer caps, a failing history write, and "More matches" under the one-search-per-user rule."""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import timedelta

import aiohttp
import pytest

from bot.app import ALLOWED_UPDATES, build_application, webhook_secret
from bot.settings import Settings
from support.bot_helpers import (
    ADMIN,
    USER,
    albums,
    bot_settings,
    captions,
    last_call,
    person_photo,
    running_service,
    small_gallery,
)
from support.fake_bot_api import TOKEN, FakeBotAPI
from support.helpers_engine import CLEAR_FACES, encode, gradient_image, sample, side_by_side

TIMEOUT = 60


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory, make_engine):
    """An Engine over a 20-photo copy of the sample gallery, indexed once (tests may move files and restore them)."""
    gallery = small_gallery(tmp_path_factory.mktemp("small-gallery") / "gallery")
    engine = make_engine(data_dir=tmp_path_factory.mktemp("small-data"), gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


async def answered(api: FakeBotAPI, user: int, since: int, timeout: float = TIMEOUT):
    return await api.wait_for(
        lambda calls: [c for c in calls[since:] if c.chat_id == user and ("likely" in c.text or "no face" in c.text)],
        timeout=timeout,
    )


async def test_edited_messages_and_channel_posts_are_ignored(api, small_engine, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    async with running_service(api, small_engine, tmp_path):
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


async def test_k_with_a_superscript_digit(api, small_engine, tmp_path):
    async with running_service(api, small_engine, tmp_path):
        for value in ("²", "٣", "1²"):
            since = len(api.calls)
            api.send_text(USER, f"/k {value}")
            await api.wait_for_text(USER, "whole number from 1 to 50", since=since)
        assert not any("went wrong" in c.text for c in api.calls)


async def test_missing_gallery_file_answers_with_the_rest(api, small_engine, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    query = person_photo("Madonna")
    top = small_engine.search_bytes(query, k=5).faces[0].matches[0]
    moved = tmp_path / "moved.jpg"
    shutil.move(top.path, moved)
    try:
        async with running_service(api, small_engine, tmp_path) as service:
            since = len(api.calls)
            api.send_photo(USER, query)
            summary = await api.wait_for_text(USER, "most likely", since=since, timeout=TIMEOUT)
            assert "Madonna" in summary.text
            sent = albums(api, USER, since)
            assert [len(captions(c)) for c in sent] == [4]  # the other four matches
            assert all("#1 " not in caption for caption in captions(sent[0]))
            assert any(top.path in r.getMessage() for r in caplog.records)  # logged for the operator...
            assert not any(str(small_engine.settings.gallery_dir) in c.text for c in api.calls)  # ...not shown to users
            history = await asyncio.to_thread(service.store.history, USER, USER)
            assert len(history) == 1  # the query is recorded
            assert service.metrics.value("facesearch_errors_total", {"kind": "missing_gallery_file"}) >= 1
    finally:
        shutil.move(moved, top.path)


async def test_full_queue_answers_busy_without_downloading(api, small_engine, tmp_path):
    async with running_service(api, small_engine, tmp_path, max_queue=1, workers=1):
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


async def test_album_from_a_user_gets_one_answer(api, small_engine, tmp_path):
    pair = encode(side_by_side(sample(CLEAR_FACES["Madonna"]), sample(CLEAR_FACES["Elton John"])))
    photos = [person_photo("Madonna"), person_photo("Elton John"), encode(gradient_image(300, 200)), pair]
    async with running_service(api, small_engine, tmp_path, default_k=2):
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


async def test_flood_waits_and_network_errors_are_retried(api, small_engine, tmp_path, caplog):
    async with running_service(api, small_engine, tmp_path):
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


async def test_file_ids_are_reused_and_refreshed(api, small_engine, tmp_path):
    async with running_service(api, small_engine, tmp_path) as service:
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


async def test_webhook_requires_the_secret(api, small_engine, tmp_path, unused_tcp_port):
    settings = bot_settings(api, small_engine, tmp_path, webhook_url="https://example.org/hook")
    secret = webhook_secret(settings)
    assert len(secret) >= 32 and secret == webhook_secret(settings)  # derived from the token when unset
    given = Settings(**{**settings.model_dump(), "bot_token": TOKEN, "webhook_secret": "s3cr3t-value"})
    assert webhook_secret(given) == "s3cr3t-value"
    assert TOKEN not in repr(given) and "s3cr3t-value" not in repr(given) and TOKEN not in str(given.model_dump())
    application = build_application(settings, engine=small_engine)
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


async def test_metrics_and_healthz_over_http(api, small_engine, tmp_path):
    async with running_service(api, small_engine, tmp_path, metrics_port=0) as service:
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
        assert f'facesearch_index_size{{model="facenet"}} {small_engine.index_info("facenet").count}.0' in text
        assert "facesearch_queue_length 0.0" in text
        assert 'facesearch_errors_total{kind="BadImageError"} 1.0' in text
        assert health["ready"] is True and health["queue"] == 0 and health["database"] == "ok"
        assert service.metrics.host == "127.0.0.1"  # METRICS_LISTEN's default: not every interface
        api.send_text(ADMIN, "/stats")
        stats = await api.wait_for_text(ADMIN, "photos searched")
        assert "1 photos searched, 1 faces found" in stats.text and "BadImageError 1" in stats.text


async def test_model_answer_shows_no_server_paths(api, small_engine, tmp_path):
    async with running_service(api, small_engine, tmp_path) as service:
        api.send_text(USER, "/model")
        shown = await api.wait_for_text(USER, "Current backend")
        assert "python -m engine models fetch vgg16" in shown.text
        for folder in (
            service.settings.models_dir,
            service.settings.data_dir,
            small_engine.settings.resolved_gallery(),
        ):
            assert str(folder) not in shown.text and str(folder.resolve()) not in shown.text
        assert last_call(api, USER, "Current backend") is shown


async def test_history_retention_purges_old_queries_at_start(api, small_engine, tmp_path):
    import sqlite3

    from bot.db import HistoryStore, upgrade

    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    store = HistoryStore(url)
    store.add_query(chat_id=USER, user_id=USER, model="facenet", k=5, faces=1, latency_ms=9.0, matches=[])
    store.close()
    with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:
        connection.execute("update queries set created_at = '2020-01-01 00:00:00'")
    async with running_service(api, small_engine, tmp_path, history_retention_days=30):
        since = len(api.calls)
        api.send_text(USER, "/history")
        await api.wait_for_text(USER, "No queries yet", since=since)


async def test_an_album_of_group_photos_is_capped(api, small_engine, tmp_path):
    """Three two-face photos at k=5 would send 30 gallery photos; MAX_ANSWER_PHOTOS caps them, the summary says so."""
    pair = encode(side_by_side(sample(CLEAR_FACES["Madonna"]), sample(CLEAR_FACES["Elton John"])))
    async with running_service(api, small_engine, tmp_path, default_k=5, max_answer_photos=12):
        since = len(api.calls)
        api.send_album(USER, [pair, pair, pair])
        summary = await api.wait_for_text(USER, "not shown", since=since, timeout=TIMEOUT)
        sent = sum(len(captions(c)) for c in albums(api, USER, since))
        assert 10 <= sent <= 12, sent
        assert "The matches of 3 more faces are not shown" in summary.text  # 5 + 5 + 2 photos sent, 3 faces left
        assert summary.text.count("most likely") == 6  # every face is still named


async def test_a_failure_recording_history_keeps_the_summary_and_its_buttons(api, small_engine, tmp_path, caplog):
    import sqlite3

    async with running_service(api, small_engine, tmp_path, default_k=3) as service:
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


async def test_more_matches_follows_the_one_search_per_user_rule_and_runs_once(api, small_engine, tmp_path):
    async with running_service(api, small_engine, tmp_path, default_k=2) as service:
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
