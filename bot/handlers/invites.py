"""Handlers of invite links (issue 22): `/start CODE` (a deep link), the admins' `/invite [uses] [days]`, `/invites`
and `/revoke CODE`, and the "I agree" button of the consent notice. The flow is bot/services/invites.py."""

from __future__ import annotations

from telegram import Update

from bot.handlers.context import Context, callback_token, message_of, refuse_non_admin


async def start_with_code(update: Update, context: Context) -> None:
    """`/start CODE`: admit with an invite code, or say it is no longer valid."""
    message, user = message_of(update), update.effective_user
    assert user is not None
    answer = await context.service.invites.start(user.id, " ".join(context.args or []))
    await message.reply_text(answer or "Send me a photo of a face and I'll look for that person. /help explains more.")


async def invite(update: Update, context: Context) -> None:
    """A new invite link and its QR code (admins)."""
    svc, message, user = context.service, message_of(update), update.effective_user
    if not await refuse_non_admin(update, svc, "invite"):
        return
    assert user is not None
    made = await svc.invites.make(user.id, list(context.args or []))
    if made.refusal is not None:
        await message.reply_text(made.refusal)
        return
    await svc.invites.send_invite(message.chat_id, made)


async def invites(update: Update, context: Context) -> None:
    """The live invite links (admins)."""
    if await refuse_non_admin(update, context.service, "invites"):
        await message_of(update).reply_text(await context.service.invites.live_lines())


async def revoke(update: Update, context: Context) -> None:
    """End an invite link (admins)."""
    if await refuse_non_admin(update, context.service, "revoke"):
        await message_of(update).reply_text(await context.service.invites.revoke(list(context.args or [])))


async def agree_button(update: Update, context: Context) -> None:
    """ "I agree": record the consent, then search the photo that waited; the notice loses its button."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    note = await context.service.invites.agree(callback_token(update), user.id)
    await query.answer(note)
    if note is None:
        await query.edit_message_reply_markup(None)
