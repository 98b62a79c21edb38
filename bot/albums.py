"""Albums (media groups): their photos arrive as separate updates, maybe at different replicas.

Each part is a row (`bot.state`); every replica that got a part waits until no part arrived for ALBUM_WAIT_S, then
claims the album: the one that wins answers it whole, once. An admin's rows stay (until they expire) so that
`/add Name` as a reply to the album finds all its photos; the service drops anyone else's once it has them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from bot.state import Part, SharedState

log = logging.getLogger(__name__)

AlbumKey = tuple[int, str]  # chat_id, media_group_id


class AlbumCollector:
    def __init__(
        self,
        state: SharedState,
        db: Callable[..., Awaitable],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        wait_s: float,
        on_album: Callable[[list[Part]], Awaitable[None]],
    ):
        self.state = state
        self.db = db
        self.spawn = spawn
        self.wait_s = wait_s
        self.on_album = on_album
        self._waiting: set[AlbumKey] = set()  # albums this replica waits for

    async def collect(self, part: Part) -> None:
        await self.db(self.state.add_part, part)
        key = (part.chat_id, part.media_group_id)
        if key not in self._waiting:
            self._waiting.add(key)
            self.spawn(self._finish(key))

    async def _finish(self, key: AlbumKey) -> None:
        """Wait until no part arrived (at any replica) for ALBUM_WAIT_S; the replica that claims it answers."""
        try:
            last: datetime | None = None
            while True:
                newest = await self.db(self.state.last_part_at, *key)
                if newest is not None and newest == last:
                    break
                last = newest
                await asyncio.sleep(self.wait_s)
            self._waiting.discard(key)
            claim = f"album:{key[0]}:{key[1]}"
            if not await self.db(self.state.claim, claim, timedelta(days=1)):
                return  # another replica answers it
            parts = await self.db(self.state.parts, *key)
            if parts:  # none: a /forget came first
                await self.on_album(parts)
        except Exception:
            log.exception("exception while answering an album")
        finally:
            self._waiting.discard(key)
