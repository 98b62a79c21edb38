"""Result pages: what a "More matches" / "Show faces" button needs, kept in memory, and the keyboards."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from engine import Match

PAGE_LIMIT = 10  # an album holds at most 10 photos: larger k is paged


@dataclass
class PhotoQuery:
    file_id: str  # Telegram keeps the user's photo: re-downloaded for another page or the faces photo
    name: str
    boxes: list[tuple[int, int, int, int]]
    matches: list[list[Match]]  # per face, the ranks fetched so far
    unknown: list[bool] = field(default_factory=list)  # per face: not in the gallery (its matches are only the closest)


@dataclass
class ResultState:
    """One answer: its photos (one, or an album's), the model and how many ranks are shown."""

    chat_id: int
    user_id: int
    model: str
    k: int
    photos: list[PhotoQuery]
    shown: int  # ranks shown per face
    page: int
    max_k: int
    index_size: int
    summary_message_id: int | None = None

    @property
    def has_more(self) -> bool:
        return self.shown < min(self.max_k, self.index_size) and any(face for p in self.photos for face in p.matches)

    @property
    def multi_face(self) -> bool:
        return any(len(p.boxes) > 1 for p in self.photos)


class ResultPages:
    """The last answers' states, by a short token (callback_data holds at most 64 bytes)."""

    def __init__(self, size: int = 1000):
        self.size = size
        self._items: OrderedDict[str, ResultState] = OrderedDict()
        self._pending: OrderedDict[str, tuple] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, state: ResultState) -> str:
        with self._lock:
            token = format(next(self._ids), "x")
            self._items[token] = state
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return token

    def get(self, token: str) -> ResultState | None:
        with self._lock:
            return self._items.get(token)

    def add_pending(self, action: tuple) -> str:
        """An action waiting for a confirmation button (e.g. /remove)."""
        with self._lock:
            token = format(next(self._ids), "x")
            self._pending[token] = action
            while len(self._pending) > self.size:
                self._pending.popitem(last=False)
            return token

    def pending(self, token: str) -> tuple | None:
        with self._lock:
            return self._pending.get(token)

    def pop_pending(self, token: str) -> tuple | None:
        with self._lock:
            return self._pending.pop(token, None)


def result_keyboard(token: str, state: ResultState) -> InlineKeyboardMarkup | None:
    buttons = []
    if state.has_more:
        buttons.append(InlineKeyboardButton("More matches", callback_data=f"more:{token}"))
    if state.multi_face:
        buttons.append(InlineKeyboardButton("Show faces", callback_data=f"faces:{token}"))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def people_keyboard(page: int, pages: int, prefix: str) -> InlineKeyboardMarkup | None:
    if pages <= 1:
        return None
    prefix = prefix.encode()[:40].decode(errors="ignore")
    buttons = []
    if page > 0:
        buttons.append(InlineKeyboardButton("‹ Previous", callback_data=f"people:{page - 1}:{prefix}"))
    buttons.append(InlineKeyboardButton(f"{page + 1}/{pages}", callback_data=f"people:{page}:{prefix}"))
    if page + 1 < pages:
        buttons.append(InlineKeyboardButton("Next ›", callback_data=f"people:{page + 1}:{prefix}"))
    return InlineKeyboardMarkup([buttons])
