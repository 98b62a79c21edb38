"""Handlers of the photos layout's persons (GALLERY_LAYOUT=photos), for admins: `/people` (numbered face
thumbnails, paged with buttons), `/name`, `/merge`, `/hide`. The work and its texts are bot/services/persons.py,
run through the runtime's executor; app.py registers these, with one CallbackQueryHandler per button kind.
"""

from __future__ import annotations

from telegram import Update

from bot.handlers.context import Context, callback_token, message_of, refuse_non_admin
from bot.services import persons


async def people(update: Update, context: Context) -> None:
    """/people: the first page of persons as numbered face thumbnails (admins)."""
    svc, message = context.service, message_of(update)
    if not await refuse_non_admin(update, svc, "people"):
        return
    await _send_people_page(context, message.chat_id, 0)


async def people_button(update: Update, context: Context) -> None:
    """/people pages: the pressed page is sent as a new photo; the old one loses its buttons."""
    svc, query, user = context.service, update.callback_query, update.effective_user
    assert query is not None and user is not None and query.message is not None
    if not svc.settings.is_admin(user.id):
        await query.answer("For admins only.")
        return
    page = callback_token(update)
    await query.answer()
    await query.edit_message_reply_markup(None)
    await _send_people_page(context, query.message.chat.id, int(page) if page.isdigit() else 0)


async def _send_people_page(context: Context, chat_id: int, page: int) -> None:
    """One /people page: the contact sheet with its caption and buttons (or the text alone: no person yet)."""
    svc = context.service
    shown = await svc.db(svc.persons.people_page, page)
    if shown.sheet is None:
        await svc.runtime.sender.text(chat_id, shown.text)
        return
    sheet = shown.sheet
    await svc.runtime.sender.send(
        lambda: svc.runtime.sender.bot.send_photo(chat_id, sheet, caption=shown.text, reply_markup=shown.keyboard)
    )


async def name(update: Update, context: Context) -> None:
    """/name N Firstname Lastname, or /name Firstname Lastname as a reply to an answer (admins)."""
    svc, message = context.service, message_of(update)
    if not await refuse_non_admin(update, svc, "name"):
        return
    args = list(context.args or [])
    number = persons.parse_number(args[0]) if args else None
    if number is not None and len(args) > 1:
        text = await svc.db(svc.persons.name_person, number, " ".join(args[1:]))
    elif message.reply_to_message is not None and args:
        replied = message.reply_to_message
        text = await svc.db(svc.persons.name_replied, replied.chat_id, replied.message_id, " ".join(args))
    else:
        text = persons.NAME_USAGE
    await message.reply_text(text)


async def merge(update: Update, context: Context) -> None:
    """/merge N M: person M's faces join person N (admins)."""
    svc, message = context.service, message_of(update)
    if not await refuse_non_admin(update, svc, "merge"):
        return
    numbers = [persons.parse_number(arg) for arg in context.args or []]
    if len(numbers) != 2 or numbers[0] is None or numbers[1] is None:
        await message.reply_text(persons.MERGE_USAGE)
        return
    await message.reply_text(await svc.db(svc.persons.merge_persons, numbers[0], numbers[1]))


async def hide(update: Update, context: Context) -> None:
    """/hide N: never list or name person N again (admins)."""
    svc, message = context.service, message_of(update)
    if not await refuse_non_admin(update, svc, "hide"):
        return
    args = list(context.args or [])
    number = persons.parse_number(args[0]) if len(args) == 1 else None
    if number is None:
        await message.reply_text(persons.HIDE_USAGE)
        return
    await message.reply_text(await svc.db(svc.persons.hide_person, number))
