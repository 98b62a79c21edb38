"""Telegram handlers: thin async functions that check input and call the BotService."""

from __future__ import annotations

import asyncio
import logging

from telegram import Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot import gallery_commands
from bot.service import BotService, looks_like_image
from engine import MODEL_NAMES, EngineError

log = logging.getLogger(__name__)

HELP = (
    "Send me a photo of a person and I'll find the most similar photos in my gallery of known people.\n\n"
    "/model — show or switch the search backend (facenet: faces; vgg16: whole image)\n"
    "/k — show or set how many matches per face\n"
    "/history — your last queries here\n"
    "/forget — delete your history\n"
    "/help — this message\n"
    "Admins: /stats, /reindex [facenet|vgg16|all], /people [prefix], /remove Name, /rename Old Name New Name, "
    "and photos captioned /add Firstname Lastname (or reply /add Name to a photo or an album)"
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
    ("add", "Add photos of a person: caption or reply /add Name (admins)"),
    ("people", "List the gallery's people (admins)"),
    ("remove", "Remove a person (admins)"),
    ("rename", "Rename or merge a person (admins)"),
]


def service(context: ContextTypes.DEFAULT_TYPE) -> BotService:
    return context.application.bot_data["service"]


async def gatekeeper(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop updates without a user (channel posts) silently, and those of users outside the allow-list politely."""
    user = update.effective_user
    if user is None:
        log.info("ignored an update without a sender (update %s)", update.update_id)
        raise ApplicationHandlerStop
    if service(context).settings.is_allowed(user.id):
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
        await message.reply_text(
            f"Unknown backend {' '.join(context.args)!r}. Choose one of: {', '.join(MODEL_NAMES)}."
        )
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
    if (
        len(context.args) > 1 or not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= max_k
    ):  # '²'.isdigit()
        await message.reply_text(f"k must be a whole number from 1 to {max_k}, e.g. /k 5.")
        return
    await asyncio.to_thread(svc.store.set_chat_k, message.chat_id, int(value))
    await message.reply_text(f"Matches per face set to {int(value)}.")


async def history(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List this user's last queries in this chat."""
    svc, message = service(context), update.effective_message
    items = await asyncio.to_thread(
        svc.store.history, message.chat_id, update.effective_user.id, svc.settings.history_size
    )
    if not items:
        await message.reply_text("No queries yet. Send me a photo!")
        return
    lines = [f"Your last {len(items)} queries:"]
    for item in items:
        if item.answers:  # the open-set decision of each face, as the answer said it
            top = ", ".join(f"{name} ({score:.2f})" if name else "not in the gallery" for name, score in item.answers)
        elif item.top_name:  # recorded before decisions were kept
            top = f"{item.top_name} {item.top_similarity:.2f}"
        else:
            top = "no face found"
        lines.append(f"{item.created_at:%Y-%m-%d %H:%M} UTC · {item.model} · {top}")
    await message.reply_text("\n".join(lines))


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete this user's history in this chat."""
    svc, message = service(context), update.effective_message
    count = await asyncio.to_thread(svc.store.forget, message.chat_id, update.effective_user.id)
    await message.reply_text(
        f"Deleted {count} queries from your history." if count else "Your history is already empty."
    )


async def stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Index sizes and usage figures, for admins."""
    svc, message = service(context), update.effective_message
    if not await refuse_non_admin(update, svc, "stats"):
        return
    lines = ["Indexes:"]
    for name in MODEL_NAMES:
        info = svc.engine.index_info(name)
        lines.append(f"• {name}: {info.count} faces indexed" if info else f"• {name}: no index")
    figures = await asyncio.to_thread(svc.store.stats)
    median = f"{figures.median_latency_ms:.0f} ms" if figures.median_latency_ms is not None else "n/a"
    lines.append(f"Queries: {figures.queries} from {figures.users} users; median latency {median}")
    m = svc.metrics  # the numbers /metrics serves, since this start
    errors = ", ".join(f"{kind} {count:.0f}" for kind, count in sorted(m.errors_by_kind().items())) or "none"
    lines.append(
        f"Since start: {m.value('facesearch_photos_searched_total'):.0f} photos searched, "
        f"{m.value('facesearch_faces_found_total'):.0f} faces found, queue {svc.pending}/{svc.settings.max_queue}; "
        f"errors: {errors}"
    )
    lines.append(f"Embedding on: {svc.engine.device.describe()}")
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
    svc.start_reindex(message, models)


async def add(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/add Name` as a reply to a photo or an album (photos captioned /add arrive as photos)."""
    svc, message = service(context), update.effective_message
    if not await refuse_non_admin(update, svc, "add"):
        return
    target = message.reply_to_message
    files = []
    if target is not None and target.media_group_id and (target.chat_id, target.media_group_id) in svc.recent_albums:
        files = [(file_id, None) for file_id, _ in svc.recent_albums[(target.chat_id, target.media_group_id)]]
    elif target is not None and target.photo:
        files = [(target.photo[-1].file_id, target.photo[-1].file_size)]
    elif (
        target is not None
        and target.document
        and looks_like_image(target.document.file_name, target.document.mime_type)
    ):
        files = [(target.document.file_id, target.document.file_size)]
    if not files:
        await message.reply_text(gallery_commands.USAGE)
        return
    await gallery_commands.add_files(svc, message, files, message.text, context.bot)


async def people(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List people with photo counts, paged with buttons (admins)."""
    svc, message = service(context), update.effective_message
    if not await refuse_non_admin(update, svc, "people"):
        return
    text, keyboard = await asyncio.to_thread(gallery_commands.people_page, svc, " ".join(context.args), 0)
    await message.reply_text(text, reply_markup=keyboard)


async def remove(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Ask to confirm removing a person (admins)."""
    svc, message = service(context), update.effective_message
    if not await refuse_non_admin(update, svc, "remove"):
        return
    try:
        person = await asyncio.to_thread(svc.gallery.find, " ".join(context.args))
    except EngineError as error:
        await message.reply_text(f"{error}. Usage: /remove Firstname Lastname")
        return
    if person is None:
        await message.reply_text(f"Nobody called {' '.join(context.args)} in the gallery. See /people.")
        return
    token = svc.pages.add_pending(("remove", person.name, update.effective_user.id))
    await message.reply_text(
        f"Remove {person.name} and their {person.photos} photos from the gallery?",
        reply_markup=gallery_commands.remove_keyboard(token),
    )


async def rename(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Rename a person, merging into the new name when it exists (admins)."""
    svc, message = service(context), update.effective_message
    if not await refuse_non_admin(update, svc, "rename"):
        return
    names = await asyncio.to_thread(gallery_commands.split_rename, svc, list(context.args))
    if names is None:
        await message.reply_text(
            "Usage: /rename Old Name New Name (the old name must be in /people; or /rename Old -> New)."
        )
        return
    try:
        result = await asyncio.get_running_loop().run_in_executor(svc.index_pool, svc.gallery.rename, *names)
    except EngineError as error:
        await message.reply_text(f"Nothing renamed: {svc.public(str(error))}.")
        return
    if result.merged:
        await message.reply_text(f"Merged {names[0]} into {result.person.name}: {result.person.photos} photos now.")
    else:
        await message.reply_text(f"Renamed {names[0]} to {result.person.name} ({result.person.photos} photos).")


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Inline buttons: More matches, Show faces, /people pages, /remove confirmation."""
    svc, query = service(context), update.callback_query
    kind, _, rest = (query.data or "").partition(":")
    user_id = update.effective_user.id
    if kind == "people":
        if not svc.settings.is_admin(user_id):
            await query.answer("For admins only.")
            return
        page, _, prefix = rest.partition(":")
        text, keyboard = await asyncio.to_thread(
            gallery_commands.people_page, svc, prefix, int(page) if page.isdigit() else 0
        )
        await query.answer()
        if text != (query.message.text if query.message else None):
            await query.edit_message_text(text, reply_markup=keyboard)
        return
    if kind in ("rm", "rmno"):
        pending = svc.pages.pending(rest)
        if pending is None or pending[2] != user_id:
            await query.answer("This confirmation is not yours or has expired.")
            return
        if svc.pages.pop_pending(rest) is None:  # pressed twice
            await query.answer()
            return
        await query.answer()
        if kind == "rmno":
            await query.edit_message_text(f"Kept {pending[1]}.")
            return
        try:
            result = await asyncio.get_running_loop().run_in_executor(svc.index_pool, svc.gallery.remove, pending[1])
        except EngineError as error:
            await query.edit_message_text(f"Nothing removed: {svc.public(str(error))}.")
            return
        await query.edit_message_text(
            f"Removed {result.person.name} and their {result.photos} photos; searches no longer find them."
        )
        return
    state = svc.pages.get(rest)
    if state is None:
        await query.answer("This answer is too old: please send the photo again.")
        return
    if state.user_id != user_id:
        await query.answer("Only the person who sent the photo can use these buttons.")
        return
    await query.answer()
    if kind == "more":
        await query.edit_message_reply_markup(None)  # one press: the next page's message carries the buttons
        await svc.more_matches(state, query.message, context.bot)
    elif kind == "faces":
        await svc.show_faces(state, query.message, context.bot)


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
    await update.effective_message.reply_text(
        "Send me a photo of a face and I'll look for that person. /help explains more."
    )


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
