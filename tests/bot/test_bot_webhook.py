"""The webhook secret without WEBHOOK_SECRET: derived from BOT_TOKEN, so replicas behind one URL agree on it. Two bot
applications run webhooks on their own ports (real HTTP, the fake Bot API records their setWebhook); Telegram's calls,
made with the secret the last setWebhook registered, are accepted by either replica."""

from __future__ import annotations

import re

import aiohttp
import pytest

from bot.app import ALLOWED_UPDATES, build_application, webhook_secret
from support.bot_helpers import ADMIN, bot_settings
from support.fake_bot_api import TOKEN
from support.helpers_engine import copy_photos, first_photos

URL = "https://example.org/hook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram's secret_token accepts


@pytest.fixture(scope="module")
def webhook_data(tmp_path_factory, make_engine):
    """A two-photo gallery indexed once: the data directory both replicas read."""
    gallery = tmp_path_factory.mktemp("webhook-gallery") / "gallery"
    copy_photos(gallery, first_photos("Madonna", 1) + first_photos("Elton_John", 1))
    data = tmp_path_factory.mktemp("webhook-data")
    engine = make_engine(data_dir=data, gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    engine.close()
    return {"data_dir": data, "gallery_dir": gallery}


def test_the_secret_is_derived_from_the_token_when_unset(api, make_engine, webhook_data, tmp_path):
    engine = make_engine(**webhook_data)
    replica = bot_settings(api, engine, tmp_path, webhook_url=URL)
    other_replica = bot_settings(api, engine, tmp_path / "elsewhere", webhook_url=URL)
    secret = webhook_secret(replica)
    assert secret == webhook_secret(other_replica) == webhook_secret(replica)  # every replica, every start
    assert ALLOWED_SECRET.fullmatch(secret) and len(secret) >= 32
    assert TOKEN not in secret and TOKEN.split(":")[1] not in secret
    other_bot = bot_settings(api, engine, tmp_path, webhook_url=URL, bot_token="654321:ANOTHER-bot-token")
    assert webhook_secret(other_bot) != secret
    empty = bot_settings(api, engine, tmp_path, webhook_url=URL, webhook_secret="")  # an empty secret file
    assert webhook_secret(empty) == secret
    given = bot_settings(api, engine, tmp_path, webhook_url=URL, webhook_secret="s3cr3t-value")
    assert webhook_secret(given) == "s3cr3t-value"  # an explicit WEBHOOK_SECRET wins


async def test_a_replica_accepts_updates_sent_with_the_secret_another_registered(
    api, make_engine, webhook_data, tmp_path, unused_tcp_port_factory
):
    replicas = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        engine = make_engine(**webhook_data)  # each replica its own Engine over the shared data directory
        settings = bot_settings(api, engine, tmp_path / name, webhook_url=URL)
        application = build_application(settings, engine=engine)
        replicas.append((application, settings, unused_tcp_port_factory()))
    started = []
    try:
        for application, settings, port in replicas:  # what bot.app.run does, in this event loop
            await application.initialize()
            started.append(application)
            await application.post_init(application)
            await application.updater.start_webhook(
                listen="127.0.0.1", port=port, url_path="hook", webhook_url=settings.webhook_url,
                secret_token=webhook_secret(settings), allowed_updates=ALLOWED_UPDATES,
            )  # fmt: skip
            await application.start()
        registered = [c.params["secret_token"] for c in api.calls if c.method == "setWebhook"]
        assert len(registered) == 2
        async with aiohttp.ClientSession() as http:
            for number, (_, _, port) in enumerate(replicas, start=1):
                for secret in registered:  # Telegram keeps whichever replica registered last
                    update = {"update_id": 100 + len(api.calls), "message": {
                        "message_id": number, "date": 0, "chat": {"id": ADMIN, "type": "private"},
                        "from": {"id": ADMIN, "is_bot": False, "first_name": "Eve"}, "text": "/help",
                        "entities": [{"type": "bot_command", "offset": 0, "length": 5}]}}  # fmt: skip
                    since = len(api.calls)
                    url = f"http://127.0.0.1:{port}/hook"
                    async with http.post(url, json=update, headers={SECRET_HEADER: secret}) as response:
                        assert response.status == 200, f"replica {number} refused the registered secret"
                    await api.wait_for_text(ADMIN, "/model", since=since)
                async with http.post(url, json=update, headers={SECRET_HEADER: "forged"}) as response:
                    assert response.status == 403
    finally:
        for application in reversed(started):
            if application.updater.running:
                await application.updater.stop()
            if application.running:
                await application.stop()
            await application.post_stop(application)
            await application.post_shutdown(application)
            await application.shutdown()
