"""Handlers of the chat commands: /start and /help, /model, /k, /history, /forget, and the admins' /stats and
/reindex; plain text and unknown commands. The answers' texts come from bot/services/chats.py."""

from __future__ import annotations

from telegram import Update

from bot.db import REMOVED
from bot.handlers.context import Context, message_of, refuse_non_admin
from engine import MODEL_NAMES
from engine.backends import BACKENDS


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
        "/forget — delete your history (and what /follow keeps)\n"
        "/follow — event galleries: send a selfie captioned /follow to get your photos as they are taken; "
        "/following, /unfollow\n"
        "/optout — never be found here: send a selfie captioned /optout (after you confirm, nobody is shown photos "
        "of you)\n"
        "/help — this message\n"
        f"Admins: /stats, {reindex_usage()}, /people [prefix], /remove Name, /rename Old Name New Name, "
        "and photos captioned /add Firstname Lastname (or reply /add Name to a photo or an album).\n"
        "Invite links (ALLOWED_USER_IDS=invite): /invite [uses] [days] (a link and its QR code), /invites, "
        "/revoke CODE.\n"
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
    ("follow", "Get your photos as they come: a selfie captioned /follow"),
    ("following", "What you follow"),
    ("unfollow", "Stop getting new photos"),
    ("optout", "Never be found here: a selfie captioned /optout"),
    ("stats", "Index and usage figures (admins)"),
    ("reindex", "Rebuild the index (admins)"),
    ("add", "Add photos of a person: caption or reply /add Name (admins)"),
    ("people", "List the gallery's people (admins)"),
    ("remove", "Remove a person (admins)"),
    ("rename", "Rename or merge a person (admins)"),
    ("name", "Name a person: /name N Name, or reply to an answer (admins)"),
    ("merge", "Merge person M into person N: /merge N M (admins)"),
    ("hide", "Never show or name person N: /hide N (admins)"),
    ("invite", "A new invite link and QR code: /invite [uses] [days] (admins)"),
    ("invites", "The live invite links (admins)"),
    ("revoke", "End an invite link: /revoke CODE (admins)"),
]


async def start(update: Update, context: Context) -> None:
    """Explain the bot in a few lines."""
    await message_of(update).reply_text(help_text())


async def model(update: Update, context: Context) -> None:
    """Show the backends, or switch this chat's backend."""
    svc, message = context.service, update.effective_message
    assert message is not None
    if not context.args:
        await message.reply_text(await svc.chats.model_lines(message.chat_id))
        return
    name = context.args[0].lower()
    if len(context.args) > 1 or name not in MODEL_NAMES:
        await message.reply_text(
            f"Unknown backend {' '.join(context.args)!r}. Choose one of: {', '.join(MODEL_NAMES)}."
        )
        return
    await message.reply_text(await svc.chats.set_model(message.chat_id, name))


async def k(update: Update, context: Context) -> None:
    """Show or set how many matches per face this chat gets."""
    svc, message = context.service, update.effective_message
    assert message is not None
    max_k = svc.settings.max_k
    if not context.args:
        _, current = await svc.runtime.chat_settings(message.chat_id)
        await message.reply_text(f"Matches per face: {current}. Set with /k <1..{max_k}>.")
        return
    value = parse_k(context.args, max_k)
    if value is None:
        await message.reply_text(f"k must be a whole number from 1 to {max_k}, e.g. /k 5.")
        return
    await svc.chats.set_k(message.chat_id, value)
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
    items = await context.service.chats.history(message.chat_id, user.id)
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
    count = await context.service.chats.forget(user.id, message.chat_id)
    await message.reply_text(
        f"Deleted {count} queries from your history." if count else "Your history is already empty."
    )


async def stats(update: Update, context: Context) -> None:
    """Index sizes and usage figures, for admins."""
    message = update.effective_message
    assert message is not None
    if await refuse_non_admin(update, context.service, "stats"):
        await message.reply_text(await context.service.chats.stats())


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
    refusal = await svc.reindexer.start(message.chat_id, which)
    if refusal is not None:
        await message.reply_text(refusal)


async def text(update: Update, context: Context) -> None:
    """Point plain text to what the bot does."""
    await message_of(update).reply_text("Send me a photo of a face and I'll look for that person. /help explains more.")


async def unknown_command(update: Update, context: Context) -> None:
    """Point unknown commands to /help."""
    await message_of(update).reply_text("I don't know that command. See /help.")
