"""Fixtures' building blocks for the bot tests: settings, a running bot, photos."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image, ImageOps

from bot.app import build_application, running
from bot.settings import Settings
from engine import Engine
from support.fake_bot_api import TOKEN, Call, FakeBotAPI
from support.helpers_engine import CLEAR_FACES, copy_photos, encode, first_photos, sample

ADMIN = 1000
USER = 2000
PEOPLE = ["Ben_Afflek", "Elton_John", "Jerry_Seinfeld", "Madonna", "Mindy_Kaling"]


def small_gallery(root: Path, per_person: int = 3) -> Path:
    """The first photos of each sample person, plus each person's clear face (the searches' best match)."""
    relatives = [p for person in PEOPLE for p in first_photos(person, per_person)]
    relatives += [r for r in CLEAR_FACES.values() if r not in relatives]
    copy_photos(root, relatives)
    return root


def bot_settings(api: FakeBotAPI, engine: Engine, tmp_path: Path, **overrides) -> Settings:
    """Bot settings over the engine's data/gallery, with the database in tmp_path."""
    base = engine.settings.model_dump()
    values = {
        **base,
        "bot_token": TOKEN,
        "bot_api_url": api.url,
        "database_url": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "admin_ids": {ADMIN},
        "allowed_user_ids": "*",  # the tests play many users
        "max_persons_per_day": 0,  # the tests look many people up; tests/bot/test_bot_limits.py sets a limit
        "delivery_min_faces": 0,  # the test galleries are small; tests/bot/test_bot_follow.py checks the wait
        "progress_interval_s": 0.05,
        "build_missing_index": True,
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_service(api: FakeBotAPI, engine: Engine, tmp_path: Path, wait_ready: bool = True, **overrides):
    """A running bot; yields its BotService (settings, metrics, engine). `wait_ready`: after the models are prepared."""
    settings = bot_settings(api, engine, tmp_path, **overrides)
    application = build_application(settings, engine=engine)
    async with running(application):
        service = application.bot_data["service"]
        if wait_ready:
            await asyncio.wait_for(service.ready.wait(), timeout=300)
        yield service


@contextlib.asynccontextmanager
async def running_bot(api: FakeBotAPI, engine: Engine, tmp_path: Path, **overrides) -> AsyncIterator[Settings]:
    async with running_service(api, engine, tmp_path, **overrides) as service:
        yield service.settings


def last_call(api: FakeBotAPI, chat_id: int, fragment: str) -> Call:
    """The last message to `chat_id` containing `fragment` (its reply_markup holds the buttons)."""
    return [c for c in api.calls if c.chat_id == chat_id and fragment.lower() in c.text.lower()][-1]


def person_photo(person: str = "Madonna") -> bytes:
    """A clear photo of a gallery person, mirrored so it is not byte-identical to the gallery file."""
    with Image.open(sample(CLEAR_FACES[person])) as image:
        return encode(ImageOps.mirror(image.convert("RGB")), quality=90)


def albums(api: FakeBotAPI, chat_id: int, since: int = 0) -> list[Call]:
    return api.calls_to(chat_id, "sendMediaGroup", "sendPhoto", since=since)


def captions(call: Call) -> list[str]:
    if call.method == "sendMediaGroup":
        return [item.get("caption", "") for item in call.media()]
    return [call.text]


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size
