"""What a search is about, as the flows pass it around: the photos asked about (`PhotoIn`), each one's outcome
(`Searched`), and the query as the history keeps it (`QueryRecord`). Plain data, shared by the search flow and the
photos layout's answer so that neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass

from engine import EngineError, SearchResult


@dataclass(frozen=True)
class PhotoIn:
    """A photo to search: its number in the request (from 1) and its Telegram file."""

    number: int
    file_id: str
    file_size: int | None
    name: str


@dataclass
class Searched:
    """One photo's outcome. The decoded image is never kept: it is dropped in the pool once searched."""

    photo: PhotoIn
    result: SearchResult | None = None
    error: EngineError | None = None


@dataclass
class QueryRecord:
    """One photo's query as the history keeps it (bot/db.py `add_query`)."""

    faces: int
    matches: list[tuple[int, int, str, str, float]]  # face number, rank, name, path, similarity
    answers: list[tuple[int, str | None, float]]  # face number, the answer (a person, or None), its score
