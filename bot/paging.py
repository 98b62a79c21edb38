"""Result pages: what a "More matches" / "Show faces" button needs (stored by `bot.state`), and the keyboards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

    @property
    def has_more(self) -> bool:
        return self.shown < min(self.max_k, self.index_size) and any(face for p in self.photos for face in p.matches)

    @property
    def multi_face(self) -> bool:
        return any(len(p.boxes) > 1 for p in self.photos)


def state_to_payload(state: ResultState) -> dict[str, Any]:
    """The answer as JSON-ready data (a row of `button_states`: any replica serves the next page)."""
    return {
        "chat_id": state.chat_id,
        "user_id": state.user_id,
        "model": state.model,
        "k": state.k,
        "shown": state.shown,
        "page": state.page,
        "max_k": state.max_k,
        "index_size": state.index_size,
        "photos": [
            {
                "file_id": p.file_id,
                "name": p.name,
                "boxes": [list(b) for b in p.boxes],
                "unknown": p.unknown,
                "matches": [[[m.rank, m.name, m.path, m.similarity, m.distance] for m in face] for face in p.matches],
            }
            for p in state.photos
        ],
    }


def state_from_payload(payload: dict[str, Any]) -> ResultState:
    photos = [
        PhotoQuery(
            file_id=p["file_id"],
            name=p["name"],
            boxes=[(b[0], b[1], b[2], b[3]) for b in p["boxes"]],
            matches=[[Match(int(m[0]), m[1], m[2], float(m[3]), float(m[4])) for m in face] for face in p["matches"]],
            unknown=[bool(u) for u in p["unknown"]],
        )
        for p in payload["photos"]
    ]
    return ResultState(
        chat_id=payload["chat_id"],
        user_id=payload["user_id"],
        model=payload["model"],
        k=payload["k"],
        photos=photos,
        shown=payload["shown"],
        page=payload["page"],
        max_k=payload["max_k"],
        index_size=payload["index_size"],
    )


def result_keyboard(token: str, state: ResultState) -> InlineKeyboardMarkup | None:
    buttons = []
    if state.has_more:
        buttons.append(InlineKeyboardButton("More matches", callback_data=f"more:{token}"))
    if state.multi_face:
        buttons.append(InlineKeyboardButton("Show faces", callback_data=f"faces:{token}"))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def pager_keyboard(page: int, pages: int, data: Callable[[int], str]) -> InlineKeyboardMarkup | None:
    """‹ Previous · page/pages · Next › for a paged list; `data(page)` is a button's callback data."""
    if pages <= 1:
        return None
    buttons = []
    if page > 0:
        buttons.append(InlineKeyboardButton("‹ Previous", callback_data=data(page - 1)))
    buttons.append(InlineKeyboardButton(f"{page + 1}/{pages}", callback_data=data(page)))
    if page + 1 < pages:
        buttons.append(InlineKeyboardButton("Next ›", callback_data=data(page + 1)))
    return InlineKeyboardMarkup([buttons])


def people_keyboard(page: int, pages: int, prefix: str) -> InlineKeyboardMarkup | None:
    """The gallery's /people list (names starting with `prefix`, cut to fit Telegram's 64-byte callback data)."""
    prefix = prefix.encode()[:40].decode(errors="ignore")
    return pager_keyboard(page, pages, lambda number: f"people:{number}:{prefix}")
