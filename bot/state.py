"""State every replica can serve and a restart keeps, in the history database (SQLite or PostgreSQL).

Inline buttons carry a random token; what they need (an answer's photos and ranks, a `/remove` confirmation) is a
row of `button_states`. Claims make one-time things happen once across replicas (a button pressed twice, an album
whose parts reached two replicas); leases (claims with a deadline) hold one search per user. Album parts are rows,
so any replica can answer the whole album; an admin's stay so that `/add Name` as a reply to the album finds its
photos, anyone else's go once the album is answered (a query's Telegram file is not kept). Everything
expires (`STATE_TTL_HOURS`) and is purged with the history. Every method blocks: call them through the service's
executor.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from bot.db import AlbumPart, ButtonState, Claim, HistoryStore, _rowcount, utcnow


@dataclass(frozen=True)
class Button:
    token: str
    kind: str
    chat_id: int
    user_id: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class Part:
    """One photo of an album."""

    chat_id: int
    media_group_id: str
    message_id: int
    user_id: int
    file_id: str
    file_size: int | None
    name: str
    caption: str | None = None


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class SharedState:
    """Button states, claims, leases and album parts over one `HistoryStore`'s database."""

    def __init__(self, store: HistoryStore, ttl: timedelta):
        self.sessions = store.sessions
        self.ttl = ttl

    # ---- buttons ---------------------------------------------------------------------------

    def put_button(self, kind: str, chat_id: int, user_id: int, payload: dict[str, Any]) -> str:
        """Store what a button needs; returns its token (16 URL-safe characters: callback_data holds 64 bytes)."""
        token = secrets.token_urlsafe(12)
        now = utcnow()
        with self.sessions.begin() as session:
            session.add(
                ButtonState(
                    token=token,
                    kind=kind,
                    chat_id=chat_id,
                    user_id=user_id,
                    payload=json.dumps(payload),
                    created_at=now,
                    expires_at=now + self.ttl,
                )
            )
        return token

    def button(self, token: str, kind: str) -> Button | None:
        """The button's state; None when unknown, of another kind, or expired."""
        with self.sessions() as session:
            row = session.get(ButtonState, token)
            if row is None or row.kind != kind or _aware(row.expires_at) <= utcnow():
                return None
            return Button(row.token, row.kind, row.chat_id, row.user_id, json.loads(row.payload))

    # ---- claims and leases -----------------------------------------------------------------

    def claim(self, key: str, ttl: timedelta | None = None) -> bool:
        """True for the first caller, in any replica; later calls get False until the claim expires and is purged."""
        now = utcnow()
        try:
            with self.sessions.begin() as session:
                session.add(Claim(key=key, created_at=now, expires_at=now + (ttl or self.ttl)))
        except IntegrityError:
            return False
        return True

    def lease(self, key: str, ttl: timedelta) -> bool:
        """A claim that may be taken over once past its deadline (a replica that died holding it)."""
        with self.sessions.begin() as session:
            session.execute(delete(Claim).where(Claim.key == key, Claim.expires_at <= utcnow()))
        return self.claim(key, ttl)

    def release(self, key: str) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(Claim).where(Claim.key == key))

    # ---- albums ----------------------------------------------------------------------------

    def add_part(self, part: Part) -> None:
        """Record one photo of an album (a repeated delivery of the same message is kept once)."""
        now = utcnow()
        try:
            with self.sessions.begin() as session:
                session.add(
                    AlbumPart(
                        chat_id=part.chat_id,
                        media_group_id=part.media_group_id,
                        message_id=part.message_id,
                        user_id=part.user_id,
                        file_id=part.file_id,
                        file_size=part.file_size,
                        name=part.name,
                        caption=part.caption,
                        received_at=now,
                        expires_at=now + self.ttl,
                    )
                )
        except IntegrityError:
            pass

    def drop_album(self, chat_id: int, media_group_id: str) -> None:
        """Forget an album's parts (their Telegram file_ids) once it is answered."""
        with self.sessions.begin() as session:
            session.execute(
                delete(AlbumPart).where(AlbumPart.chat_id == chat_id, AlbumPart.media_group_id == media_group_id)
            )

    def last_part_at(self, chat_id: int, media_group_id: str) -> datetime | None:
        with self.sessions() as session:
            value = session.scalar(
                select(func.max(AlbumPart.received_at)).where(
                    AlbumPart.chat_id == chat_id, AlbumPart.media_group_id == media_group_id
                )
            )
            return _aware(value) if value is not None else None

    def parts(self, chat_id: int, media_group_id: str) -> list[Part]:
        """The album's photos in message order."""
        with self.sessions() as session:
            rows = session.scalars(
                select(AlbumPart)
                .where(AlbumPart.chat_id == chat_id, AlbumPart.media_group_id == media_group_id)
                .order_by(AlbumPart.message_id)
            ).all()
            return [
                Part(r.chat_id, r.media_group_id, r.message_id, r.user_id, r.file_id, r.file_size, r.name, r.caption)
                for r in rows
            ]

    # ---- expiry ----------------------------------------------------------------------------

    def purge_expired(self) -> int:
        """Delete expired button states, claims and album parts; returns how many rows."""
        now = utcnow()
        deleted = 0
        with self.sessions.begin() as session:
            for table in (ButtonState, Claim, AlbumPart):
                deleted += _rowcount(session.execute(delete(table).where(table.expires_at <= now)))
        return deleted

    def forget_user(self, user_id: int) -> None:
        """A user's `/forget`: their buttons (which hold their photos' file_ids) and album parts go too."""
        with self.sessions.begin() as session:
            session.execute(delete(ButtonState).where(ButtonState.user_id == user_id))
            session.execute(delete(AlbumPart).where(AlbumPart.user_id == user_id))
