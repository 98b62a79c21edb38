"""Sending to Telegram reliably: retries after network errors, and gallery photos' file_id cache."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from telegram.error import BadRequest, NetworkError, RetryAfter

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def file_key(path: str | Path) -> tuple[str, int, int]:
    """A gallery file's version: path, mtime and size. OSError when the file is gone."""
    stat = Path(path).stat()
    return str(path), stat.st_mtime_ns, stat.st_size


class FileIdCache:
    """Telegram file_ids of gallery photos already uploaded, per file version (an edited file uploads again)."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, int, int]) -> str | None:
        with self._lock:
            file_id = self._items.get(key)
            if file_id is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return file_id

    def put(self, key: tuple[str, int, int], file_id: str) -> None:
        if not self.size:
            return
        with self._lock:
            self._items[key] = file_id
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, keys) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
