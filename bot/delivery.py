"""Sending to and fetching from Telegram reliably: retries, downloads, attachments, the gallery file_id cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from telegram import Bot, Message
from telegram.error import BadRequest, NetworkError, RetryAfter

from bot.lru import LRU

log = logging.getLogger(__name__)
T = TypeVar("T")
FileKey = tuple[str, int, int]  # path, mtime_ns, size


async def retrying(send: Callable[[], Awaitable[T]], attempts: int, on_retry: Callable[[str], None] | None = None) -> T:
    """Await `send()`, retrying up to `attempts` times after a network error, a 5xx or an escaped 429.

    429s are first retried by PTB's AIORateLimiter (max_retries); this catches what it gives up on
    and what it does not handle (connection errors, 502 Bad Gateway). A BadRequest is not retried.
    A timed-out send may have reached Telegram: a retry can then repeat it (rare; better than a
    half-sent answer).
    """
    delay = 0.5
    for attempt in range(attempts + 1):
        try:
            return await send()
        except BadRequest:
            raise
        except RetryAfter as error:
            if attempt == attempts:
                raise
            wait = (
                error.retry_after.total_seconds()
                if hasattr(error.retry_after, "total_seconds")
                else float(error.retry_after)
            )
            kind = "flood_wait"
        except NetworkError as error:  # includes TimedOut
            if attempt == attempts:
                raise
            wait, kind = delay, "network"
            delay = min(delay * 2, 8.0)
            log.warning("Telegram call failed (%s), retry %d of %d in %.1f s", error, attempt + 1, attempts, wait)
        if on_retry is not None:
            on_retry(kind)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def file_key(path: str | Path) -> FileKey:
    """A gallery file's version: path, mtime and size. OSError when the file is gone."""
    stat = Path(path).stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def file_id_cache(size: int = 4096) -> LRU[FileKey, str]:
    """Telegram file_ids of gallery photos already uploaded, per file version (an edited file uploads again)."""
    return LRU(size)


@dataclass(frozen=True)
class Attachment:
    """The file of a photo message (its largest size) or of an image document."""

    file_id: str
    file_size: int | None
    name: str


def attachment_of(message: Message) -> Attachment | None:
    if message.photo:
        photo = message.photo[-1]
        return Attachment(photo.file_id, photo.file_size, "photo")
    if message.document is not None:
        document = message.document
        return Attachment(document.file_id, document.file_size, document.file_name or "file")
    return None


async def download(bot: Bot, file_id: str, attempts: int, on_retry: Callable[[str], None] | None = None) -> bytes:
    """A user's file from Telegram (getFile, then the download), retried like every other call."""
    file = await retrying(lambda: bot.get_file(file_id), attempts, on_retry)
    return bytes(await retrying(file.download_as_bytearray, attempts, on_retry))
