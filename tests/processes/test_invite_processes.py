"""An invite link's admission is stored, not remembered: two real bot processes (`python -m bot`, ALLOWED_USER_IDS=invite)
on one SQLite history database talk HTTP to the fake Bot API; a guest admitted by replica a is let in by replica b,
and by replica a again after it restarted (its memory gone), while a stranger stays out on both."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from support.bot_helpers import ADMIN, small_gallery
from support.fake_bot_api import BOT_USER, TOKEN, FakeBotAPI
from support.helpers_engine import MODELS_DIR, REPO_ROOT

START_TIMEOUT = 300
TIMEOUT = 60
GUEST, STRANGER = 5001, 5002
LINK = f"https://t.me/{BOT_USER['username']}?start="


class Replica:
    """One `python -m bot` process whose Bot API calls reach the fake server as replica `name`."""

    def __init__(self, name: str, api: FakeBotAPI, env: dict[str, str], log_dir: Path):
        self.name, self.api, self.env = name, api, env
        self.log = log_dir / f"replica-{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        since = len(self.api.calls)
        env = {**os.environ, **self.env, "BOT_API_URL": self.api.replica_url(self.name)}
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=self.log.parent, env=env, stdout=out, stderr=out
            )
        try:  # the commands are registered once the database is migrated and the handlers are in place
            await self.api.wait_for(
                lambda calls: any(c.method == "setMyCommands" and c.replica == self.name for c in calls[since:]),
                timeout=START_TIMEOUT,
            )
        except AssertionError:
            raise AssertionError(f"replica {self.name} did not start:\n{self.log.read_text()[-3000:]}") from None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=60)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None


@asynccontextmanager
async def replicas(
    api: FakeBotAPI, env: dict[str, str], log_dir: Path, *names: str
) -> AsyncIterator[dict[str, Replica]]:
    running = {name: Replica(name, api, env, log_dir) for name in names}
    try:
        await asyncio.gather(*(replica.start() for replica in running.values()))
        yield running
    finally:
        await asyncio.gather(*(replica.stop() for replica in running.values()))


async def answer(api: FakeBotAPI, replica: str, user: int, text: str) -> str:
    """The one text answer of `replica` to `text` from `user`."""
    since = len(api.calls)
    api.target = replica
    api.send_text(user, text)
    calls = await api.wait_for(lambda calls: api.calls_to(user, "sendMessage", since=since), timeout=TIMEOUT)
    assert calls[0].replica == replica
    return str(calls[0].text)


async def test_an_admission_holds_on_another_replica_and_after_a_restart(api, tmp_path):
    env = {
        "BOT_TOKEN": TOKEN, "DATA_DIR": str(tmp_path / "data"), "GALLERY_DIR": str(small_gallery(tmp_path / "gallery", 1)),
        "MODELS_DIR": str(MODELS_DIR), "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "ALLOWED_USER_IDS": "invite", "ADMIN_IDS": str(ADMIN), "REQUIRE_CONSENT": "false", "REFUSAL_INTERVAL_S": "0",
        "BUILD_MISSING_INDEX": "false", "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
    }  # fmt: skip
    async with replicas(api, env, tmp_path, "a", "b") as running:
        # an invite made on replica a, opened on replica a
        since = len(api.calls)
        api.target = "a"
        api.send_text(ADMIN, "/invite 2 1")
        sent = await api.wait_for(lambda calls: api.calls_to(ADMIN, "sendPhoto", since=since), timeout=TIMEOUT)
        code = next(w for w in sent[0].text.split() if w.startswith(LINK)).removeprefix(LINK)
        assert "Welcome" in await answer(api, "a", GUEST, f"/start {code}")

        # replica b never saw the guest: it finds the admission in the database
        assert "Matches per face" in await answer(api, "b", GUEST, "/k")
        assert "ask the organiser" in await answer(api, "b", STRANGER, "/k")

        # replica a restarts (its cache is gone): the guest is still in, the stranger still out
        await running["a"].stop()
        await running["a"].start()
        assert "Matches per face" in await answer(api, "a", GUEST, "/k")
        assert "ask the organiser" in await answer(api, "a", STRANGER, "/k")

        # the code's second use, on replica b; then it is used up on either replica
        assert "Welcome" in await answer(api, "b", STRANGER, f"/start {code}")
        assert "no longer valid" in await answer(api, "a", STRANGER + 1, f"/start {code}")
        assert "ask the organiser" in await answer(api, "b", STRANGER + 1, "/k")
