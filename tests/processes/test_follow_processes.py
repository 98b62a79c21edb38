"""Deliveries across real bot processes (`python -m bot`) and the fake Bot API: a bot killed (SIGKILL) while an
album of deliveries is on its way is restarted and each photo arrives once; two replicas on one PostgreSQL database
deliver each photo once. New photos are indexed by this test's process, as `python -m engine index` would: the bots
pick the new index version up (live pickup) and match it against the followers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from support.bot_helpers import USER
from support.fake_bot_api import TOKEN, FakeBotAPI
from support.helpers_engine import BEN, JERRY, MADONNA, MINDY, MODELS_DIR, REPO_ROOT, first_photos, sample, side_by_side

START_TIMEOUT = 600
TIMEOUT = 180
SELFIE = "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg"
FIRST = {"day-1/IMG_0001.jpg", "day-1/IMG_0002.jpg"}  # Madonna's photos the selfie finds
NEW = {"day-2/IMG_0003.jpg", "day-2/IMG_0004.jpg"}


def madonna_with(other: str) -> Image.Image:
    return side_by_side(sample(other), sample(MADONNA))


def write(root: Path, relative: str, image: Image.Image) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(root / relative, quality=92)


@pytest.fixture
def event(tmp_path, make_engine):
    """An indexed event gallery (Madonna in two group photos) and the engine that indexes new photos into it."""
    root = tmp_path / "gallery"
    write(root, "day-1/IMG_0001.jpg", madonna_with(JERRY))
    write(root, "day-1/IMG_0002.jpg", madonna_with(MINDY))
    write(root, "day-1/IMG_0005.jpg", side_by_side(sample(BEN), sample(first_photos("Mindy_Kaling", 3)[2])))
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=root, gallery_layout="photos")
    engine.build_index("facenet")
    yield engine
    engine.close()


def add_new_photos(engine) -> None:
    """Two new photos of Madonna, indexed in one run by this process (another process than the bots)."""
    root = Path(engine.settings.gallery_dir)
    ben = first_photos("Ben_Afflek", 3)
    write(root, "day-2/IMG_0003.jpg", madonna_with(ben[1]))
    write(root, "day-2/IMG_0004.jpg", madonna_with(ben[2]))
    engine.build_index("facenet")


class Bot:
    """One `python -m bot` process; `replica` names its route on the fake Bot API ("" for a single bot)."""

    def __init__(self, api: FakeBotAPI, engine, database_url: str, log: Path, replica: str = ""):
        self.api, self.engine, self.database_url, self.log, self.replica = api, engine, database_url, log, replica
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        s = self.engine.settings
        env = {
            **os.environ, "BOT_TOKEN": TOKEN, "BOT_API_URL": self.api.replica_url(self.replica) if self.replica else self.api.url,
            "DATA_DIR": str(s.data_dir), "GALLERY_DIR": str(s.gallery_dir), "MODELS_DIR": str(MODELS_DIR),
            "GALLERY_LAYOUT": "photos", "DATABASE_URL": self.database_url, "ALLOWED_USER_IDS": "*",
            "BUILD_MISSING_INDEX": "false", "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
            "DELIVERY_INTERVAL_S": "0", "DELIVERY_MIN_FACES": "0", "DELIVERY_CLAIM_S": "4", "INDEX_REFRESH_S": "1",
        }  # fmt: skip
        since = len(self.api.calls)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=self.log.parent, env=env, stdout=out, stderr=out
            )
        try:
            await self.api.wait_for(
                lambda calls: any(c.method == "setMyCommands" and c.replica == self.replica for c in calls[since:]),
                timeout=START_TIMEOUT,
            )
        except AssertionError:
            raise AssertionError(f"the bot did not start:\n{self.log.read_text()[-3000:]}") from None

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self.process = None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=60)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None


def delivered(api: FakeBotAPI, chat_id: int) -> Counter:
    """How many times each gallery path was sent to `chat_id` (the captions of the albums and photos)."""
    paths: Counter = Counter()
    for call in api.calls_to(chat_id, "sendMediaGroup", "sendPhoto"):
        items = call.media() if call.method == "sendMediaGroup" else [{"caption": call.text}]
        paths.update(item.get("caption", "").split(" · ")[0] for item in items)
    return paths


async def follow(api: FakeBotAPI, user: int) -> None:
    since = len(api.calls)
    api.send_photo(user, sample(SELFIE).read_bytes(), caption="/follow")
    prompt = await api.wait_for_text(user, "I keep one face template", since=since, timeout=TIMEOUT)
    api.press(user, prompt, "I agree")
    await api.wait_for_text(user, "You're following", since=since, timeout=TIMEOUT)


async def test_a_delivery_survives_a_kill_and_restart_exactly_once(api, event, tmp_path):
    database = tmp_path / "bot.sqlite3"
    bot = Bot(api, event, f"sqlite:///{database}", tmp_path / "bot.log")
    await bot.start()
    try:
        await follow(api, USER)
        await api.wait_for(lambda calls: set(delivered(api, USER)) >= FIRST, timeout=TIMEOUT)

        # new photos: their album is held on its way to Telegram, and the bot is killed there
        api.hold("sendMediaGroup")
        await asyncio.to_thread(add_new_photos, event)
        await api.wait_for(lambda calls: "sendmediagroup" in api.held, timeout=TIMEOUT)
        await bot.kill()
        with sqlite3.connect(database) as connection:
            statuses = dict(connection.execute("select path, status from deliveries").fetchall())
        assert {statuses[path] for path in NEW} == {"sending"}
        # the dead bot's request never completes (Telegram did not take it): it fails once let go
        api.fail_next("sendMediaGroup", 1, code=502)
        api.release("sendMediaGroup")
        await asyncio.sleep(0.5)

        await bot.start()  # its claim runs out (DELIVERY_CLAIM_S): the restarted bot sends the album
        await api.wait_for(lambda calls: set(delivered(api, USER)) >= FIRST | NEW, timeout=TIMEOUT)
        await asyncio.sleep(3)  # a repeat would come within a claim's length
        assert delivered(api, USER) == Counter({path: 1 for path in FIRST | NEW})
        with sqlite3.connect(database) as connection:
            assert {status for (status,) in connection.execute("select status from deliveries")} == {"sent"}
    finally:
        await bot.stop()


async def test_two_replicas_deliver_each_photo_once(api, event, tmp_path, postgres_server):
    from support.postgres_server import fresh_database

    with fresh_database(postgres_server) as url:
        bots = [Bot(api, event, url, tmp_path / f"replica-{name}.log", replica=name) for name in ("a", "b")]
        await asyncio.gather(*(bot.start() for bot in bots))
        try:
            api.target = "a"
            await follow(api, USER)
            api.target = "b"
            await follow(api, USER + 1)  # a second follower, agreed on the other replica
            for user in (USER, USER + 1):
                await api.wait_for(lambda calls, user=user: set(delivered(api, user)) >= FIRST, timeout=TIMEOUT)
            await asyncio.to_thread(add_new_photos, event)  # both replicas pick the version up
            for user in (USER, USER + 1):
                await api.wait_for(lambda calls, user=user: set(delivered(api, user)) >= FIRST | NEW, timeout=TIMEOUT)
            await asyncio.sleep(3)
            for user in (USER, USER + 1):
                assert delivered(api, user) == Counter({path: 1 for path in FIRST | NEW})
            senders = {c.replica for c in api.calls if c.method == "sendMediaGroup"}
            assert senders <= {"a", "b"}
        finally:
            await asyncio.gather(*(bot.stop() for bot in bots))
