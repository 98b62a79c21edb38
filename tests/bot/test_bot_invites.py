"""Invite links and consent (issue 22), end to end through the fake Bot API (real HTTP, real engine, real SQLite file):
an admin's /invite answers with a t.me deep link and its QR code (decoded back to the link); in invite mode a stranger
is told to ask the organiser, `/start CODE` admits within one message, and a used-up, revoked, malformed or 5,000-character
code admits nobody; /invite's bad arguments get clear answers; /invites shows code prefixes only; a user's first
photo waits for their "I agree" (recorded with its time) and is searched then; /forget asks again; /stats shows
admissions, searches and refusals per day, never who."""

from __future__ import annotations

import io
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from bot.settings import Settings
from support.bot_helpers import ADMIN, person_photo, running_service
from support.fake_bot_api import BOT_USER, Call, FakeBotAPI
from support.helpers_engine import CLEAR_FACES, copy_photos, first_photos

LINK = f"https://t.me/{BOT_USER['username']}?start="
GUEST, LATE_GUEST, STRANGER, GUESSER = 3001, 3002, 3003, 3004


@pytest.fixture(scope="module")
def invite_engine(tmp_path_factory, make_engine):
    """An Engine over a few photos of two people (Madonna's clear face among them), indexed once."""
    gallery = tmp_path_factory.mktemp("invite-gallery") / "gallery"
    copy_photos(gallery, first_photos("Madonna", 2) + first_photos("Elton_John", 2) + [CLEAR_FACES["Madonna"]])
    engine = make_engine(data_dir=tmp_path_factory.mktemp("invite-data"), gallery_dir=gallery)
    engine.load("facenet")
    engine.build_index("facenet")
    return engine


def database(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "bot.sqlite3")


def admitted(tmp_path: Path, user_id: int) -> bool:
    with database(tmp_path) as db:
        return db.execute("SELECT 1 FROM admissions WHERE user_id = ?", (user_id,)).fetchone() is not None


def texts(api: FakeBotAPI, chat_id: int, since: int = 0) -> list[str]:
    return [c.text for c in api.calls_to(chat_id, "sendMessage", since=since)]


async def new_invite(api: FakeBotAPI, args: str = "") -> str:
    """An admin's /invite: its code (from the photo's caption)."""
    since = len(api.calls)
    api.send_text(ADMIN, f"/invite {args}".strip())
    call: Call = await api.wait_for(lambda calls: next(iter(api.calls_to(ADMIN, "sendPhoto", since=since)), None))
    link = next(word for word in call.text.split() if word.startswith(LINK))
    return link.removeprefix(LINK)


async def answer(api: FakeBotAPI, user: int, text: str) -> str:
    """The bot's one text answer to `text` from `user`."""
    since = len(api.calls)
    api.send_text(user, text)
    calls = await api.wait_for(lambda calls: api.calls_to(user, "sendMessage", since=since))
    return str(calls[0].text)


