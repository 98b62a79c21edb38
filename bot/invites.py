"""Invite links in the history database: the codes (`invites`), who was admitted by one (`admissions`), consents to be
searched (`consents`, purpose "search"), and per-day counts for the admins' audit (`audit_counts`: counts, never who).

A code is `secrets.token_urlsafe(16)` (128 bits, 22 characters of A-Z a-z 0-9 _ -: a Telegram deep-link payload). Only
its SHA-256 is stored, with its first `PREFIX_CHARS` characters for the admins' list; a code given is hashed and looked
up by its hash (timing says nothing of a stored code), and the hash compared with `hmac.compare_digest`. Admitting
takes a use in one UPDATE ... WHERE uses_left > 0 AND not revoked AND not expired, in the transaction that inserts
the admission: two replicas cannot admit more users than a code has uses, and a user is admitted once. Every method
blocks: call them through the runtime's `db` executor.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import cast

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from bot.db import Base, HistoryStore, Query, _rowcount, utcnow
from bot.follow_store import Consent

CODE_BYTES = 16  # 128 random bits
PREFIX_CHARS = 6  # shown to admins (/invites) and accepted by /revoke; the other 92+ bits stay secret
MAX_CODE_CHARS = 64  # Telegram's limit for a deep-link payload
CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SEARCH = "search"  # consent purposes: "search" here, "follow" (bot/follow_store.py)
REFUSAL = "refusal"  # audit kinds kept in audit_counts

# Core tables on the history's metadata (bot.db.Base: the schema the migrations must match); `consents` is mapped by
# bot/follow_store.py, whose rows have a purpose ("follow" there, "search" here).
invites = Table(
    "invites",
    Base.metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("prefix", String(8), nullable=False),
    Column("created_by", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("uses", Integer, nullable=False),
    Column("uses_left", Integer, nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_invites_prefix", "prefix"),
)
admissions = Table(
    "admissions",
    Base.metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("code_hash", String(64), nullable=False),
    Column("admitted_at", DateTime(timezone=True), nullable=False),
    Index("ix_admissions_admitted_at", "admitted_at"),
)
audit_counts = Table(
    "audit_counts",
    Base.metadata,
    Column("day", String(10), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("count", Integer, nullable=False),
)
consents = cast(Table, Consent.__table__)


class Admitted(enum.Enum):
    ADMITTED = "admitted"  # the code was valid: one use taken, the user stored
    ALREADY = "already"  # the user was admitted before (no use taken)
    INVALID = "invalid"  # malformed, unknown, expired, used up or revoked: nothing admitted


@dataclass(frozen=True)
class NewInvite:
    code: str
    expires_at: datetime
    uses: int


@dataclass(frozen=True)
class InviteInfo:
    prefix: str
    created_at: datetime
    expires_at: datetime
    uses: int
    uses_left: int


@dataclass(frozen=True)
class Revoked:
    """What `/revoke` did: `revoked` codes ended (0 or 1), or `ambiguous` live codes share the prefix given."""

    revoked: int
    ambiguous: int = 0


@dataclass(frozen=True)
class AuditDay:
    day: date
    admissions: int
    searches: int
    refusals: int


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def well_formed(code: str) -> bool:
    """A possible code: 1-64 characters of A-Z a-z 0-9 _ - (anything else is not looked up)."""
    return len(code) <= MAX_CODE_CHARS and CODE_PATTERN.fullmatch(code) is not None


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class InviteStore:
    """Invite codes, admissions, search consents and audit counts over one `HistoryStore`'s database."""

    def __init__(self, store: HistoryStore):
        self.sessions = store.sessions

    # ---- codes ---------------------------------------------------------------------------------

    def create(self, created_by: int, uses: int, days: float) -> NewInvite:
        code = secrets.token_urlsafe(CODE_BYTES)
        now = utcnow()
        expires = now + timedelta(days=days)
        with self.sessions.begin() as session:
            session.execute(
                insert(invites).values(
                    code_hash=code_hash(code),
                    prefix=code[:PREFIX_CHARS],
                    created_by=created_by,
                    created_at=now,
                    expires_at=expires,
                    uses=uses,
                    uses_left=uses,
                    revoked_at=None,
                )
            )
        return NewInvite(code, expires, uses)

    def live(self) -> list[InviteInfo]:
        """Codes that still admit: not revoked, not expired, uses left; newest first."""
        now = utcnow()
        with self.sessions() as session:
            rows = session.execute(
                select(invites)
                .where(invites.c.revoked_at.is_(None), invites.c.expires_at > now, invites.c.uses_left > 0)
                .order_by(invites.c.created_at.desc())
            ).all()
        return [InviteInfo(r.prefix, _aware(r.created_at), _aware(r.expires_at), r.uses, r.uses_left) for r in rows]

    def revoke(self, code: str) -> Revoked:
        """End a code given whole, or by the prefix /invites shows when one live code has it."""
        now = utcnow()
        live = (invites.c.revoked_at.is_(None), invites.c.expires_at > now)
        with self.sessions.begin() as session:
            if len(code) > PREFIX_CHARS:
                hashed = code_hash(code)
                row = session.execute(select(invites.c.code_hash).where(invites.c.code_hash == hashed, *live)).first()
                if row is None or not hmac.compare_digest(row.code_hash, hashed):
                    return Revoked(0)
                matching = [hashed]
            else:
                matching = list(session.scalars(select(invites.c.code_hash).where(invites.c.prefix == code, *live)))
                if len(matching) != 1:
                    return Revoked(0, ambiguous=len(matching) if len(matching) > 1 else 0)
            done = session.execute(update(invites).where(invites.c.code_hash == matching[0]).values(revoked_at=now))
            return Revoked(_rowcount(done))

    # ---- admissions ----------------------------------------------------------------------------

    def admit(self, user_id: int, code: str) -> Admitted:
        """Admit `user_id` with `code`: one use taken atomically, or nothing when the code does not admit."""
        if not well_formed(code):
            return Admitted.INVALID
        hashed = code_hash(code)
        now = utcnow()
        try:
            with self.sessions.begin() as session:
                if session.execute(select(admissions.c.user_id).where(admissions.c.user_id == user_id)).first():
                    return Admitted.ALREADY
                taken = session.execute(
                    update(invites)
                    .where(
                        invites.c.code_hash == hashed,
                        invites.c.uses_left > 0,
                        invites.c.revoked_at.is_(None),
                        invites.c.expires_at > now,
                    )
                    .values(uses_left=invites.c.uses_left - 1)
                    .returning(invites.c.code_hash)
                ).first()
                if taken is None or not hmac.compare_digest(taken.code_hash, hashed):
                    return Admitted.INVALID
                session.execute(insert(admissions).values(user_id=user_id, code_hash=hashed, admitted_at=now))
        except IntegrityError:  # the same user admitted by another replica meanwhile: their use is given back
            return Admitted.ALREADY
        return Admitted.ADMITTED

    def is_admitted(self, user_id: int) -> bool:
        with self.sessions() as session:
            return (
                session.execute(select(admissions.c.user_id).where(admissions.c.user_id == user_id)).first() is not None
            )

    # ---- consent to be searched ----------------------------------------------------------------

    def has_consent(self, user_id: int, purposes: tuple[str, ...] = (SEARCH,)) -> bool:
        with self.sessions() as session:
            found = session.execute(
                select(consents.c.user_id).where(consents.c.user_id == user_id, consents.c.purpose.in_(purposes))
            ).first()
            return found is not None

    def consent_time(self, user_id: int, purpose: str = SEARCH) -> datetime | None:
        with self.sessions() as session:
            value = session.scalar(
                select(consents.c.agreed_at).where(consents.c.user_id == user_id, consents.c.purpose == purpose)
            )
            return _aware(value) if value is not None else None

    def record_consent(self, user_id: int, text_version: int, purpose: str = SEARCH) -> None:
        """Record the agreement with its time (a second press, on any replica, keeps the first)."""
        try:
            with self.sessions.begin() as session:
                session.execute(
                    insert(consents).values(
                        user_id=user_id, purpose=purpose, agreed_at=utcnow(), text_version=text_version
                    )
                )
        except IntegrityError:
            pass

    def forget_consents(self, user_id: int) -> int:
        """/forget: every consent of the user goes (they are asked again next time)."""
        with self.sessions.begin() as session:
            return _rowcount(session.execute(delete(consents).where(consents.c.user_id == user_id)))

    # ---- audit ---------------------------------------------------------------------------------

    def count(self, kind: str, when: datetime | None = None) -> None:
        """One more `kind` today (UTC): an UPDATE, or the day's first row (another replica may insert it first)."""
        day = (when or utcnow()).date().isoformat()
        where = (audit_counts.c.day == day, audit_counts.c.kind == kind)
        for attempt in range(2):
            try:
                with self.sessions.begin() as session:
                    changed = session.execute(update(audit_counts).where(*where).values(count=audit_counts.c.count + 1))
                    if not _rowcount(changed):
                        session.execute(insert(audit_counts).values(day=day, kind=kind, count=1))
                return
            except IntegrityError:
                if attempt:
                    raise

    def audit(self, days: int = 7) -> list[AuditDay]:
        """Admissions, searches (the history's queries: their rows go with HISTORY_RETENTION_DAYS and /forget) and
        refusals per day, for the last `days` days (UTC), oldest first. Counts only: never who looked up whom."""
        today = utcnow().date()
        first = today - timedelta(days=days - 1)
        since = datetime.combine(first, datetime.min.time(), tzinfo=timezone.utc)
        with self.sessions() as session:
            stamps: list[datetime] = list(
                session.scalars(select(admissions.c.admitted_at).where(admissions.c.admitted_at >= since))
            )
            admitted = Counter(_aware(value).date() for value in stamps)
            searched = Counter(
                _aware(value).date()
                for value in session.scalars(select(Query.created_at).where(Query.created_at >= since))
            )
            refused: dict[date, int] = {
                date.fromisoformat(str(day)): int(str(count))
                for day, count in session.execute(
                    select(audit_counts.c.day, func.sum(audit_counts.c.count))
                    .where(audit_counts.c.day >= first.isoformat(), audit_counts.c.kind == REFUSAL)
                    .group_by(audit_counts.c.day)
                ).all()
            }
        return [
            AuditDay(day, admitted[day], searched[day], refused.get(day, 0))
            for day in (first + timedelta(days=n) for n in range(days))
        ]
