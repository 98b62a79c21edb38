"""Sending answers: texts, the matches' gallery photos as albums (cached file_ids, else uploads), retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from telegram import Bot, InlineKeyboardMarkup, InputMediaPhoto, Message
from telegram.error import BadRequest

from bot import render
from bot.delivery import FileKey, file_id_cache, file_key, retrying
from bot.metrics import Metrics
from engine import Match
from engine.errors import BadImageError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class FaceLabel:
    """Which face a group of matches belongs to: `photo` is set for a photo of an album."""

    face: int
    photo: int | None = None
    closest: bool = False  # not in the gallery: the photos are only the closest faces

    def text(self) -> str:
        return f"Photo {self.photo} · Face {self.face}" if self.photo is not None else f"Face {self.face}"


@dataclass(frozen=True)
class _Ready:
    match: Match
    key: FileKey
    media: str | bytes  # a cached file_id, or the JPEG to upload
    cached: bool


class Sender:
    """Every Telegram call of an answer goes through `send` (retries); gallery photos through `matches`."""

    def __init__(self, bot: Bot, metrics: Metrics, thumbnails: render.ThumbnailCache, retries: int):
        self.bot = bot
        self.metrics = metrics
        self.thumbnails = thumbnails
        self.retries = retries
        self.file_ids = file_id_cache()

    async def send(self, factory: Callable[[], Awaitable[T]]) -> T:
        """A Telegram call retried after network errors and escaped flood waits (SEND_RETRIES)."""
        return await retrying(factory, self.retries, on_retry=lambda kind: self.metrics.error(f"telegram_{kind}"))

    async def text(self, chat_id: int, text: str, reply_markup: InlineKeyboardMarkup | None = None) -> Message:
        return await self.send(lambda: self.bot.send_message(chat_id, text, reply_markup=reply_markup))

    async def lines(self, chat_id: int, lines: list[str], reply_markup: InlineKeyboardMarkup | None = None) -> Message:
        """Lines in as few messages as Telegram's length limit allows, the buttons under the last; returns it."""
        parts = render.split_text(lines)
        for part in parts[:-1]:
            await self.text(chat_id, part)
        return await self.text(chat_id, parts[-1], reply_markup=reply_markup)

    async def photo(self, chat_id: int, data: bytes, caption: str) -> Message:
        return await self.send(lambda: self.bot.send_photo(chat_id, data, caption=caption))

    async def action(self, chat_id: int, action: str) -> None:
        await self.send(lambda: self.bot.send_chat_action(chat_id, action))

    async def matches(self, chat_id: int, label: FaceLabel, matches: Sequence[Match]) -> int:
        """Albums of the matches' gallery photos; returns how many photos were sent."""
        if not matches:
            await self.text(chat_id, f"{label.text()}: no more matches in the gallery.")
            return 0
        items: list[tuple[Match, FileKey]] = []
        for match in matches:
            try:
                items.append((match, file_key(match.path)))
            except OSError:
                self._missing(match.path)
        if not items:
            await self.text(chat_id, f"{label.text()}: the matching gallery photos are no longer available.")
            return 0
        sent = 0
        for group in render.chunks(items):
            sent += await self._group(chat_id, label, group)
        return sent

    def _missing(self, path: str) -> None:
        log.warning("gallery file missing or unreadable since the last index: %s", path)
        self.metrics.error("missing_gallery_file")

    def _prepare(self, group: list[tuple[Match, FileKey]], use_cache: bool) -> list[_Ready]:
        """Runs in a thread: thumbnails are read and scaled from disk."""
        ready = []
        for match, key in group:
            cached = self.file_ids.get(key) if use_cache else None
            if cached is not None:
                ready.append(_Ready(match, key, cached, True))
                continue
            try:
                ready.append(_Ready(match, key, self.thumbnails.get(match.path), False))
            except (OSError, BadImageError):  # gone, or replaced by a file that is no image of the gallery's formats
                self._missing(match.path)
        return ready

    async def _group(
        self, chat_id: int, label: FaceLabel, group: list[tuple[Match, FileKey]], use_cache: bool = True
    ) -> int:
        ready = await asyncio.to_thread(self._prepare, group, use_cache)
        if not ready:
            return 0
        captions = [render.caption(label.face, item.match, label.photo, closest=label.closest) for item in ready]
        try:
            sent: list[Any]
            if len(ready) == 1:
                sent = [await self.send(lambda: self.bot.send_photo(chat_id, ready[0].media, caption=captions[0]))]
            else:
                media = [InputMediaPhoto(item.media, caption=text) for item, text in zip(ready, captions)]
                sent = list(await self.send(lambda: self.bot.send_media_group(chat_id, media)))
        except BadRequest as error:
            if not use_cache or not any(item.cached for item in ready):
                raise
            log.warning("Telegram refused cached file_ids (%s): uploading again", error)
            self.file_ids.drop(item.key for item in ready if item.cached)
            return await self._group(chat_id, label, group, use_cache=False)
        for item, answer in zip(ready, sent):
            if not item.cached and answer.photo:
                self.file_ids.put(item.key, answer.photo[-1].file_id)
        return len(ready)
