"""What every handler shares: the handlers' `Context` (its `service` is the running bot), the application's type, and
small helpers (the update's message, a button's token, the admins-only check)."""

from __future__ import annotations

import logging
from typing import Any

from telegram import Message, Update
from telegram.ext import Application, CallbackContext, ExtBot

from bot.lifecycle import BotService

log = logging.getLogger(__name__)


class Context(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """The handlers' context (ContextTypes(context=Context)): `context.service` is the bot's BotService."""

    @property
    def service(self) -> BotService:
        service: BotService = self.application.bot_data["service"]
        return service


BotApplication = Application[ExtBot[None], Context, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any]


def message_of(update: Update) -> Message:
    """The update's message: every handler but the buttons' is registered for messages only."""
    assert update.effective_message is not None
    return update.effective_message


def callback_token(update: Update) -> str:
    """What a button's callback data carries after its kind (`kind:token`)."""
    assert update.callback_query is not None
    return (update.callback_query.data or "").partition(":")[2]


async def refuse_non_admin(update: Update, svc: BotService, command: str) -> bool:
    """True for admins; otherwise answer with a refusal, log it and return False."""
    user = update.effective_user
    if svc.settings.is_admin(user.id if user else None):
        return True
    log.warning("user %s tried /%s without being an admin", user.id if user else None, command)
    await message_of(update).reply_text(f"Sorry, /{command} is for admins only.")
    return False
