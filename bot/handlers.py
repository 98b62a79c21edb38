"""Telegram handlers: thin async functions that check input and call the BotService."""

from __future__ import annotations

import logging
from typing import Any

from telegram import Message, Update
from telegram.ext import Application, ApplicationHandlerStop, CallbackContext, ExtBot

from bot import gallery_commands
from bot.db import REMOVED
from bot.delivery import Attachment, attachment_of
from bot.service import BotService, looks_like_image
from engine import MODEL_NAMES
from engine.backends import BACKENDS

log = logging.getLogger(__name__)


def help_text() -> str:
    """/start and /help: what the bot does, its commands, and the registered models (engine.backends)."""
    backends = "; ".join(
        f"{name}: {'faces' if backend.embeds_faces else 'whole image'}" for name, backend in BACKENDS.items()
    )
    return (
        "Send me a photo of a person and I'll find the most similar photos in my gallery of known people.\n\n"
        f"/model — show or switch the search backend ({backends})\n"
        "/k — show or set how many matches per face\n"
        "/history — your last queries here\n"
        "/forget — delete your history\n"
        "/help — this message\n"
        f"Admins: /stats, {reindex_usage()}, /people [prefix], /remove Name, /rename Old Name New Name, "
        "and photos captioned /add Firstname Lastname (or reply /add Name to a photo or an album).\n"
        "Photos galleries (GALLERY_LAYOUT=photos): /people shows persons as numbered faces; /name N Firstname Lastname "
        "(or reply /name Firstname Lastname to an answer), /merge N M, /hide N (there /remove and /rename are refused: "
        "they would act on folders of event photos)"
    )


def reindex_usage() -> str:
    return f"/reindex [{'|'.join(MODEL_NAMES)}|all]"


COMMANDS = [
    ("start", "What this bot does"),
    ("help", "How to use it"),
    ("model", "Show or switch the backend"),
    ("k", "Show or set matches per face"),
    ("history", "Your last queries"),
    ("forget", "Delete your history"),
    ("stats", "Index and usage figures (admins)"),
    ("reindex", "Rebuild the index (admins)"),
    ("add", "Add photos of a person: caption or reply /add Name (admins)"),
    ("people", "List the gallery's people (admins)"),
    ("remove", "Remove a person (admins)"),
    ("rename", "Rename or merge a person (admins)"),
    ("name", "Name a person: /name N Name, or reply to an answer (admins)"),
    ("merge", "Merge person M into person N: /merge N M (admins)"),
    ("hide", "Never show or name person N: /hide N (admins)"),
]


class Context(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """The handlers' context (ContextTypes(context=Context)): `context.service` is the bot's BotService."""

    @property
    def service(self) -> BotService:
        service: BotService = self.application.bot_data["service"]
        return service


def message_of(update: Update) -> Message:
    """The update's message: every handler but the buttons' is registered for messages only."""
    assert update.effective_message is not None
    return update.effective_message


BotApplication = Application[ExtBot[None], Context, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any]


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
    first = svc.refusals.first(user.id)
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


async def start(update: Update, context: Context) -> None:
    """Explain the bot in a few lines."""
    await message_of(update).reply_text(help_text())


async def model(update: Update, context: Context) -> None:
    """Show the backends, or switch this chat's backend."""
    svc, message = context.service, update.effective_message
    assert message is not None
    if not context.args:
        await message.reply_text(await svc.model_lines(message.chat_id))
        return
    name = context.args[0].lower()
    if len(context.args) > 1 or name not in MODEL_NAMES:
        await message.reply_text(
            f"Unknown backend {' '.join(context.args)!r}. Choose one of: {', '.join(MODEL_NAMES)}."
        )
        return
    await message.reply_text(await svc.set_model(message.chat_id, name))


async def k(update: Update, context: Context) -> None:
    """Show or set how many matches per face this chat gets."""
    svc, message = context.service, update.effective_message
    assert message is not None
    max_k = svc.settings.max_k
    if not context.args:
        _, current = await svc.chat_settings(message.chat_id)
        await message.reply_text(f"Matches per face: {current}. Set with /k <1..{max_k}>.")
        return
    value = parse_k(context.args, max_k)
    if value is None:
        await message.reply_text(f"k must be a whole number from 1 to {max_k}, e.g. /k 5.")
        return
    await svc.set_k(message.chat_id, value)
    await message.reply_text(f"Matches per face set to {value}.")


def parse_k(args: list[str], max_k: int) -> int | None:
    """One ASCII whole number from 1 to max_k ('²'.isdigit() is True: not a number here)."""
    if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()) or not 1 <= int(args[0]) <= max_k:
        return None
    return int(args[0])


