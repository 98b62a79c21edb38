"""Handlers of the admins' gallery commands: /add (as a reply to a photo or an album; photos captioned /add arrive
as photos), /people (paged with buttons), /remove (confirmed with buttons) and /rename. The edits and their answers
are bot/services/gallery.py."""

from __future__ import annotations

import logging

from telegram import Message, Update

from bot.delivery import Attachment, attachment_of, looks_like_image
from bot.handlers.context import Context, callback_token, refuse_non_admin
from bot.services import gallery

log = logging.getLogger(__name__)


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
        await message.reply_text(gallery.USAGE)
        return
    await svc.gallery_edits.add_files(message.chat_id, user.id, files, message.text)


async def people(update: Update, context: Context) -> None:
    """List people with photo counts, paged with buttons (admins)."""
    svc, message = context.service, update.effective_message
    assert message is not None
    if not await refuse_non_admin(update, svc, "people"):
        return
    text, keyboard = await svc.db(svc.gallery_edits.people_page, " ".join(context.args or []), 0)
    await message.reply_text(text, reply_markup=keyboard)


async def remove(update: Update, context: Context) -> None:
    """Ask to confirm removing a person (admins)."""
    svc, message, user = context.service, update.effective_message, update.effective_user
    assert message is not None and user is not None
    if not await refuse_non_admin(update, svc, "remove"):
        return
    text, keyboard = await svc.gallery_edits.ask_remove(message.chat_id, user.id, " ".join(context.args or []))
    await message.reply_text(text, reply_markup=keyboard)


async def rename(update: Update, context: Context) -> None:
    """Rename a person, merging into the new name when it exists (admins)."""
    svc, message = context.service, update.effective_message
    assert message is not None
    if not await refuse_non_admin(update, svc, "rename"):
        return
    await message.reply_text(await svc.gallery_edits.rename_args(message.chat_id, list(context.args or [])))


async def people_button(update: Update, context: Context) -> None:
    """/people pages."""
    svc, query, user = context.service, update.callback_query, update.effective_user
    assert query is not None and user is not None
    if not svc.settings.is_admin(user.id):
        await query.answer("For admins only.")
        return
    page, _, prefix = callback_token(update).partition(":")
    text, keyboard = await svc.db(svc.gallery_edits.people_page, prefix, int(page) if page.isdigit() else 0)
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
    note, text = await svc.gallery_edits.confirm_remove(
        callback_token(update), user.id, query.message.chat.id, confirmed
    )
    await query.answer(note)
    if text is not None:
        await query.edit_message_text(text)
