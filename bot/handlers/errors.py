"""The one error handler: an exception a handler did not catch is logged with its traceback, and the user is told."""

from __future__ import annotations

import logging

from telegram import Update

from bot.handlers.context import Context

log = logging.getLogger(__name__)


async def error_handler(update: object, context: Context) -> None:
    """Log the error with its traceback and tell the user something went wrong."""
    log.error("exception while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        try:
            await update.effective_message.reply_text("Sorry, something went wrong. Please try again.")
        except Exception:
            log.exception("could not tell the user about the error")
