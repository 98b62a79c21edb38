""" "Download originals": the gallery files themselves, sent as documents, a page at a time.

Every photos answer and every delivery carries the button. Which files it sends (absolute gallery paths) is kept
in a button state in the database (shared by replicas, for STATE_TTL_HOURS), never in the callback data: the data
is `orig:<token>` for the first page and `orig:<token>:<offset>` for "More originals". Only the user the button
was made for may press it. A file is sent with its own bytes (read off the event loop), its caption the path
relative to the gallery as the answers' captions show it (never a server path). A file over the Bot API's upload
limit (ORIGINALS_MAX_BYTES; by default 50 MB with api.telegram.org, 2,000 MB with a local Bot API server in
BOT_API_URL) is named with its size instead, and a file gone from the gallery is named as gone; the others still go.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.runtime import BotRuntime
from bot.settings import TELEGRAM_API_URL, Settings

log = logging.getLogger(__name__)

BUTTON_KIND = "orig"
ORIGINALS_PAGE = 10  # files sent per press
CLOUD_LIMIT = 50 * 1024 * 1024  # what a bot may upload through api.telegram.org
LOCAL_LIMIT = 2000 * 1024 * 1024  # ... and through a local Bot API server
DOWNLOAD_LABEL = "Download originals"
MORE_LABEL = "More originals"
TOO_OLD = "These originals are no longer available: please search again."
NOT_YOURS = "Only the person this answer was for can download its originals."


def upload_limit(settings: Settings) -> int:
    """The largest file the bot sends: ORIGINALS_MAX_BYTES, else the Bot API's limit for BOT_API_URL."""
    if settings.originals_max_bytes is not None:
        return settings.originals_max_bytes
    official = settings.bot_api_url.rstrip("/") == TELEGRAM_API_URL
    return CLOUD_LIMIT if official else LOCAL_LIMIT


def size_text(size: int) -> str:
    if size >= 1024 * 1024 * 1024:
        return f"{size / 1024**3:.1f} GB"
    if size >= 1024 * 1024:
        return f"{size / 1024**2:.1f} MB"
    return f"{size / 1024:.0f} KB"


def callback(token: str, offset: int = 0) -> str:
    return f"orig:{token}" if offset == 0 else f"orig:{token}:{offset}"


def parse_callback(data: str) -> tuple[str, int] | None:
    """(token, offset) of a button's data after `orig:`, or None when it is not one of ours."""
    token, _, offset = data.partition(":")
    if not token or (offset and not offset.isdigit()) or len(offset) > 9:
        return None
    return token, int(offset or 0)


def with_button(
    markup: InlineKeyboardMarkup | None, button: InlineKeyboardButton | None
) -> InlineKeyboardMarkup | None:
    """`markup` with `button` on a row of its own below its rows (either may be None)."""
    if button is None:
        return markup
    rows = [list(row) for row in markup.inline_keyboard] if markup is not None else []
    return InlineKeyboardMarkup([*rows, [button]])


@dataclass(frozen=True)
class Original:
    """One gallery file of a page: its bytes, or why it is not sent (`size` over the limit, or gone)."""

    path: str
    data: bytes | None
    size: int | None  # None: the file is gone or unreadable


class Originals:
    """The "Download originals" button and what pressing it sends, over the runtime."""

    def __init__(self, runtime: BotRuntime):
        self.rt = runtime

    async def button(self, chat_id: int, user_id: int, paths: Sequence[str]) -> InlineKeyboardButton | None:
        """The button for these gallery files (their state stored for any replica); None when there are none, or
        the database fails (logged)."""
        rt = self.rt
        if not paths:
            return None
        try:
            token = await rt.db(rt.state.put_button, BUTTON_KIND, chat_id, user_id, {"paths": list(paths)})
        except Exception:
            log.exception("could not store the Download originals button")
            rt.metrics.error("state")
            return None
        return InlineKeyboardButton(DOWNLOAD_LABEL, callback_data=callback(token))

    async def keyboard(self, chat_id: int, user_id: int, paths: Sequence[str]) -> InlineKeyboardMarkup | None:
        """A keyboard of the button alone (None: no files, or the database failed)."""
        return with_button(None, await self.button(chat_id, user_id, paths))

    async def add_to(
        self, markup: InlineKeyboardMarkup | None, chat_id: int, user_id: int, paths: Sequence[str]
    ) -> InlineKeyboardMarkup | None:
        """`markup` (an answer's own buttons, e.g. "More photos") with the button below them."""
        return with_button(markup, await self.button(chat_id, user_id, paths))

    async def pressed(self, data: str, user_id: int) -> str | None:
        """A press of the button or of "More originals" (`data` after `orig:`): the page's files, then a line naming
        the files not sent, with "More originals" while some remain. Returns the press's short answer."""
        rt = self.rt
        parsed = parse_callback(data)
        if parsed is None:
            return TOO_OLD
        token, offset = parsed
        state = await rt.db(rt.state.button, token, BUTTON_KIND)
        if state is None:
            return TOO_OLD
        if state.user_id != user_id:
            return NOT_YOURS
        paths = state.payload.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or offset >= len(paths):
            return TOO_OLD
        if not await rt.db(rt.state.claim, f"orig:{token}:{offset}"):
            return "Already sent."
        page = paths[offset : offset + ORIGINALS_PAGE]
        limit = upload_limit(rt.settings)
        notes: list[str] = []
        for path in page:
            original = await rt.db(read_original, path, limit)
            shown = rt.public(path)
            if original.size is None:
                notes.append(f"{shown}: no longer in the gallery.")
                rt.metrics.error("missing_gallery_file")
            elif original.data is None:
                notes.append(f"{shown}: {size_text(original.size)}, over the {size_text(limit)} a bot may send.")
            else:
                await self._send(state.chat_id, original.data, Path(path).name, shown)
        end = offset + len(page)
        lines = [f"Originals {offset + 1}–{end} of {len(paths)}." if len(paths) > 1 else "The original."]
        lines += notes
        markup = None
        if end < len(paths):
            lines.append("More originals sends the next.")
            markup = InlineKeyboardMarkup([[InlineKeyboardButton(MORE_LABEL, callback_data=callback(token, end))]])
        await rt.sender.lines(state.chat_id, lines, reply_markup=markup)
        return None

    async def _send(self, chat_id: int, data: bytes, name: str, caption: str) -> None:
        bot = self.rt.sender.bot
        await self.rt.sender.send(
            lambda: bot.send_document(
                chat_id, data, filename=name, caption=caption[:1024], disable_content_type_detection=True
            )
        )


def read_original(path: str, limit: int) -> Original:
    """Runs off the event loop: the file's bytes when it is at most `limit` bytes; its size otherwise; gone: None."""
    try:
        size = os.path.getsize(path)
        if size > limit:
            return Original(path, None, size)
        with open(path, "rb") as file:
            return Original(path, file.read(), size)
    except OSError:
        return Original(path, None, None)