async def test_invite_links_admit_guests_and_nobody_else(api, invite_engine, tmp_path):
    async with running_service(api, invite_engine, tmp_path, allowed_user_ids="invite", refusal_interval_s=0) as svc:
        assert svc.settings.invite_mode and svc.settings.consent_required()

        # the admin's /invite: the deep link, and the same link as a QR code PNG
        since = len(api.calls)
        api.send_text(ADMIN, "/invite")
        sent = await api.wait_for(lambda calls: api.calls_to(ADMIN, "sendPhoto", since=since))
        caption = sent[0].text
        assert LINK in caption and "300 users" in caption
        link = next(word for word in caption.split() if word.startswith(LINK))
        code = link.removeprefix(LINK)
        assert len(code) >= 22 and all(c.isalnum() or c in "_-" for c in code)  # 128 bits, a valid deep-link payload
        png = sent[0].uploaded("photo")
        assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            assert [found.text for found in zxingcpp.read_barcodes(image)] == [link]

        # a stranger: "ask the organiser", nothing else, not admitted
        assert "ask the organiser for the invite link" in await answer(api, STRANGER, "hello")
        assert not admitted(tmp_path, STRANGER)

        # the link admits within one message, and the guest is in from the next one
        assert "Welcome" in await answer(api, GUEST, f"/start {code}")
        assert "Matches per face" in await answer(api, GUEST, "/k")
        assert admitted(tmp_path, GUEST)
        assert "already in" in await answer(api, GUEST, f"/start {code}")  # no second use taken
        assert "for admins only" in await answer(api, GUEST, "/invite")

        # malformed, guessed and 5,000-character codes admit nobody
        for bad in ["abc$%^", code[:-1] + ("A" if code[-1] != "A" else "B"), "A" * 5000, code + "x"]:
            assert "no longer valid" in await answer(api, GUESSER, f"/start {bad}")
        assert not admitted(tmp_path, GUESSER)
        assert "ask the organiser" in await answer(api, GUESSER, "/k")

        # a code used up: its one use admits one user, the next gets "no longer valid"
        one = await new_invite(api, "1")
        assert "Welcome" in await answer(api, LATE_GUEST, f"/start {one}")
        assert "no longer valid" in await answer(api, STRANGER, f"/start {one}")
        assert not admitted(tmp_path, STRANGER)

        # /invites: live codes by their first characters only, with uses left; a revoked code admits nobody
        revoked = await new_invite(api, "5 2")
        listed = await answer(api, ADMIN, "/invites")
        assert f"{code[:6]}…" in listed and "299 of 300 uses left" in listed and f"{revoked[:6]}…" in listed
        assert code not in listed and revoked not in listed and one[:6] not in listed  # used up: not live
        assert "Revoked" in await answer(api, ADMIN, f"/revoke {revoked[:6]}")
        assert "no longer valid" in await answer(api, STRANGER, f"/start {revoked}")
        assert not admitted(tmp_path, STRANGER)
        assert revoked[:6] not in await answer(api, ADMIN, "/invites")
        assert "No live invite link matches" in await answer(api, ADMIN, f"/revoke {revoked}")

        # bad /invite arguments: clear answers, no link
        since = len(api.calls)
        assert "Usage: /invite [uses] [days]" in await answer(api, ADMIN, "/invite -3")
        assert "from 1 to 365 days" in await answer(api, ADMIN, "/invite 10 99999")
        assert "from 1 to 100,000 users" in await answer(api, ADMIN, "/invite 0")
        assert "Usage" in await answer(api, ADMIN, "/invite ten")
        assert not api.calls_to(ADMIN, "sendPhoto", since=since)

        # the audit: today's admissions and refusals, counts only
        stats = await answer(api, ADMIN, "/stats")
        today = datetime.now(timezone.utc)
        assert "Last 7 days (UTC): admitted · searches · refused" in stats
        line = next(row for row in stats.splitlines() if row.startswith(f"• {today:%m-%d}:"))
        admissions, _searches, refusals = (int(part) for part in line.split(":", 1)[1].split("·"))
        assert admissions == 2 and refusals >= 7
        assert str(GUEST) not in stats and str(STRANGER) not in stats
        assert svc.metrics.value("facesearch_invite_admissions_total") == 2
        assert svc.metrics.value("facesearch_access_refusals_total", {"reason": "invalid_invite"}) == 6


