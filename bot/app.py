"""The one place that wires the bot: the python-telegram-bot Application with its handlers (bot/handlers/, each
registered here with its filter or callback pattern), rate limiter, start-up and shut-down hooks (the BotService of
bot/lifecycle.py), and how it runs (long polling or a webhook)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlparse

from telegram import BotCommand, Update
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.handlers import access, commands, errors, follow, gallery, invites, optout, originals, persons, search
from bot.handlers.context import BotApplication, Context
from bot.lifecycle import BotService
from bot.settings import Settings
from engine import Engine

log = logging.getLogger(__name__)

# The update types the handlers use: Telegram is asked for these only (edited messages, channel posts... are not sent).
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]


class AccessNotConfiguredError(ValueError):
    """ALLOWED_USER_IDS is empty: the bot does not start (see Settings.access_problem)."""


def build_application(settings: Settings, engine: Engine | None = None) -> BotApplication:
    """The bot, ready for `run_polling`/`run_webhook` or `async with app: await app.start()`.

    `engine` lets a caller (tests, benchmarks) share one already-loaded Engine.
    """
    if not settings.token():
        raise ValueError("BOT_TOKEN is not set")
    problem = settings.access_problem()
    if problem:
        raise AccessNotConfiguredError(problem)
    service = BotService(settings, engine)

    async def post_init(application: Application) -> None:
        await service.start(application)
        await application.bot.set_my_commands([BotCommand(name, about) for name, about in commands.COMMANDS])
        log.info("bot @%s ready", application.bot.username)

    async def post_stop(application: Application) -> None:
        await service.stop()  # the Telegram client still works: a stopped /reindex can say so

    async def post_shutdown(application: Application) -> None:
        await service.close()

    application = cast(
        BotApplication,
        (
            ApplicationBuilder()
            .token(settings.token())
            .base_url(settings.base_url)
            .base_file_url(settings.base_file_url)
            .local_mode(False)
            .rate_limiter(AIORateLimiter(max_retries=settings.send_retries))
            .concurrent_updates(True)
            .context_types(ContextTypes(context=Context))
            .post_init(post_init)
            .post_stop(post_stop)
            .post_shutdown(post_shutdown)
            .build()
        ),
    )
    application.bot_data["service"] = service
    add_handlers(application)
    return application


def add_handlers(application: BotApplication) -> None:
    """Message handlers match new messages only (`UpdateType.MESSAGE`): an edited photo is not searched again."""
    new = filters.UpdateType.MESSAGE
    application.add_handler(TypeHandler(Update, access.gatekeeper), group=-1)
    # `/start CODE` (an invite's deep link) before the plain /start
    application.add_handler(CommandHandler("start", invites.start_with_code, filters=new, has_args=True))
    handlers = [
        (["start", "help"], commands.start), ("model", commands.model), ("k", commands.k),
        ("history", commands.history), ("forget", commands.forget), ("stats", commands.stats),
        ("reindex", commands.reindex), ("add", gallery.add), ("people", gallery.people), ("remove", gallery.remove),
        ("rename", gallery.rename),
    ]  # fmt: skip
    if application.bot_data["service"].settings.gallery_layout == "photos":  # persons found by clustering
        handlers[handlers.index(("people", gallery.people))] = ("people", persons.people)
    handlers += [("name", persons.name), ("merge", persons.merge), ("hide", persons.hide)]
    handlers += [("invite", invites.invite), ("invites", invites.invites), ("revoke", invites.revoke)]
    handlers += [("follow", follow.follow), ("following", follow.following), ("unfollow", follow.unfollow)]
    handlers += [("optout", optout.optout)]
    for names, callback in handlers:
        application.add_handler(CommandHandler(names, callback, filters=new))
    buttons = [
        ("more", search.more_button), ("faces", search.faces_button), ("people", gallery.people_button),
        ("rm|rmno", gallery.remove_button), ("pmore", search.more_photos_button),
        ("persons", persons.people_button), ("orig", originals.originals_button),
        ("consent", follow.consent_button), ("follow", follow.follow_button),
        ("agree", invites.agree_button), ("optout", optout.optout_button),
    ]  # fmt: skip
    for kinds, callback in buttons:
        application.add_handler(CallbackQueryHandler(callback, pattern=f"^(?:{kinds}):"))
    unsupported = (
        filters.Sticker.ALL | filters.ANIMATION | filters.VIDEO | filters.VIDEO_NOTE | filters.VOICE | filters.AUDIO
    )
    application.add_handler(MessageHandler(new & unsupported, search.unsupported))
    application.add_handler(MessageHandler(new & filters.PHOTO, search.photo))
    application.add_handler(MessageHandler(new & filters.Document.ALL, search.document))
    application.add_handler(MessageHandler(new & filters.COMMAND, commands.unknown_command))
    application.add_handler(MessageHandler(new & filters.TEXT, commands.text))
    application.add_handler(
        MessageHandler(new & filters.ChatType.PRIVATE & ~filters.StatusUpdate.ALL, search.unsupported)
    )
    application.add_error_handler(errors.error_handler)


# What the webhook secret derived from the bot token is keyed with (changing it changes every derived secret).
WEBHOOK_SECRET_LABEL = b"facesearch-bot webhook secret v1"


def webhook_secret(settings: Settings) -> str:
    """WEBHOOK_SECRET, or one derived from BOT_TOKEN: webhook calls without it are refused (403).

    The derived secret is HMAC-SHA256(key=BOT_TOKEN, WEBHOOK_SECRET_LABEL) in hex (64 characters, valid for Telegram's
    secret_token): every replica with the same token registers and accepts the same secret, at every start, and it
    reveals nothing of the token (whoever knows the token can reset the webhook anyway).
    """
    if settings.webhook_secret is not None and settings.webhook_secret.get_secret_value():
        return settings.webhook_secret.get_secret_value()
    log.info("WEBHOOK_SECRET is not set: using a secret derived from BOT_TOKEN (the same on every replica)")
    return hmac.new(settings.token().encode(), WEBHOOK_SECRET_LABEL, hashlib.sha256).hexdigest()


def run(settings: Settings) -> None:
    """Run until interrupted: long polling, or a webhook when WEBHOOK_URL is set."""
    application = build_application(settings)
    if settings.webhook_url:
        application.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=urlparse(settings.webhook_url).path.lstrip("/"),
            webhook_url=settings.webhook_url,
            secret_token=webhook_secret(settings),
            allowed_updates=ALLOWED_UPDATES,
        )
    else:
        application.run_polling(allowed_updates=ALLOWED_UPDATES)


@contextlib.asynccontextmanager
async def running(application: Application, poll_interval: float = 0.0, timeout: int = 1) -> AsyncIterator[Application]:
    """Run the bot inside the current event loop (tests, benchmarks), with the same hooks as run_polling."""
    updater = application.updater
    assert updater is not None
    async with application:
        if application.post_init is not None:
            await application.post_init(application)
        await updater.start_polling(poll_interval=poll_interval, timeout=timeout, allowed_updates=ALLOWED_UPDATES)
        await application.start()
        try:
            yield application
        finally:
            await updater.stop()
            await application.stop()
            if application.post_stop is not None:
                await application.post_stop(application)
            if application.post_shutdown is not None:
                await application.post_shutdown(application)
