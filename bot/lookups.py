"""Per-day lookup limits and opt-outs in the history database.

`lookups`: one row per user and person looked up, the person's key stored as SHA-256 of "model:person" (the bot never
keeps who looked up whom in clear), with the time of the first lookup; rows older than 24 hours are purged hourly and
`/forget` deletes the user's. `optouts`: the face templates of people who opted out, kept to protect them (`/forget`
does not delete them). Every method blocks: call them through the runtime's `db` executor.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, LargeBinary, String, Table, delete, insert, select
from sqlalchemy import update as sql_update

from bot.db import Base, HistoryStore, _rowcount, utcnow

WINDOW = timedelta(hours=24)

lookups = Table(
    "lookups",
    Base.metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("person_key_hash", String(64), primary_key=True),
    Column("first_at", DateTime(timezone=True), nullable=False),
    Index("ix_lookups_first_at", "first_at"),
)
optouts = Table(
    "optouts",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(32), nullable=False),
    Column("template", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("person_key", String(255)),
    Column("layout", String(16), nullable=False),
)


def person_key_hash(model: str, person: str) -> str:
    return hashlib.sha256(f"{model}:{person}".encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class LookupDecision:
    """The keys admitted (looked up in the last 24 hours already, or new within the limit), and when a refused user
    may look up someone new again (hours, rounded up)."""

    allowed: frozenset[str]
    retry_hours: int = 0


@dataclass(frozen=True)
class OptOut:
    id: int
    model: str
    template: np.ndarray
    person_key: str | None
    layout: str


class LookupStore:
    """Lookups and opt-outs over one `HistoryStore`'s database."""

    def __init__(self, store: HistoryStore):
        self.sessions = store.sessions

    # ---- lookups -------------------------------------------------------------------------------

    def admit(self, user_id: int, keys: Sequence[str], limit: int, now: datetime | None = None) -> LookupDecision:
        """Admit the hashed person `keys` of one answer: those looked up in the last 24 hours, and new ones while the
        user is under `limit` (each stored, in the transaction that counted). Two replicas answering the same user
        at the same instant may each count before the other's insert commits: a tiny race (at most one extra person
        per concurrent answer), accepted rather than a lock per user."""
        now = now or utcnow()
        since = now - WINDOW
        with self.sessions.begin() as session:
            rows = session.execute(
                select(lookups.c.person_key_hash, lookups.c.first_at).where(lookups.c.user_id == user_id)
            ).all()
            recent = {r.person_key_hash: _aware(r.first_at) for r in rows if _aware(r.first_at) > since}
            stale = {r.person_key_hash for r in rows} - set(recent)
            allowed = {key for key in keys if key in recent}
            refused = False
            for key in dict.fromkeys(keys):  # in order, once each
                if key in recent:
                    continue
                if len(recent) >= limit:
                    refused = True
                    continue
                if key in stale:  # looked up more than 24 hours ago, not yet purged: a new lookup
                    session.execute(
                        sql_update(lookups)
                        .where(lookups.c.user_id == user_id, lookups.c.person_key_hash == key)
                        .values(first_at=now)
                    )
                else:
                    session.execute(insert(lookups).values(user_id=user_id, person_key_hash=key, first_at=now))
                recent[key] = now
                allowed.add(key)
        retry = 0
        if refused:
            oldest = min(recent.values())
            retry = max(1, math.ceil((oldest + WINDOW - now).total_seconds() / 3600))
        return LookupDecision(frozenset(allowed), retry)

    def purge(self, now: datetime | None = None) -> int:
        """Rows older than 24 hours (hourly)."""
        since = (now or utcnow()) - WINDOW
        with self.sessions.begin() as session:
            return _rowcount(session.execute(delete(lookups).where(lookups.c.first_at <= since)))

    def forget_user(self, user_id: int) -> int:
        """/forget: each of the user's rows gets a random key, so nothing says whom they looked up; the rows (and their
        times) stay until purged, so that /forget does not lift the day's limit."""
        with self.sessions.begin() as session:
            keys: list[str] = list(
                session.scalars(select(lookups.c.person_key_hash).where(lookups.c.user_id == user_id))
            )
            for key in keys:
                session.execute(
                    sql_update(lookups)
                    .where(lookups.c.user_id == user_id, lookups.c.person_key_hash == key)
                    .values(person_key_hash=secrets.token_hex(32))
                )
            return len(keys)

    # ---- opt-outs ------------------------------------------------------------------------------

    def add_optout(self, model: str, template: np.ndarray, person_key: str | None, layout: str) -> int:
        with self.sessions.begin() as session:
            result = session.execute(
                insert(optouts)
                .values(
                    model=model,
                    template=np.asarray(template, dtype=np.float32).tobytes(),
                    created_at=utcnow(),
                    person_key=person_key,
                    layout=layout,
                )
                .returning(optouts.c.id)
            )
            return int(result.scalar_one())

    def optouts(self, model: str | None = None) -> list[OptOut]:
        with self.sessions() as session:
            query = select(optouts).order_by(optouts.c.id)
            if model is not None:
                query = query.where(optouts.c.model == model)
            rows = session.execute(query).all()
        return [
            OptOut(r.id, r.model, np.frombuffer(r.template, dtype=np.float32), r.person_key, r.layout) for r in rows
        ]
