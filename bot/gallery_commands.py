"""Teaching the bot from the chat (admins): /add, /people, /remove, /rename: parsing and answers.

The edits themselves (engine and database work) are the service's gallery verbs (bot/gallery_service.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest

from bot.delivery import Attachment, download
from bot.paging import people_keyboard
from engine import EngineError
from engine.errors import IndexBusyError
from engine.gallery import AddedPhoto, AddResult, check_name

if TYPE_CHECKING:
    from bot.service import BotService

log = logging.getLogger(__name__)

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


def edit_failure(svc: BotService, what: str, error: EngineError) -> str:
    if isinstance(error, IndexBusyError):
        return index_busy(what)
    return f"Nothing {what}: {svc.public(str(error))}"


async def add(svc: BotService, chat_id: int, user_id: int, files: list[Attachment], text: str | None) -> None:
    """Admins: check, save and index the photos of `files` as the person named in `text`."""
    send = svc.sender
    if not svc.settings.is_admin(user_id):
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
    photos = _downloads(svc, files, asyncio.get_running_loop())
    try:
        result = await svc.gallery_service.add(chat_id, name, photos)
    except IndexBusyError as error:
        await send.text(chat_id, edit_failure(svc, "the new photos", error))
        return
    except EngineError as error:
        await send.text(chat_id, f"Nothing added: {svc.public(str(error))}")
        return
    await send.text(chat_id, describe_add(result, svc.settings.gallery_layout))


def _downloads(svc: BotService, files: list[Attachment], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """The photos of `files` for `Gallery.add_photos`, which takes them in the index thread: each downloaded (on the
    event loop `loop`) only when the engine asks for it, once the one before is saved, so one album photo at a time is
    in memory. One too large for the Bot API or that Telegram refuses is b"" (refused as empty, with its number)."""
    for attachment in files:
        future = asyncio.run_coroutine_threadsafe(_download(svc, attachment), loop)
        try:
            yield future.result(timeout=DOWNLOAD_WAIT_S)
        except BaseException:
            future.cancel()
            raise


async def _download(svc: BotService, attachment: Attachment) -> bytes:
    if attachment.file_size and attachment.file_size > 20 * 1024 * 1024:
        return b""
    try:
        return await download(svc.sender.bot, attachment.file_id, svc.settings.send_retries)
    except BadRequest:
        return b""


def photos_layout_refusal(command: str) -> str:
    """/remove and /rename in the photos layout: folders hold event photos there, not persons (refused)."""
    done = "deletes" if command == "remove" else "renames"
    return (
        f"In a photos gallery /{command} {done} no folder: folders hold event photos, and persons are found in them. "
        "Use /hide N to never show or name person N, /name N New Name to name or rename one, /merge N M to merge "
        "person M into N (numbers as /people shows them). Nothing was changed."
    )


async def ask_remove(svc: BotService, chat_id: int, user_id: int, name: str) -> tuple[str, InlineKeyboardMarkup | None]:
    if svc.settings.gallery_layout == "photos":
        return photos_layout_refusal("remove"), None
    try:
        person = await svc.db(svc.gallery.find, unicodedata.normalize("NFKC", name))
    except EngineError as error:
        return f"{error}. Usage: /remove Firstname Lastname", None
    if person is None:
        return f"Nobody called {name} in the gallery. See /people.", None
    token = await svc.db(svc.state.put_button, "remove", chat_id, user_id, {"name": person.name})
    return f"Remove {person.name} and their {person.photos} photos from the gallery?", remove_keyboard(token)


async def confirm_remove(
    svc: BotService, token: str, user_id: int, chat_id: int, confirmed: bool
) -> tuple[str | None, str | None]:
    """(the button's short answer, the confirmation message's new text)."""
    button = await svc.db(svc.state.button, token, "remove")
    if button is None or button.user_id != user_id:
        return "This confirmation is not yours or has expired.", None
    if not await svc.db(svc.state.claim, f"rm:{token}"):
        return None, None  # pressed twice, or on two replicas: done once
    name = str(button.payload["name"])
    if not confirmed:
        return None, f"Kept {name}."
    try:
        removal = await svc.gallery_service.remove(chat_id, name)
    except EngineError as error:
        return None, edit_failure(svc, "removed", error)
    if removal.index_busy:
        return None, index_busy(f"the removal of {removal.name}")
    counted = f"their {removal.photos} photos" if removal.photos else "their photos"
    note = " The gallery is now empty." if removal.emptied else ""
    return None, f"Removed {removal.name} and {counted}; searches no longer find them.{note}"


async def rename(svc: BotService, chat_id: int, args: list[str]) -> str:
    if svc.settings.gallery_layout == "photos":
        return photos_layout_refusal("rename")
    names = await svc.db(split_rename, svc, [unicodedata.normalize("NFKC", a) for a in args])
    if names is None:
        return "Usage: /rename Old Name New Name (the old name must be in /people; or /rename Old -> New)."
    try:
        new = check_name(names[1])
        result = await svc.gallery_service.rename(chat_id, names[0], new)
    except IndexBusyError as error:
        return edit_failure(svc, "the new name", error)
    except EngineError as error:
        return f"Nothing renamed: {svc.public(str(error))}."
    if result.merged:
        return f"Merged {names[0]} into {result.person.name}: {result.person.photos} photos now."
    return f"Renamed {names[0]} to {result.person.name} ({result.person.photos} photos)."


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


def people_page(service: BotService, prefix: str, page: int) -> tuple[str, InlineKeyboardMarkup | None]:
    people = service.gallery.people(prefix)
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


def remove_keyboard(token: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Yes, remove", callback_data=f"rm:{token}"),
                InlineKeyboardButton("Cancel", callback_data=f"rmno:{token}"),
            ]
        ]
    )


def split_rename(service: BotService, args: list[str]) -> tuple[str, str] | None:
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
            if service.gallery.find(old) is not None:
                candidates.append((old, new))
        except EngineError:
            continue
    return candidates[-1] if len(candidates) >= 1 else None
