""" "Download originals" and "More originals": the gallery files themselves (bot/services/originals.py)."""

from __future__ import annotations

from telegram import Update

from bot.handlers.context import Context


async def originals_button(update: Update, context: Context) -> None:
    """Send a page of the answer's gallery files as documents."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    await query.answer(await context.service.originals.pressed((query.data or "").partition(":")[2], user.id))
