"""Handlers of following (live events): /follow as a reply to a selfie (a selfie captioned /follow is routed by
bot/lifecycle.py), /following, /unfollow, and the buttons "I agree" and "New photos of me". The flow is
bot/services/follow.py."""

from __future__ import annotations

from telegram import Update

from bot.delivery import attachment_of
from bot.handlers.context import Context, callback_token, message_of
from bot.services.follow import HOW_TO_FOLLOW, ONLY_EVENTS, Selfie, follow_choice


async def follow(update: Update, context: Context) -> None:
    """/follow as a reply to the user's selfie (or /follow N: face N of it); alone, how to follow."""
    message, user = message_of(update), update.effective_user
    assert user is not None
    replied = message.reply_to_message
    attachment = attachment_of(replied) if replied is not None else None
    if context.service.settings.gallery_layout != "photos":
        await message.reply_text(ONLY_EVENTS)
        return
    if attachment is None:
        await message.reply_text(HOW_TO_FOLLOW)
        return
    if replied is not None and replied.from_user is not None and replied.from_user.id != user.id:
        await message.reply_text("Reply /follow to a selfie of your own.")
        return
    selfie = Selfie(attachment.file_id, attachment.file_size, attachment.name)
    await context.service.follow.follow(message.chat_id, user.id, [selfie], follow_choice(message.text))


async def following(update: Update, context: Context) -> None:
    """What this user follows, since and until when, and how many photos went."""
    message, user = message_of(update), update.effective_user
    assert user is not None
    await message.reply_text(await context.service.follow.following(user.id))


async def unfollow(update: Update, context: Context) -> None:
    """Stop following: the face template is deleted at once."""
    message, user = message_of(update), update.effective_user
    assert user is not None
    await message.reply_text(await context.service.follow.unfollow(user.id))


async def consent_button(update: Update, context: Context) -> None:
    """ "I agree": record the agreement and start following; the button goes."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and query.message is not None
    note = await context.service.follow.agree(callback_token(update), user.id, query.message.chat.id)
    await query.answer(note)
    if note is None:
        await query.edit_message_reply_markup(None)


async def follow_button(update: Update, context: Context) -> None:
    """ "New photos of me": how to follow (the answer's query photo is not kept, so it cannot be used)."""
    query = update.callback_query
    assert query is not None and query.message is not None
    await query.answer()
    await context.bot.send_message(query.message.chat.id, HOW_TO_FOLLOW)