async def history(update: Update, context: Context) -> None:
    """List this user's last queries in this chat."""
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    items = await context.service.history(message.chat_id, user.id)
    if not items:
        await message.reply_text("No queries yet. Send me a photo!")
        return
    lines = [f"Your last {len(items)} queries:"]
    for item in items:
        if item.answers:  # the open-set decision of each face, as the answer said it
            top = ", ".join(describe_answer(name, score) for name, score in item.answers)
        elif item.top_name:  # recorded before decisions were kept
            top = f"{item.top_name} {item.top_similarity:.2f}"
        else:
            top = "no face found"
        lines.append(f"{item.created_at:%Y-%m-%d %H:%M} UTC · {item.model} · {top}")
    await message.reply_text("\n".join(lines))


def describe_answer(name: str | None, score: float) -> str:
    if name is None:
        return "not in the gallery"
    if name == REMOVED:
        return "a person since removed from the gallery"
    return f"{name} ({score:.2f})"


async def forget(update: Update, context: Context) -> None:
    """Delete this user's history in every chat, and the buttons that hold their photos."""
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    count = await context.service.forget(user.id, message.chat_id)
    await message.reply_text(
        f"Deleted {count} queries from your history." if count else "Your history is already empty."
    )


async def stats(update: Update, context: Context) -> None:
    """Index sizes and usage figures, for admins."""
    message = update.effective_message
    assert message is not None
    if await refuse_non_admin(update, context.service, "stats"):
        await message.reply_text(await context.service.stats())


async def reindex(update: Update, context: Context) -> None:
    """Rebuild an index (admins), or report the progress of the running rebuild."""
    svc, message = context.service, update.effective_message
    assert message is not None
    if not await refuse_non_admin(update, svc, "reindex"):
        return
    which = context.args[0].lower() if context.args else None
    if which is not None and which != "all" and which not in MODEL_NAMES:
        await message.reply_text(f"Usage: {reindex_usage()}")
        return
    refusal = await svc.reindex(message.chat_id, which)
    if refusal is not None:
        await message.reply_text(refusal)


async def add(update: Update, context: Context) -> None:
    """`/add Name` as a reply to a photo or an album (photos captioned /add arrive as photos)."""
    svc, message, user = context.service, update.effective_message, update.effective_user
    assert message is not None and user is not None
    if not await refuse_non_admin(update, svc, "add"):
        return
    target = message.reply_to_message
    files: list[Attachment] = []
    if target is not None and target.media_group_id:
        parts = await svc.album_files(target.chat_id, target.media_group_id)
        files = [Attachment(p.file_id, p.file_size, p.name) for p in parts]
    if not files and target is not None:
        attachment = attachment_of(target)
        if attachment is not None and (
            target.photo or looks_like_image(attachment.name, target.document.mime_type if target.document else None)
        ):
            files = [attachment]
    if not files:
        await message.reply_text(gallery_commands.USAGE)
        return
    await gallery_commands.add(svc, message.chat_id, user.id, files, message.text)


async def people(update: Update, context: Context) -> None:
    """List people with photo counts, paged with buttons (admins)."""
    svc, message = context.service, update.effective_message
    assert message is not None
    if not await refuse_non_admin(update, svc, "people"):
        return
    text, keyboard = await svc.db(gallery_commands.people_page, svc, " ".join(context.args or []), 0)
    await message.reply_text(text, reply_markup=keyboard)


async def remove(update: Update, context: Context) -> None:
    """Ask to confirm removing a person (admins)."""
    svc, message, user = context.service, update.effective_message, update.effective_user
    assert message is not None and user is not None
    if not await refuse_non_admin(update, svc, "remove"):
        return
    text, keyboard = await gallery_commands.ask_remove(svc, message.chat_id, user.id, " ".join(context.args or []))
    await message.reply_text(text, reply_markup=keyboard)


