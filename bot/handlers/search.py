"""Handlers of what is searched: photos, image files, what cannot be searched (stickers, videos, voice...), and the
answers' buttons ("More matches", "Show faces", the photos layout's "More photos"). The flows are
bot/services/search.py and bot/services/photos_answer.py."""

from __future__ import annotations

from telegram import Update

from bot.delivery import looks_like_image
from bot.handlers.context import Context, callback_token, message_of


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


async def more_button(update: Update, context: Context) -> None:
    """ "More matches": the next page; the pressed message loses its buttons (the page's message has new ones)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    note = await context.service.search.more(callback_token(update), user.id)
    await query.answer(note)
    if note is None:
        await query.edit_message_reply_markup(None)


async def faces_button(update: Update, context: Context) -> None:
    """ "Show faces": the photo with numbered boxes."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    await query.answer(await context.service.search.faces(callback_token(update), user.id))


async def more_photos_button(update: Update, context: Context) -> None:
    """ "More photos": the next page; the pressed message loses its button (the page's summary has a new one)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    note = await context.service.photos_answer.more(callback_token(update), user.id)
    await query.answer(note)
    if note is None:
        await query.edit_message_reply_markup(None)
