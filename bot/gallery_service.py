"""The gallery verbs of the bot (admins' /add, /remove, /rename): the engine and database work, no message texts.

bot/gallery_commands.py parses those commands and words their answers; this class runs each edit in the index
thread (one edit at a time), tells the chat when the index keeps it waiting, and keeps the history in step with
removals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import IndexBusyError
from engine.gallery import AddResult, EditResult

if TYPE_CHECKING:
    from bot.service import BotService

T = TypeVar("T")

EDIT_NOTICE_S = 3.0  # a gallery edit still running after this gets a word: the index may be busy


@dataclass(frozen=True)
class Removal:
    """What /remove did: the person's folder is gone and the history no longer names them.

    `photos`: how many (0 when not known); `index_busy`: a long indexing run holds the index, so searches find them
    until that run or the next /reindex; `emptied`: they were the last person, the gallery is now empty."""

    name: str
    photos: int
    index_busy: bool = False
    emptied: bool = False


class GalleryService:
    """Add, remove and rename gallery people through `engine.gallery`, in the service's index thread."""

    def __init__(self, svc: BotService):
        self.svc = svc

    async def add(self, chat_id: int, name: str, photos: Iterable[bytes]) -> AddResult:
        """Check, save and index the photos as `name`'s (a photo that cannot be used is refused, with its number);
        in the photos layout their faces' person is named `name` too (`AddedPhoto.person`, `AddResult.named`).
        `photos` are taken one at a time in the index thread (a generator may download each when asked)."""
        return await self._edit(chat_id, self.svc.gallery.add_photos, name, photos)

    async def rename(self, chat_id: int, old: str, new: str) -> EditResult:
        """Rename a person, merging into `new` when that person exists."""
        return await self._edit(chat_id, self.svc.gallery.rename, old, new)

    async def remove(self, chat_id: int, name: str) -> Removal:
        """Remove a person's photos and index entries, and their name from the history.

        Raises the engine's error when nothing was removed: nobody of that name (a stale confirmation: pressed twice,
        or after a /rename), the photos layout (refused), or the person still in the gallery. The history is left
        as it was then."""
        svc = self.svc
        try:
            result = await self._edit(chat_id, svc.gallery.remove, name)
            removal = Removal(result.person.name, result.photos, emptied=result.emptied)
        except IndexBusyError:
            if await svc.db(svc.gallery.find, name) is not None:
                raise
            removal = Removal(name, 0, index_busy=True)  # the folder is gone; the index follows after the other run
        await svc.db(svc.store.forget_person, removal.name)
        return removal

    async def _edit(self, chat_id: int, function: Callable[..., T], *args: Any) -> T:
        """Run a gallery edit in the index thread; if it takes a while, say why (the index may be held by a long
        indexing run, e.g. `python -m engine index`, which the edit waits for)."""
        task = asyncio.ensure_future(self.svc.write_index(function, *args))
        done, _ = await asyncio.wait({task}, timeout=EDIT_NOTICE_S)
        if not done:
            await self.svc.sender.text(
                chat_id,
                "Still working: the gallery's index is busy (another indexing run may hold it, and I wait for it). "
                "I'll answer here when it's done.",
            )
        return await task