async def test_the_first_photo_waits_for_consent_and_is_searched_once_agreed(api, invite_engine, tmp_path):
    overrides = {"allowed_user_ids": "invite", "operator_contact": "Ann Organiser (@ann)"}
    async with running_service(api, invite_engine, tmp_path, **overrides):
        code = await new_invite(api)
        assert "Welcome" in await answer(api, GUEST, f"/start {code}")

        # the first photo: the notice with an "I agree" button; nothing downloaded, nothing searched
        since = len(api.calls)
        api.send_photo(GUEST, person_photo("Madonna"))
        notice = await api.wait_for_text(GUEST, "Before I search your photo", since=since)
        assert "Ann Organiser (@ann)" in notice.text and "/forget" in notice.text and "not kept" in notice.text
        assert not api.calls_to(GUEST, "getFile", since=since) and not [
            c for c in api.calls[since:] if c.method == "getFile"
        ]
        with database(tmp_path) as db:
            assert db.execute("SELECT count(*) FROM consents WHERE user_id = ?", (GUEST,)).fetchone() == (0,)

        # someone else's press changes nothing; the guest's searches the photo that waited
        api.press(STRANGER, notice, "I agree")  # a stranger: refused by the gatekeeper
        api.press(GUEST, notice, "I agree")
        found = await api.wait_for_text(GUEST, "Madonna", since=since, timeout=120)
        assert found.at > notice.at
        with database(tmp_path) as db:
            rows = db.execute(
                "SELECT purpose, agreed_at, text_version FROM consents WHERE user_id = ?", (GUEST,)
            ).fetchall()
        assert [(purpose, version) for purpose, _, version in rows] == [("search", 1)]
        agreed = datetime.fromisoformat(rows[0][1]).replace(tzinfo=timezone.utc)
        assert abs((datetime.now(timezone.utc) - agreed).total_seconds()) < 120

        # the next photo is searched at once
        since = len(api.calls)
        api.send_photo(GUEST, person_photo("Madonna"))
        await api.wait_for_text(GUEST, "Madonna", since=since, timeout=120)
        assert not [t for t in texts(api, GUEST, since) if "Before I search" in t]

        # /forget deletes the agreement with the history: the next photo asks again
        assert "Deleted" in await answer(api, GUEST, "/forget")
        with database(tmp_path) as db:
            assert db.execute("SELECT count(*) FROM consents WHERE user_id = ?", (GUEST,)).fetchone() == (0,)
        since = len(api.calls)
        api.send_photo(GUEST, person_photo("Madonna"))
        await api.wait_for_text(GUEST, "Before I search your photo", since=since)

        # admins are not asked
        since = len(api.calls)
        api.send_photo(ADMIN, person_photo("Madonna"))
        await api.wait_for_text(ADMIN, "Madonna", since=since, timeout=120)
        assert not [t for t in texts(api, ADMIN, since) if "Before I search" in t]


def test_allowed_user_ids_invite_and_consent_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("ALLOWED_USER_IDS", "REQUIRE_CONSENT", "OPERATOR_CONTACT"):
        monkeypatch.delenv(name, raising=False)
    invite = Settings(allowed_user_ids="invite")
    assert invite.invite_mode and invite.allowed_user_ids == frozenset() and invite.access_problem() is None
    assert invite.consent_required() and not invite.is_allowed(5)
    both = Settings(allowed_user_ids="invite,111, 222")
    assert both.invite_mode and both.allowed_user_ids == frozenset({111, 222}) and both.is_allowed(111)
    anyone = Settings(allowed_user_ids="*")
    assert not anyone.invite_mode and anyone.is_allowed(5) and not anyone.consent_required()
    assert Settings(allowed_user_ids="111", require_consent=True).consent_required()
    assert not Settings(allowed_user_ids="invite", require_consent=False).consent_required()
    assert Settings(allowed_user_ids="").access_problem() is not None
    monkeypatch.setenv("ALLOWED_USER_IDS", "invite,7")
    monkeypatch.setenv("REQUIRE_CONSENT", "")
    from_env = Settings()
    assert from_env.invite_mode and from_env.allowed_user_ids == frozenset({7}) and from_env.require_consent is None


def test_a_code_admits_no_more_users_than_its_uses_under_concurrent_opens(tmp_path):
    """Four stores (as four replicas) on one real SQLite file, 40 users opening a 3-use link at once: 3 admitted."""
    from concurrent.futures import ThreadPoolExecutor

    from bot.db import HistoryStore, upgrade
    from bot.invites import Admitted, InviteStore

    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    histories = [HistoryStore(url) for _ in range(4)]
    try:
        stores = [InviteStore(history) for history in histories]
        made = stores[0].create(created_by=ADMIN, uses=3, days=1)
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(lambda user: stores[user % 4].admit(user, made.code), range(100, 140)))
        assert outcomes.count(Admitted.ADMITTED) == 3 and outcomes.count(Admitted.INVALID) == 37
        assert stores[1].live() == []  # used up
        assert sum(stores[2].is_admitted(user) for user in range(100, 140)) == 3
    finally:
        for history in histories:
            history.close()
