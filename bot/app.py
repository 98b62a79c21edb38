"""Build the python-telegram-bot Application: handlers, rate limiter, start-up and shut-down hooks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlparse

from telegram import BotCommand, Update
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import handlers
from bot.service import BotService
from bot.settings import Settings
from engine import Engine

log = logging.getLogger(__name__)


def build_application(settings: Settings, engine: Engine | None = None) -> Application:
    """The bot, ready for `run_polling`/`run_webhook` or `async with app: await app.start()`.

    `engine` lets a caller (tests, benchmarks) share one already-loaded Engine.
    """
    if not settings.bot_token:
        raise ValueError("BOT_TOKEN is not set")
    service = BotService(settings, engine)

    async def post_init(application: Application) -> None:
        await service.start()
        await application.bot.set_my_commands([BotCommand(name, about) for name, about in handlers.COMMANDS])
        log.info("bot @%s ready", application.bot.username)

    async def post_shutdown(application: Application) -> None:
        await service.close()

    application = (
        ApplicationBuilder()
        .token(settings.bot_token)
        .base_url(settings.base_url)
        .base_file_url(settings.base_file_url)
        .local_mode(False)
        .rate_limiter(AIORateLimiter(max_retries=2))
        .concurrent_updates(True)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    application.bot_data["service"] = service
    add_handlers(application)
    return application


def add_handlers(application: Application) -> None:
    application.add_handler(TypeHandler(Update, handlers.gatekeeper), group=-1)
    application.add_handler(CommandHandler(["start", "help"], handlers.start))
    application.add_handler(CommandHandler("model", handlers.model))
    application.add_handler(CommandHandler("k", handlers.k))
    application.add_handler(CommandHandler("history", handlers.history))
    application.add_handler(CommandHandler("forget", handlers.forget))
    application.add_handler(CommandHandler("stats", handlers.stats))
    application.add_handler(CommandHandler("reindex", handlers.reindex))
    unsupported = filters.Sticker.ALL | filters.ANIMATION | filters.VIDEO | filters.VIDEO_NOTE | filters.VOICE | filters.AUDIO
    application.add_handler(MessageHandler(unsupported, handlers.unsupported))
    application.add_handler(MessageHandler(filters.PHOTO, handlers.photo))
    application.add_handler(MessageHandler(filters.Document.ALL, handlers.document))
    application.add_handler(MessageHandler(filters.COMMAND, handlers.unknown_command))
    application.add_handler(MessageHandler(filters.TEXT, handlers.text))
    application.add_handler(MessageHandler(filters.ChatType.PRIVATE & ~filters.StatusUpdate.ALL, handlers.unsupported))
    application.add_error_handler(handlers.error_handler)


def run(settings: Settings) -> None:
    """Run until interrupted: long polling, or a webhook when WEBHOOK_URL is set."""
    application = build_application(settings)
    if settings.webhook_url:
        application.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=urlparse(settings.webhook_url).path.lstrip("/"),
            webhook_url=settings.webhook_url,
            secret_token=settings.webhook_secret,
            allowed_updates=Update.ALL_TYPES,
        )
    else:
        application.run_polling(allowed_updates=Update.ALL_TYPES)


@contextlib.asynccontextmanager
async def running(application: Application, poll_interval: float = 0.0, timeout: int = 1) -> AsyncIterator[Application]:
    """Run the bot inside the current event loop (tests, benchmarks), with the same hooks as run_polling."""
    async with application:
        if application.post_init is not None:
            await application.post_init(application)
        await application.updater.start_polling(poll_interval=poll_interval, timeout=timeout, allowed_updates=Update.ALL_TYPES)
        await application.start()
        try:
            yield application
        finally:
            await application.updater.stop()
            await application.stop()
            if application.post_shutdown is not None:
                await application.post_shutdown(application)
