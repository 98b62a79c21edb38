"""Telegram handlers: thin async functions that check input and call the BotService."""

from __future__ import annotations

import asyncio
import logging

from telegram import Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.service import BotService, looks_like_image
from engine import MODEL_NAMES

log = logging.getLogger(__name__)

HELP = (
    "Send me a photo of a person and I'll find the most similar photos in my gallery of known people.\n\n"
    "/model — show or switch the search backend (facenet: faces; vgg16: whole image)\n"
    "/k — show or set how many matches per face\n"
    "/history — your last queries here\n"
    "/forget — delete your history\n"
    "/help — this message\n"
    "Admins: /stats, /reindex [facenet|vgg16|all]"
)
COMMANDS = [
    ("start", "What this bot does"),
    ("help", "How to use it"),
    ("model", "Show or switch the backend"),
    ("k", "Show or set matches per face"),
    ("history", "Your last queries"),
    ("forget", "Delete your history"),
    ("stats", "Index and usage figures (admins)"),
    ("reindex", "Rebuild the index (admins)"),
]


def service(context: ContextTypes.DEFAULT_TYPE) -> BotService:
    return context.application.bot_data["service"]


async def gatekeeper(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop updates from users outside the allow-list, with one polite answer."""
    user = update.effective_user
    if service(context).settings.is_allowed(user.id if user else None):
        return
    log.warning("refused update from user %s (not in ALLOWED_USER_IDS)", user.id if user else None)
    if update.effective_message is not None:
        await update.effective_message.reply_text("Sorry, this bot is private: you are not on its list of users.")
    raise ApplicationHandlerStop


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Explain the bot in a few lines."""
    await update.effective_message.reply_text(HELP)


async def model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the backends, or switch this chat's backend."""
    svc, message = service(context), update.effective_message
    current, _ = await svc.chat_settings(message.chat_id)
    if not context.args:
        await message.reply_text(svc.model_lines(current))
        return
    name = context.args[0].lower()
    if len(context.args) > 1 or name not in MODEL_NAMES:
        await message.reply_text(f"Unknown backend {' '.join(context.args)!r}. Choose one of: {', '.join(MODEL_NAMES)}.")
        return
    problem = svc.engine.model_problem(name)
    if problem:
        await message.reply_text(f"Can't switch to {name}: {problem}")
        return
    await asyncio.to_thread(svc.store.set_chat_model, message.chat_id, name)
    note = "" if svc.engine.index_info(name) else f" (no {name} index yet: an admin can build it with /reindex {name})"
    await message.reply_text(f"Backend switched to {name}{note}.")


async def k(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show or set how many matches per face this chat gets."""
    svc, message = service(context), update.effective_message
    max_k = svc.settings.max_k
    if not context.args:
        _, current = await svc.chat_settings(message.chat_id)
        await message.reply_text(f"Matches per face: {current}. Set with /k <1..{max_k}>.")
        return
    value = context.args[0]
    if len(context.args) > 1 or not value.isdigit() or not 1 <= int(value) <= max_k:
        await message.reply_text(f"k must be a whole number from 1 to {max_k}, e.g. /k 5.")
        return
    await asyncio.to_thread(svc.store.set_chat_k, message.chat_id, int(value))
    await message.reply_text(f"Matches per face set to {int(value)}.")


async def history(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List this user's last queries in this chat."""
    svc, message = service(context), update.effective_message
    items = await asyncio.to_thread(svc.store.history, message.chat_id, update.effective_user.id, svc.settings.history_size)
    if not items:
        await message.reply_text("No queries yet. Send me a photo!")
        return
    lines = [f"Your last {len(items)} queries:"]
    for item in items:
        top = f"{item.top_name} {item.top_similarity:.2f}" if item.top_name else "no face found"
        lines.append(f"{item.created_at:%Y-%m-%d %H:%M} UTC · {item.model} · {top}")
    await message.reply_text("\n".join(lines))


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete this user's history in this chat."""
    svc, message = service(context), update.effective_message
    count = await asyncio.to_thread(svc.store.forget, message.chat_id, update.effective_user.id)
    await message.reply_text(f"Deleted {count} queries from your history." if count else "Your history is already empty.")


async def stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Index sizes and usage figures, for admins."""
    svc, message = service(context), update.effective_message
    if not await refuse_non_admin(update, svc, "stats"):
        return
    lines = ["Indexes:"]
    for name in MODEL_NAMES:
        info = svc.engine.index_info(name)
        lines.append(f"• {name}: {info.count} entries, built {info.built_at}" if info else f"• {name}: no index")
    figures = await asyncio.to_thread(svc.store.stats)
    median = f"{figures.median_latency_ms:.0f} ms" if figures.median_latency_ms is not None else "n/a"
    lines.append(f"Queries: {figures.queries} from {figures.users} users; median latency {median}")
    if svc.reindex_job is not None:
        lines.append(svc.reindex_job.text())
    await message.reply_text("\n".join(lines))


async def reindex(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Rebuild an index (admins), or report the progress of the running rebuild."""
    svc, message = service(context), update.effective_message
    if not await refuse_non_admin(update, svc, "reindex"):
        return
    arg = context.args[0].lower() if context.args else None
    if arg == "all":
        models = [name for name in MODEL_NAMES if svc.engine.model_problem(name) is None]
    elif arg is None:
        models = [(await svc.chat_settings(message.chat_id))[0]]
    elif arg in MODEL_NAMES:
        models = [arg]
    else:
        await message.reply_text(f"Usage: /reindex [{'|'.join(MODEL_NAMES)}|all]")
        return
    for name in models:
        problem = svc.engine.model_problem(name)
        if problem:
            await message.reply_text(f"Can't reindex {name}: {problem}")
            return
    if not models:
        await message.reply_text("No backend is available to reindex.")
        return
    if svc.reindex_job is not None:  # checked right before reindex() claims the slot: no await in between
        await message.reply_text(f"A reindex is already running. {svc.reindex_job.text()}")
        return
    await svc.reindex(message, models)


async def refuse_non_admin(update: Update, svc: BotService, command: str) -> bool:
    """True for admins; otherwise answer with a refusal, log it and return False."""
    user = update.effective_user
    if svc.settings.is_admin(user.id if user else None):
        return True
    log.warning("user %s tried /%s without being an admin", user.id if user else None, command)
    await update.effective_message.reply_text(f"Sorry, /{command} is for admins only.")
    return False


async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Search the faces of a photo and answer with albums of the closest gallery photos."""
    await service(context).answer_photo(update.effective_message, update.effective_user, context.bot)


async def document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Search an image sent as a file; refuse other files."""
    message = update.effective_message
    if not looks_like_image(message.document.file_name, message.document.mime_type):
        await message.reply_text("That file isn't an image. Please send a photo (JPEG, PNG or WebP).")
        return
    await service(context).answer_photo(message, update.effective_user, context.bot)


async def unsupported(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Explain that stickers, GIFs, videos and voice messages can't be searched."""
    message = update.effective_message
    if message.sticker:
        what = "a sticker"
    elif message.animation:
        what = "a GIF/animation"
    elif message.video or message.video_note:
        what = "a video"
    elif message.voice or message.audio:
        what = "a voice or audio message"
    else:
        what = "this kind of message"
    await message.reply_text(f"I can't search {what}. Please send a photo of a face.")


async def text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Point plain text to what the bot does."""
    await update.effective_message.reply_text("Send me a photo of a face and I'll look for that person. /help explains more.")


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Point unknown commands to /help."""
    await update.effective_message.reply_text("I don't know that command. See /help.")


async def error_handler(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the error with its traceback and tell the user something went wrong."""
    log.error("exception while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        try:
            await update.effective_message.reply_text("Sorry, something went wrong. Please try again.")
        except Exception:  # noqa: BLE001 - the error handler must not raise
            log.exception("could not tell the user about the error")
