"""Telegram handlers of the photos layout (GALLERY_LAYOUT=photos): parse, call the service's executor, answer.

"More photos" pages an answer (bot/photos_answer.py); `/people`, `/name`, `/merge`, `/hide` are the persons
commands for admins (bot/people_commands.py). app.py registers them, with one CallbackQueryHandler per button kind.
"""

from __future__ import annotations

from telegram import Update

from bot import people_commands
from bot.handlers import Context, callback_token, message_of, refuse_non_admin


async def more_photos_button(update: Update, context: Context) -> None:
    """ "More photos": the next page; the pressed message loses its button (the page's summary has a new one)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    note = await context.service.photos_answer.more(callback_token(update), user.id)
    await query.answer(note)
    if note is None:
        await query.edit_message_reply_markup(None)


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
    svc = context.service
    shown = await svc.db(people_commands.people_page, svc, page)
    if shown.sheet is None:
        await svc.sender.text(chat_id, shown.text)
        return
    sheet = shown.sheet
    await svc.sender.send(
        lambda: svc.sender.bot.send_photo(chat_id, sheet, caption=shown.text, reply_markup=shown.keyboard)
    )


async def name(update: Update, context: Context) -> None:
    """/name N Firstname Lastname, or /name Firstname Lastname as a reply to an answer (admins)."""
    svc, message = context.service, message_of(update)
    if not await refuse_non_admin(update, svc, "name"):
        return
    args = list(context.args or [])
    number = people_commands.parse_number(args[0]) if args else None
    if number is not None and len(args) > 1:
        text = await svc.db(people_commands.name_person, svc, number, " ".join(args[1:]))
    elif message.reply_to_message is not None and args:
        replied = message.reply_to_message
        text = await svc.db(people_commands.name_replied, svc, replied.chat_id, replied.message_id, " ".join(args))
    else:
        text = people_commands.NAME_USAGE
    await message.reply_text(text)


async def merge(update: Update, context: Context) -> None:
    """/merge N M: person M's faces join person N (admins)."""
    svc, message = context.service, message_of(update)
    if not await refuse_non_admin(update, svc, "merge"):
        return
    numbers = [people_commands.parse_number(arg) for arg in context.args or []]
    if len(numbers) != 2 or numbers[0] is None or numbers[1] is None:
        await message.reply_text(people_commands.MERGE_USAGE)
        return
    await message.reply_text(await svc.db(people_commands.merge_persons, svc, numbers[0], numbers[1]))


async def hide(update: Update, context: Context) -> None:
    """/hide N: never list or name person N again (admins)."""
    svc, message = context.service, message_of(update)
    if not await refuse_non_admin(update, svc, "hide"):
        return
    args = list(context.args or [])
    number = people_commands.parse_number(args[0]) if len(args) == 1 else None
    if number is None:
        await message.reply_text(people_commands.HIDE_USAGE)
        return
    await message.reply_text(await svc.db(people_commands.hide_person, svc, number))
