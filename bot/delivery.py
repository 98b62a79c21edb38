"""Sending to and fetching from Telegram reliably: retries, downloads, attachments, the gallery file_id cache."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from cachetools import LRUCache
from telegram import Bot, Message
from telegram.error import BadRequest, NetworkError, RetryAfter

from engine.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
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


class FileIdCache(Generic[K]):
    """Telegram file_ids of photos already uploaded (gallery photos per file version: an edited file uploads again).

    A cachetools LRUCache of at most `size` ids, under a lock (filled from the worker pool's threads); size 0 keeps
    nothing. Setting `size` empties it. `hits` and `misses` count the lookups (the benchmarks report them).
    """

    def __init__(self, size: int = 4096):
        self._lock = threading.Lock()
        self._ids: LRUCache[K, str] = LRUCache(maxsize=1)
        self._size = 0
        self.size = size
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        with self._lock:
            self._size = size
            self._ids = LRUCache(maxsize=max(size, 1))

    def get(self, key: K) -> str | None:
        with self._lock:
            file_id = self._ids.get(key)
            if file_id is None:
                self.misses += 1
            else:
                self.hits += 1
            return file_id

    def put(self, key: K, file_id: str) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._ids[key] = file_id

    def drop(self, keys: Iterable[K]) -> None:
        with self._lock:
            for key in keys:
                self._ids.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


def file_id_cache(size: int = 4096) -> FileIdCache[FileKey]:
    """Telegram file_ids of gallery photos already uploaded, per file version (an edited file uploads again)."""
    return FileIdCache(size)


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


def looks_like_image(file_name: str | None, mime_type: str | None) -> bool:
    """A document that is an image: by its MIME type, or by its name's suffix (the gallery's formats)."""
    if mime_type and mime_type.startswith("image/"):
        return True
    return bool(file_name) and any(str(file_name).lower().endswith(suffix) for suffix in IMAGE_SUFFIXES)


async def download(bot: Bot, file_id: str, attempts: int, on_retry: Callable[[str], None] | None = None) -> bytes:
    """A user's file from Telegram (getFile, then the download), retried like every other call."""
    file = await retrying(lambda: bot.get_file(file_id), attempts, on_retry)
    return bytes(await retrying(file.download_as_bytearray, attempts, on_retry))
