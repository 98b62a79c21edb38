"""Teaching the bot from the chat (admins): /add, /people, /remove, /rename — the gallery edits and their answers.

`GalleryService` runs each edit through `engine.indexing.gallery` in the index thread (one edit at a time), tells the
chat when the index keeps it waiting, keeps the history in step with removals, and words the outcome; the handlers
(bot/handlers/gallery.py) only parse the update and reply.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest

from bot.delivery import Attachment, download
from bot.paging import people_keyboard
from bot.runtime import BotRuntime
from engine import EngineError
from engine.errors import IndexBusyError
from engine.indexing.gallery import AddedPhoto, AddResult, EditResult, Gallery, check_name

log = logging.getLogger(__name__)
T = TypeVar("T")

EDIT_NOTICE_S = 3.0  # a gallery edit still running after this gets a word: the index may be busy

PEOPLE_PAGE = 10
DOWNLOAD_WAIT_S = 300.0  # /add: the most the engine waits for one photo's download (retries included)
_ADD = re.compile(r"^/add(?:@\w+)?(?:\s+(?P<name>.*))?$", re.DOTALL)
USAGE = (
    "Send one or more photos with the caption /add Firstname Lastname, "
    "or reply /add Firstname Lastname to a photo or an album."
)


def is_add(caption: str | None) -> bool:
    return caption is not None and _ADD.match(caption.strip()) is not None


def add_name(text: str | None) -> str:
    match = _ADD.match((text or "").strip())
    return (match.group("name") or "").strip() if match else ""


def index_busy(what: str) -> str:
    return (
        f"The gallery was changed, but its index stayed busy (a long indexing run holds it): {what} becomes "
        "visible to searches after that run or the next /reindex."
    )


def photos_layout_refusal(command: str) -> str:
    """/remove and /rename in the photos layout: folders hold event photos there, not persons (refused)."""
    done = "deletes" if command == "remove" else "renames"
    return (
        f"In a photos gallery /{command} {done} no folder: folders hold event photos, and persons are found in them. "
        "Use /hide N to never show or name person N, /name N New Name to name or rename one, /merge N M to merge "
        "person M into N (numbers as /people shows them). Nothing was changed."
    )


def describe_add(result: AddResult, layout: str = "people") -> str:
    if layout == "photos":
        return describe_add_photos(result)
    person = result.person.name
    new = [a for a in result.added if not a.duplicate]
    lines = []
    if result.added:
        lines.append(
            f"Added {len(new)} photo{'s' if len(new) != 1 else ''} of {person}; "
            f"{person} now has {result.person.photos} photo{'s' if result.person.photos != 1 else ''} "
            "and is searchable now."
        )
    else:
        lines.append(f"Nothing added for {person}.")
    lines.extend(line for added in result.added if (line := _photo_note(added)))
    for refused in result.refused:
        reason = refused.reason.removeprefix(f"photo {refused.number}: ")
        lines.append(f"• Photo {refused.number} refused: {reason}.")
    return "\n".join(lines)


def _photo_note(added: AddedPhoto) -> str | None:
    """A line on one added photo, when there is something to say: a duplicate, or several faces in it."""
    if added.duplicate:
        return f"• Photo {added.number}: already in the gallery."
    if added.faces > 1:
        return f"• Photo {added.number}: {added.faces} faces found — I used the largest one."
    return None


def describe_add_photos(result: AddResult) -> str:
    """The photos layout: the added photos' faces named the person (number and name as /people shows them)."""
    new = [a for a in result.added if not a.duplicate]
    count = f"{len(new)} photo{'s' if len(new) != 1 else ''}"
    named = result.named
    lines = []
    if named is not None:
        lines.append(
            f"Added {count} of {named.name} (person #{named.id}); {named.name} is in {named.photos} "
            f"photo{'s' if named.photos != 1 else ''} now, and searches say the name."
        )
    elif result.added:
        lines.append(f"Added {count} to the gallery, but no face of them was named {result.person.name}:")
    else:
        lines.append(f"Nothing added for {result.person.name}.")
    for added in result.added:
        if note := _photo_note(added):
            lines.append(note)
        if added.owner is not None:
            lines.append(
                f"• Photo {added.number}: that face is already {added.owner.name}'s (person #{added.owner.id}): "
                "/name or /merge to change it. The photo stays in the gallery."
            )
        elif added.not_named:
            lines.append(f"• Photo {added.number} not named: {added.not_named}.")
    for refused in result.refused:
        reason = refused.reason.removeprefix(f"photo {refused.number}: ")
        lines.append(f"• Photo {refused.number} refused: {reason}.")
    return "\n".join(lines)


