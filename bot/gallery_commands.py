"""Teaching the bot from the chat (admins): /add, /people, /remove, /rename, through `engine.gallery`."""

from __future__ import annotations

import asyncio
import logging
import math
import re

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, User
from telegram.error import BadRequest

from bot.paging import people_keyboard
from engine import EngineError
from engine.gallery import AddResult, check_name

log = logging.getLogger(__name__)

PEOPLE_PAGE = 10
_ADD = re.compile(r"^/add(?:@\w+)?(?:\s+(?P<name>.*))?$", re.DOTALL)
USAGE = (
    "Send one or more photos with the caption /add Firstname Lastname, "
    "or reply /add Firstname Lastname to a photo or an album."
)


def is_add(caption: str | None) -> bool:
    return bool(caption) and _ADD.match(caption.strip()) is not None


def add_name(text: str | None) -> str:
    match = _ADD.match((text or "").strip())
    return (match.group("name") or "").strip() if match else ""


async def add_from_messages(service, messages: list[Message], user: User, text: str | None, bot: Bot) -> None:
    """Admins: check, save and index the photos of `messages` as the person named in `text`."""
    first = messages[0]
    if not service.settings.is_admin(user.id):
        log.warning("user %s tried /add without being an admin", user.id)
        await service._reply(first, "Sorry, /add is for admins only: nothing was added.")
        return
    files = []
    for message in messages:
        if message.photo:
            files.append((message.photo[-1].file_id, message.photo[-1].file_size))
        elif message.document:
            files.append((message.document.file_id, message.document.file_size))
    await add_files(service, first, files, text, bot)


async def add_files(
    service, reply_to: Message, files: list[tuple[str, int | None]], text: str | None, bot: Bot
) -> None:
    name = add_name(text)
    try:
        name = check_name(name)
    except EngineError as error:
        await service._reply(reply_to, f"{error}.\n{USAGE}")
        return
    if not files:
        await service._reply(reply_to, USAGE)
        return
    photos = []
    for file_id, size in files:
        if size and size > 20 * 1024 * 1024:
            photos.append(b"")  # refused by the engine as empty: reported with its number
            continue
        try:
            file = await service.send(lambda: bot.get_file(file_id))
            photos.append(bytes(await service.send(file.download_as_bytearray)))
        except BadRequest:
            photos.append(b"")
    try:
        result = await asyncio.get_running_loop().run_in_executor(
            service.index_pool, service.gallery.add_photos, name, photos
        )
    except EngineError as error:
        await service._reply(reply_to, f"Nothing added: {service.public(str(error))}")
        return
    await service._reply(reply_to, describe_add(result))


def describe_add(result: AddResult) -> str:
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
    for added in result.added:
        if added.duplicate:
            lines.append(f"• Photo {added.number}: already in the gallery.")
        elif added.faces > 1:
            lines.append(f"• Photo {added.number}: {added.faces} faces found — I used the largest one.")
    for refused in result.refused:
        reason = refused.reason.removeprefix(f"photo {refused.number}: ")
        lines.append(f"• Photo {refused.number} refused: {reason}.")
    return "\n".join(lines)


def people_page(service, prefix: str, page: int) -> tuple[str, InlineKeyboardMarkup | None]:
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


def split_rename(service, args: list[str]) -> tuple[str, str] | None:
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
