"""Users outside ALLOWED_USER_IDS, end to end through the fake Bot API (real HTTP, real engine): each is told at most
once per REFUSAL_INTERVAL_S however many updates they send, a refused button press is answered as a callback (no
chat message), the refusal is logged once per user and period and counted on every update; plus the bounded,
expiring memory of who was told (bot.refusals.RefusalNotices)."""

from __future__ import annotations

import logging

import pytest

from bot.settings import Settings
from support.bot_helpers import ADMIN, USER, person_photo, running_service
from support.fake_bot_api import FakeBotAPI
from support.helpers_engine import copy_photos, first_photos, fresh_env

STRANGER = 4242
OTHER_STRANGER = 4343
GROUP = -5005  # a group where the admin, an allowed user and a stranger meet
REFUSED = ("facesearch_errors_total", {"kind": "not_allowed"})


@pytest.fixture(scope="module")
def access_engine(tmp_path_factory, make_engine):
    """An Engine over one photo of each of two people, indexed once (the tests never search: access only)."""
    gallery = tmp_path_factory.mktemp("access-gallery") / "gallery"
    copy_photos(gallery, first_photos("Madonna", 1) + first_photos("Elton_John", 1))
    engine = make_engine(data_dir=tmp_path_factory.mktemp("access-data"), gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


def messages_to(api: FakeBotAPI, chat_id: int) -> list[str]:
    return [c.text for c in api.calls_to(chat_id, "sendMessage")]


async def test_a_stranger_is_told_once_per_period_and_a_refused_press_is_answered(api, access_engine, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    async with running_service(api, access_engine, tmp_path, allowed_user_ids={USER}) as service:
        refused = lambda: service.metrics.value(*REFUSED)  # noqa: E731
        api.send_photo(STRANGER, person_photo("Madonna"))
        api.send_text(STRANGER, "/k 3")
        api.send_text(STRANGER, "hello?")
        api.send_sticker(STRANGER)
        api.send_text(STRANGER, "/help")
        # every update decided (each is counted), or already more than one message: then the check below fails
        await api.wait_for(lambda calls: refused() >= 5 or len(messages_to(api, STRANGER)) > 1)
        await api.wait_for(lambda calls: messages_to(api, STRANGER))
        assert len(messages_to(api, STRANGER)) == 1, messages_to(api, STRANGER)
        assert "private" in messages_to(api, STRANGER)[0]
        assert not api.calls_to(STRANGER, "sendPhoto", "sendMediaGroup", "getFile")

        # another stranger gets their own single notice
        api.send_text(OTHER_STRANGER, "/start")
        api.send_text(OTHER_STRANGER, "/start")
        await api.wait_for(lambda calls: refused() >= 7 or len(messages_to(api, OTHER_STRANGER)) > 1)
        assert len(messages_to(api, OTHER_STRANGER)) == 1

        # a stranger presses a button under an admin's /remove confirmation in a group: answered as a callback
        api.send_text(ADMIN, "/remove Madonna", chat_id=GROUP)
        confirmation = await api.wait_for_text(GROUP, "Remove Madonna")
        before = len(messages_to(api, GROUP))
        for _ in range(2):
            api.press(STRANGER, confirmation, "Cancel")
        pressed = lambda calls: [c for c in calls if c.method == "answerCallbackQuery"]  # noqa: E731
        await api.wait_for(lambda calls: len(messages_to(api, GROUP)) > before or len(pressed(calls)) >= 2)
        answers = pressed(api.calls)
        assert len(answers) == 2 and all("private" in str(c.params.get("text")) for c in answers)
        assert len(messages_to(api, GROUP)) == before  # no chat message for a refused press
        api.press(ADMIN, confirmation, "Cancel")  # the buttons still work for the admin
        await api.wait_for(lambda calls: [c for c in calls if c.method == "editMessageText" and c.chat_id == GROUP])

        # allowed users are not throttled by any of this
        for _ in range(2):
            since = len(api.calls)
            api.send_text(USER, "/k")
            await api.wait_for_text(USER, "Matches per face", since=since)
        assert refused() == 9

    refusals = [r for r in caplog.records if "not in ALLOWED_USER_IDS" in r.getMessage()]
    assert sorted(str(STRANGER) in r.getMessage() for r in refusals) == [False, True]  # once per user and period
    assert [r.levelno for r in refusals] == [logging.WARNING] * 2


def test_refusal_notices_expire_after_the_interval_and_stay_bounded():
    from bot.refusals import RefusalNotices

    now = [1000.0]
    notices = RefusalNotices(interval_s=60, max_users=3, timer=lambda: now[0])
    assert notices.first(1) and not notices.first(1) and not notices.first(1)
    now[0] += 59
    assert not notices.first(1)
    now[0] += 2  # the period has passed: told again, once
    assert notices.first(1) and not notices.first(1)
    for user in range(100, 200):
        assert notices.first(user)
    assert len(notices) <= 3  # bounded: the oldest are forgotten first
    every_time = RefusalNotices(interval_s=0)
    assert every_time.first(1) and every_time.first(1)


def test_refusal_interval_setting(monkeypatch, tmp_path):
    for name, value in fresh_env(REFUSAL_INTERVAL_S="120").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert Settings().refusal_interval_s == 120
    assert Settings(refusal_interval_s=0).refusal_interval_s == 0
    assert Settings.model_fields["refusal_interval_s"].default == 3600
    with pytest.raises(ValueError):
        Settings(refusal_interval_s=-1)
