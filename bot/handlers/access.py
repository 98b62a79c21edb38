"""The gatekeeper: updates without a sender are dropped, and users outside ALLOWED_USER_IDS are refused politely
(told at most once per REFUSAL_INTERVAL_S: bot/refusals.py) before any other handler runs. In invite mode
(ALLOWED_USER_IDS=invite) users admitted by an invite link pass too, and a `/start CODE` goes on to the invite
handler (bot/services/invites.py decides both)."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ApplicationHandlerStop

from bot.handlers.context import Context
from bot.services.invites import NOT_ALLOWED

log = logging.getLogger(__name__)

__all__ = ["NOT_ALLOWED", "gatekeeper"]


async def gatekeeper(update: Update, context: Context) -> None:
    """Stop updates without a user (channel posts) silently, and those of users outside the allow-list politely.

    A stranger is told (and logged) once per REFUSAL_INTERVAL_S; every refused update is counted (metrics). A refused
    button press is always answered as a callback (a notice on the button, no chat message).
    """
    user, svc = update.effective_user, context.service
    if user is None:
        log.info("ignored an update without a sender (update %s)", update.update_id)
        raise ApplicationHandlerStop
    if await svc.invites.admits(user.id) or svc.invites.lets_through(update.effective_message):
        return  # allowed, admitted by an invite, or a `/start CODE` for the invite handler (invite mode)
    svc.metrics.error("not_allowed")
    first = svc.runtime.refusals.first(user.id)
    if first:
        log.warning(
            "refused updates from user %s (not in ALLOWED_USER_IDS); told once, their next ones for %g s are dropped",
            user.id,
            svc.settings.refusal_interval_s,
        )
    await svc.invites.refused(first)
    refusal = svc.invites.refusal_text()
    if update.callback_query is not None:
        await update.callback_query.answer(refusal)
    elif first and update.effective_message is not None:
        await update.effective_message.reply_text(refusal)
    raise ApplicationHandlerStop
