"""The gatekeeper: updates without a sender are dropped, and users outside ALLOWED_USER_IDS are refused politely
(told at most once per REFUSAL_INTERVAL_S: bot/refusals.py) before any other handler runs."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ApplicationHandlerStop

from bot.handlers.context import Context

log = logging.getLogger(__name__)


NOT_ALLOWED = "Sorry, this bot is private: you are not on its list of users."


async def gatekeeper(update: Update, context: Context) -> None:
    """Stop updates without a user (channel posts) silently, and those of users outside the allow-list politely.

    A stranger is told (and logged) once per REFUSAL_INTERVAL_S; every refused update is counted (metrics). A refused
    button press is always answered as a callback (a notice on the button, no chat message).
    """
    user, svc = update.effective_user, context.service
    if user is None:
        log.info("ignored an update without a sender (update %s)", update.update_id)
        raise ApplicationHandlerStop
    if svc.settings.is_allowed(user.id):
        return
    svc.metrics.error("not_allowed")
    first = svc.runtime.refusals.first(user.id)
    if first:
        log.warning(
            "refused updates from user %s (not in ALLOWED_USER_IDS); told once, their next ones for %g s are dropped",
            user.id,
            svc.settings.refusal_interval_s,
        )
    if update.callback_query is not None:
        await update.callback_query.answer(NOT_ALLOWED)
    elif first and update.effective_message is not None:
        await update.effective_message.reply_text(NOT_ALLOWED)
    raise ApplicationHandlerStop