def remove_keyboard(token: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Yes, remove", callback_data=f"rm:{token}"),
                InlineKeyboardButton("Cancel", callback_data=f"rmno:{token}"),
            ]
        ]
    )


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
    """The gallery verbs: add, remove and rename people through `engine.indexing.gallery`, in the runtime's index
    thread, and their chat commands (parsed by the handlers, answered here)."""

    def __init__(self, runtime: BotRuntime):
        self.rt = runtime

    async def add(self, chat_id: int, name: str, photos: Iterable[bytes]) -> AddResult:
        """Check, save and index the photos as `name`'s (a photo that cannot be used is refused, with its number);
        in the photos layout their faces' person is named `name` too (`AddedPhoto.person`, `AddResult.named`).
        `photos` are taken one at a time in the index thread (a generator may download each when asked)."""
        return await self._edit(chat_id, self.rt.gallery.add_photos, name, photos)

    async def rename(self, chat_id: int, old: str, new: str) -> EditResult:
        """Rename a person, merging into `new` when that person exists."""
        return await self._edit(chat_id, self.rt.gallery.rename, old, new)

    async def remove(self, chat_id: int, name: str) -> Removal:
        """Remove a person's photos and index entries, and their name from the history.

        Raises the engine's error when nothing was removed: nobody of that name (a stale confirmation: pressed twice,
        or after a /rename), the photos layout (refused), or the person still in the gallery. The history is left
        as it was then."""
        rt = self.rt
        try:
            result = await self._edit(chat_id, rt.gallery.remove, name)
            removal = Removal(result.person.name, result.photos, emptied=result.emptied)
        except IndexBusyError:
            if await rt.db(rt.gallery.find, name) is not None:
                raise
            removal = Removal(name, 0, index_busy=True)  # the folder is gone; the index follows after the other run
        await rt.db(rt.store.forget_person, removal.name)
        return removal

    async def _edit(self, chat_id: int, function: Callable[..., T], *args: Any) -> T:
        """Run a gallery edit in the index thread; if it takes a while, say why (the index may be held by a long
        indexing run, e.g. `python -m engine index`, which the edit waits for)."""
        task = asyncio.ensure_future(self.rt.write_index(function, *args))
        done, _ = await asyncio.wait({task}, timeout=EDIT_NOTICE_S)
        if not done:
            await self.rt.sender.text(
                chat_id,
                "Still working: the gallery's index is busy (another indexing run may hold it, and I wait for it). "
                "I'll answer here when it's done.",
            )
        return await task

    # ---- the chat commands -----------------------------------------------------------------

    def edit_failure(self, what: str, error: EngineError) -> str:
        rt = self.rt
        if isinstance(error, IndexBusyError):
            return index_busy(what)
        return f"Nothing {what}: {rt.public(str(error))}"

    async def add_files(self, chat_id: int, user_id: int, files: list[Attachment], text: str | None) -> None:
        """Admins: check, save and index the photos of `files` as the person named in `text`."""
        rt = self.rt
        send = rt.sender
        if not rt.settings.is_admin(user_id):
            log.warning("user %s tried /add without being an admin", user_id)
            await send.text(chat_id, "Sorry, /add is for admins only: nothing was added.")
            return
        try:
            name = check_name(add_name(text))
        except EngineError as error:
            await send.text(chat_id, f"{error}.\n{USAGE}")
            return
        if not files:
            await send.text(chat_id, USAGE)
            return
        photos = self._downloads(files, asyncio.get_running_loop())
        try:
            result = await self.add(chat_id, name, photos)
        except IndexBusyError as error:
            await send.text(chat_id, self.edit_failure("the new photos", error))
            return
        except EngineError as error:
            await send.text(chat_id, f"Nothing added: {rt.public(str(error))}")
            return
        await send.text(chat_id, describe_add(result, rt.settings.gallery_layout))

    def _downloads(self, files: list[Attachment], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
        """The photos of `files` for `Gallery.add_photos`, which takes them in the index thread: each downloaded (on the
        event loop `loop`) only when the engine asks for it, once the one before is saved, so one album photo at a time is
        in memory. One too large for the Bot API or that Telegram refuses is b"" (refused as empty, with its number)."""
        for attachment in files:
            future = asyncio.run_coroutine_threadsafe(self._download(attachment), loop)
            try:
                yield future.result(timeout=DOWNLOAD_WAIT_S)
            except BaseException:
                future.cancel()
                raise

    async def _download(self, attachment: Attachment) -> bytes:
        rt = self.rt
        if attachment.file_size and attachment.file_size > 20 * 1024 * 1024:
            return b""
        try:
            return await download(rt.sender.bot, attachment.file_id, rt.settings.send_retries)
        except BadRequest:
            return b""

    async def ask_remove(self, chat_id: int, user_id: int, name: str) -> tuple[str, InlineKeyboardMarkup | None]:
        """/remove Name: the question, with its confirmation buttons (None: nothing to confirm)."""
        rt = self.rt
        if rt.settings.gallery_layout == "photos":
            return photos_layout_refusal("remove"), None
        try:
            person = await rt.db(rt.gallery.find, unicodedata.normalize("NFKC", name))
        except EngineError as error:
            return f"{error}. Usage: /remove Firstname Lastname", None
        if person is None:
            return f"Nobody called {name} in the gallery. See /people.", None
        token = await rt.db(rt.state.put_button, "remove", chat_id, user_id, {"name": person.name})
        return f"Remove {person.name} and their {person.photos} photos from the gallery?", remove_keyboard(token)

    async def confirm_remove(
        self, token: str, user_id: int, chat_id: int, confirmed: bool
    ) -> tuple[str | None, str | None]:
        """The /remove confirmation pressed: (the button's short answer, the confirmation message's new text)."""
        rt = self.rt
        button = await rt.db(rt.state.button, token, "remove")
        if button is None or button.user_id != user_id:
            return "This confirmation is not yours or has expired.", None
        if not await rt.db(rt.state.claim, f"rm:{token}"):
            return None, None  # pressed twice, or on two replicas: done once
        name = str(button.payload["name"])
        if not confirmed:
            return None, f"Kept {name}."
        try:
            removal = await self.remove(chat_id, name)
        except EngineError as error:
            return None, self.edit_failure("removed", error)
        if removal.index_busy:
            return None, index_busy(f"the removal of {removal.name}")
        counted = f"their {removal.photos} photos" if removal.photos else "their photos"
        note = " The gallery is now empty." if removal.emptied else ""
        return None, f"Removed {removal.name} and {counted}; searches no longer find them.{note}"

    async def rename_args(self, chat_id: int, args: list[str]) -> str:
        """/rename Old Name New Name: the answer."""
        rt = self.rt
        if rt.settings.gallery_layout == "photos":
            return photos_layout_refusal("rename")
        names = await rt.db(split_rename, rt.gallery, [unicodedata.normalize("NFKC", a) for a in args])
        if names is None:
            return "Usage: /rename Old Name New Name (the old name must be in /people; or /rename Old -> New)."
        try:
            new = check_name(names[1])
            result = await self.rename(chat_id, names[0], new)
        except IndexBusyError as error:
            return self.edit_failure("the new name", error)
        except EngineError as error:
            return f"Nothing renamed: {rt.public(str(error))}."
        if result.merged:
            return f"Merged {names[0]} into {result.person.name}: {result.person.photos} photos now."
        return f"Renamed {names[0]} to {result.person.name} ({result.person.photos} photos)."

    def people_page(self, prefix: str, page: int) -> tuple[str, InlineKeyboardMarkup | None]:
        """Blocking (through the runtime's `db`): one /people page, of the people whose names start with `prefix`."""
        people = self.rt.gallery.people(prefix)
        if not people:
            return (f"Nobody in the gallery starts with {prefix!r}." if prefix else "The gallery is empty."), None
        pages = math.ceil(len(people) / PEOPLE_PAGE)
        page = max(0, min(page, pages - 1))
        shown = people[page * PEOPLE_PAGE : (page + 1) * PEOPLE_PAGE]
        total = sum(p.photos for p in people)
        head = f"{len(people)} people, {total} photos" + (f" (names starting with {prefix!r})" if prefix else "")
        lines = [head + (f" — page {page + 1}/{pages}" if pages > 1 else "") + ":"]
        lines += [f"• {p.name} — {p.photos} photo{'s' if p.photos != 1 else ''}" for p in shown]
        return "\n".join(lines), people_keyboard(page, pages, prefix)


def split_rename(gallery: Gallery, args: list[str]) -> tuple[str, str] | None:
    """`Old Name New Name`: the split whose left part is an existing person (or `Old -> New`, `Old | New`)."""
    text = " ".join(args)
    for separator in ("->", "→", "|", "=>"):
        if separator in text:
            old, new = (part.strip() for part in text.split(separator, 1))
            return (old, new) if old and new else None
    candidates = []
    for cut in range(1, len(args)):
        old, new = " ".join(args[:cut]), " ".join(args[cut:])
        try:
            if gallery.find(old) is not None:
                candidates.append((old, new))
        except EngineError:
            continue
    return candidates[-1] if len(candidates) >= 1 else None