async def rename(update: Update, context: Context) -> None:
    """Rename a person, merging into the new name when it exists (admins)."""
    svc, message = context.service, update.effective_message
    assert message is not None
    if not await refuse_non_admin(update, svc, "rename"):
        return
    await message.reply_text(await gallery_commands.rename(svc, message.chat_id, list(context.args or [])))


# ---- inline buttons: one handler per kind (app.py registers each with its callback_data pattern) --------------


def callback_token(update: Update) -> str:
    """What a button's callback data carries after its kind (`kind:token`)."""
    assert update.callback_query is not None
    return (update.callback_query.data or "").partition(":")[2]


async def more_button(update: Update, context: Context) -> None:
    """ "More matches": the next page; the pressed message loses its buttons (the page's message has new ones)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    note = await context.service.flow.more(callback_token(update), user.id)
    await query.answer(note)
    if note is None:
        await query.edit_message_reply_markup(None)


async def faces_button(update: Update, context: Context) -> None:
    """ "Show faces": the photo with numbered boxes."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    await query.answer(await context.service.flow.faces(callback_token(update), user.id))


async def people_button(update: Update, context: Context) -> None:
    """/people pages."""
    svc, query, user = context.service, update.callback_query, update.effective_user
    assert query is not None and user is not None
    if not svc.settings.is_admin(user.id):
        await query.answer("For admins only.")
        return
    page, _, prefix = callback_token(update).partition(":")
    text, keyboard = await svc.db(gallery_commands.people_page, svc, prefix, int(page) if page.isdigit() else 0)
    await query.answer()
    if text != (query.message.text if isinstance(query.message, Message) else None):
        await query.edit_message_text(text, reply_markup=keyboard)


async def remove_button(update: Update, context: Context) -> None:
    """The /remove confirmation: "Yes, remove" (rm:) or "Cancel" (rmno:)."""
    svc, query, user = context.service, update.callback_query, update.effective_user
    assert query is not None and user is not None and query.message is not None
    if not svc.settings.is_admin(user.id):  # ADMIN_IDS may have changed since the confirmation was asked
        log.warning("user %s pressed a /remove confirmation without being an admin", user.id)
        await query.answer("For admins only.")
        return
    confirmed = (query.data or "").startswith("rm:")
    note, text = await gallery_commands.confirm_remove(
        svc, callback_token(update), user.id, query.message.chat.id, confirmed
    )
    await query.answer(note)
    if text is not None:
        await query.edit_message_text(text)


async def refuse_non_admin(update: Update, svc: BotService, command: str) -> bool:
    """True for admins; otherwise answer with a refusal, log it and return False."""
    user = update.effective_user
    if svc.settings.is_admin(user.id if user else None):
        return True
    log.warning("user %s tried /%s without being an admin", user.id if user else None, command)
    await message_of(update).reply_text(f"Sorry, /{command} is for admins only.")
    return False


async def photo(update: Update, context: Context) -> None:
    """Search the faces of a photo and answer with albums of the closest gallery photos."""
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    await context.service.photo(message, user)


async def document(update: Update, context: Context) -> None:
    """Search an image sent as a file; refuse other files."""
    message = message_of(update)
    if message.document is None or not looks_like_image(message.document.file_name, message.document.mime_type):
        await message.reply_text("That file isn't an image. Please send a photo (JPEG, PNG or WebP).")
        return
    assert update.effective_user is not None
    await context.service.photo(message, update.effective_user)


async def unsupported(update: Update, context: Context) -> None:
    """Explain that stickers, GIFs, videos and voice messages can't be searched."""
    message = message_of(update)
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


async def text(update: Update, context: Context) -> None:
    """Point plain text to what the bot does."""
    await message_of(update).reply_text("Send me a photo of a face and I'll look for that person. /help explains more.")


async def unknown_command(update: Update, context: Context) -> None:
    """Point unknown commands to /help."""
    await message_of(update).reply_text("I don't know that command. See /help.")


async def error_handler(update: object, context: Context) -> None:
    """Log the error with its traceback and tell the user something went wrong."""
    log.error("exception while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        try:
            await update.effective_message.reply_text("Sorry, something went wrong. Please try again.")
        except Exception:
            log.exception("could not tell the user about the error")
