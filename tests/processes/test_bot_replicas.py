"""Two real bot processes (`python -m bot`) on one PostgreSQL database and one vector store, both talking HTTP to the
fake Bot API: a button of an answer one replica sent works on the other, after a restart too; a double press runs
once; an album whose photos reach both replicas gets one answer; a /remove confirmation works on either replica."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.admission import STILL_WORKING
from support.bot_helpers import ADMIN, USER, person_photo, small_gallery
from support.fake_bot_api import TOKEN, Call, FakeBotAPI
from support.helpers_engine import MODELS_DIR, REPO_ROOT

START_TIMEOUT = 600
TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def shared(tmp_path, make_engine, postgres_server):
    """One gallery, one local store (indexed once) and one fresh PostgreSQL database for both replicas."""
    from support.postgres_server import fresh_database

    gallery = small_gallery(tmp_path / "gallery")
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    engine.close()
    with fresh_database(postgres_server) as url:
        yield {"gallery": gallery, "data": tmp_path / "data", "database_url": url}


class Replica:
    def __init__(self, name: str, api: FakeBotAPI, shared: dict, log_dir: Path):
        self.name, self.api, self.shared = name, api, shared
        self.log = log_dir / f"replica-{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.metrics_port = free_port()

    async def start(self) -> None:
        env = {
            **os.environ, "BOT_TOKEN": TOKEN, "BOT_API_URL": self.api.replica_url(self.name),
            "DATA_DIR": str(self.shared["data"]), "GALLERY_DIR": str(self.shared["gallery"]), "MODELS_DIR": str(MODELS_DIR),
            "DATABASE_URL": self.shared["database_url"], "ALLOWED_USER_IDS": "*", "ADMIN_IDS": str(ADMIN),
            "BUILD_MISSING_INDEX": "false", "ALBUM_WAIT_S": "1.0", "PYTHONPATH": str(REPO_ROOT),
            "METRICS_PORT": str(self.metrics_port),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }  # fmt: skip
        since = len(self.api.calls)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=self.log.parent, env=env, stdout=out, stderr=out
            )
        try:
            await self.api.wait_for(
                lambda calls: any(c.method == "setMyCommands" and c.replica == self.name for c in calls[since:]),
                timeout=START_TIMEOUT,
            )
            await self.healthy()
        except AssertionError:
            raise AssertionError(f"replica {self.name} did not start:\n{self.log.read_text()[-3000:]}") from None

    async def healthy(self) -> None:
        """Until /healthz says 200: the database answers and the models are loaded (503 before)."""
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while asyncio.get_running_loop().time() < deadline:
                async with http.get(f"http://127.0.0.1:{self.metrics_port}/healthz") as response:
                    if response.status == 200:
                        assert (await response.json())["database"] == "ok"
                        return
                    assert response.status == 503
                await asyncio.sleep(0.5)
        raise AssertionError(f"replica {self.name} was not healthy after {START_TIMEOUT} s")

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
async def replicas(api: FakeBotAPI, shared: dict, log_dir: Path, *names: str) -> AsyncIterator[dict[str, Replica]]:
    running = {name: Replica(name, api, shared, log_dir) for name in names}
    try:
        await asyncio.gather(*(replica.start() for replica in running.values()))
        yield running
    finally:
        await asyncio.gather(*(replica.stop() for replica in running.values()))


def texts(api: FakeBotAPI, chat_id: int, fragment: str, since: int = 0) -> list[Call]:
    return [c for c in api.calls_to(chat_id, "sendMessage", since=since) if fragment.lower() in c.text.lower()]


async def answer_of(api: FakeBotAPI, user: int, replica: str, since: int) -> Call:
    """The summary of a photo sent to `replica`, answered by it."""
    api.target = replica
    api.send_photo(user, person_photo("Madonna"))
    summary = await api.wait_for_text(user, "most likely Madonna", since=since, timeout=TIMEOUT)
    assert summary.replica == replica
    return summary


async def test_buttons_albums_and_confirmations_work_on_either_replica_and_after_a_restart(api, shared, tmp_path):
    async with replicas(api, shared, tmp_path, "a", "b") as running:
        # an answer from replica a; its "More matches" pressed on replica b
        since = len(api.calls)
        summary = await answer_of(api, USER, "a", since)
        api.target = "b"
        api.press(USER, summary, "More matches")
        page = await api.wait_for_text(USER, "Matches 6–10", since=since, timeout=TIMEOUT)
        assert page.replica == "b"
        assert [len(c.media()) for c in api.calls_to(USER, "sendMediaGroup", since=since)] == [5, 5]

        # the next page's button pressed on both replicas: one page, and a short "already shown" on the other
        since = len(api.calls)
        for replica in ("a", "b"):
            api.target = replica
            api.press(USER, page, "More matches")
        await api.wait_for_text(USER, "Matches 11–15", since=since, timeout=TIMEOUT)
        await api.wait_for(
            lambda calls: len([c for c in calls[since:] if c.method == "answerCallbackQuery"]) == 2, timeout=TIMEOUT
        )
        assert len(texts(api, USER, "Matches 11–15", since)) == 1
        notes = [c.params.get("text") for c in api.calls[since:] if c.method == "answerCallbackQuery"]
        assert None in notes  # the press that ran; the other found it claimed, or the user's search still running
        assert {note for note in notes if note is not None} <= {"Already shown.", STILL_WORKING}

        # an album whose first photo reaches replica a and the second replica b: one answer, from one of them
        since = len(api.calls)
        other = USER + 1
        api.target = "a"
        group = api.send_album(other, [person_photo("Madonna"), person_photo("Elton John")])
        api.routes[group[1]] = "b"  # before any replica polls (no await since the push)
        summary = await api.wait_for_text(other, "Photo 2: most likely Elton John", since=since, timeout=TIMEOUT)
        assert summary.text.startswith("Photo 1: most likely Madonna")
        await asyncio.sleep(2.5)  # longer than ALBUM_WAIT_S: a second answer would have come
        assert [c.text for c in api.calls_to(other, "sendMessage", since=since)] == [summary.text]

        # a /remove confirmation asked on replica a, cancelled on replica b
        since = len(api.calls)
        api.target = "a"
        api.send_text(ADMIN, "/remove Madonna")
        question = await api.wait_for_text(ADMIN, "Remove Madonna", since=since, timeout=TIMEOUT)
        api.target = "b"
        api.press(ADMIN, question, "Cancel")
        kept = await api.wait_for_text(ADMIN, "Kept Madonna", since=since, timeout=TIMEOUT)
        assert kept.replica == "b"

        # an answer from replica b; replica a restarts; its button pressed on the new replica a
        since = len(api.calls)
        summary = await answer_of(api, USER + 2, "b", since)
        await running["a"].stop()
        await running["a"].start()
        since = len(api.calls)
        api.target = "a"
        api.press(USER + 2, summary, "More matches")
        page = await api.wait_for_text(USER + 2, "Matches 6–10", since=since, timeout=TIMEOUT)
        assert page.replica == "a"
