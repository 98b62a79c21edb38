"""Handlers of opting out: /optout as a reply to one's own selfie (a selfie captioned /optout is routed by
bot/lifecycle.py) and the "Hide me" button. The flow is bot/services/optouts.py."""

from __future__ import annotations

from telegram import Update

from bot.delivery import attachment_of
from bot.handlers.context import Context, callback_token, message_of
from bot.services.optouts import HOW_TO_OPT_OUT, optout_choice


async def optout(update: Update, context: Context) -> None:
    """/optout as a reply to the user's selfie (or /optout N: face N of it); alone, how to opt out."""
    message, user = message_of(update), update.effective_user
    assert user is not None
    replied = message.reply_to_message
    attachment = attachment_of(replied) if replied is not None else None
    if attachment is None:
        await message.reply_text(HOW_TO_OPT_OUT)
        return
    if replied is not None and replied.from_user is not None and replied.from_user.id != user.id:
        await message.reply_text("Reply /optout to a selfie of your own.")
        return
    await context.service.optouts.optout(message.chat_id, user.id, attachment, optout_choice(message.text))


async def optout_button(update: Update, context: Context) -> None:
    """ "Hide me": store the opt-out and hide the person; the button goes."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and query.message is not None
    note = await context.service.optouts.confirm(callback_token(update), user.id, query.message.chat.id)
    await query.answer(note)
    if note is None:
        await query.edit_message_reply_markup(None)
