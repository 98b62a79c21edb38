"""Follow and delivery in the history database: a user's agreement (`consents`), their one face template
(`followers`) and the outbox of photos to send them (`deliveries`), over `HistoryStore`'s engine and sessions.

Each (user, photo) is one outbox row, ever: the UNIQUE (user_id, path) constraint makes a second insert a no-op
(ON CONFLICT DO NOTHING), whichever replica matched, before or after a restart. A replica sends a row only after
claiming it (`claim_batch`: one UPDATE that takes pending rows, or rows whose claim ran out, under a random token);
a row is marked sent once Telegram took it. Every method blocks: call them through the runtime's `db` executor.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from bot.db import Base, HistoryStore, _rowcount, utcnow

log = logging.getLogger(__name__)

FOLLOW = "follow"  # the consent's purpose
CONSENT_TEXT_VERSION = 1  # bump when what the bot says it keeps changes (bot/services/follow.py CONSENT_TEXT)
# Outbox rows one claim takes at most, newest first: a claim is sent before the next is taken, so a small one keeps a
# new photo's wait short while followers' large first deliveries (every photo they were already in) drain behind it.
BATCH_ROWS = 50
PENDING, SENDING, SENT, SKIPPED = "pending", "sending", "sent", "skipped"


class Consent(Base):
    """The user pressed "I agree" to what following keeps (`text_version`: which wording). One row per user and
    purpose (migration 0006): "follow" here, "search" for invite links (bot/invites.py)."""

    __tablename__ = "consents"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    agreed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    text_version: Mapped[int] = mapped_column(Integer)


class Follower(Base):
    """One face template per user, kept until /unfollow, /forget or `expires_at` (FOLLOW_TTL_DAYS)."""

    __tablename__ = "followers"
    __table_args__ = (Index("ix_followers_expires_at", "expires_at"),)

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(32))
    template: Mapped[bytes] = mapped_column(LargeBinary)  # float32 unit vector
    selfies: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_batch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    blocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Delivery(Base):
    """One gallery photo (relative path, the follower's face box on it) for one user: the outbox row."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("user_id", "path", name="uq_deliveries_user_path"),
        Index("ix_deliveries_status", "status", "user_id"),
        Index("ix_deliveries_claimed_by", "claimed_by"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(1024))
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    similarity: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(32))


@dataclass(frozen=True)
class FollowerTemplate:
    """What matching needs of a follower."""

    user_id: int
    chat_id: int
    model: str
    template: np.ndarray  # float32 unit vector
    created_at: datetime


@dataclass(frozen=True)
class FollowInfo:
    """What /following says."""

    user_id: int
    chat_id: int
    selfies: int
    created_at: datetime
    expires_at: datetime
    delivered: int
    waiting: int


@dataclass(frozen=True)
class FirstPhotos:
    """A new follower's first delivery: how many photos were queued, or that the gallery is still too small."""

    queued: int
    gallery_too_small: bool = False


@dataclass(frozen=True)
class NewDelivery:
    """A photo to add to a follower's outbox."""

    path: str  # relative to the gallery
    box: tuple[int, int, int, int]
    similarity: float


@dataclass(frozen=True)
class Outgoing:
    """A claimed outbox row."""

    id: int
    path: str
    box: tuple[int, int, int, int]
    similarity: float


@dataclass(frozen=True)
class Batch:
    """One follower's claimed rows, sent as albums; `token` marks them as this replica's."""

    token: str
    user_id: int
    chat_id: int
    items: list[Outgoing]


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _due(now: datetime):  # type: ignore[no-untyped-def]
    """Rows a sender may claim: pending, or being sent by a replica whose claim ran out (it died mid-send)."""
    return or_(Delivery.status == PENDING, and_(Delivery.status == SENDING, Delivery.claimed_until < now))


class FollowStore:
    """Consents, followers and the outbox over one `HistoryStore`'s database."""

    def __init__(self, store: HistoryStore):
        self.engine = store.engine
        self.sessions = store.sessions

    # ---- consent ---------------------------------------------------------------------------

    def has_consent(self, user_id: int) -> bool:
        with self.sessions() as session:
            return session.get(Consent, (user_id, FOLLOW)) is not None

    def record_consent(self, user_id: int, text_version: int = CONSENT_TEXT_VERSION) -> None:
        """Record the agreement (a second press, on any replica, keeps the first)."""
        try:
            with self.sessions.begin() as session:
                if session.get(Consent, (user_id, FOLLOW)) is None:
                    session.add(Consent(user_id=user_id, purpose=FOLLOW, agreed_at=utcnow(), text_version=text_version))
        except IntegrityError:
            pass

    # ---- followers -------------------------------------------------------------------------

    def put_follower(
        self, user_id: int, chat_id: int, model: str, template: np.ndarray, selfies: int, ttl_days: float
    ) -> None:
        """The user's template (a new one replaces theirs); expires in `ttl_days` days. Photos already sent to them
        stay in the outbox as sent: they are not sent again."""
        vector = np.asarray(template, np.float32).reshape(-1)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        now = utcnow()
        values = {
            "chat_id": chat_id,
            "model": model,
            "template": vector.astype(np.float32).tobytes(),
            "selfies": selfies,
            "created_at": now,
            "expires_at": now + timedelta(days=ttl_days),
            "last_batch_at": None,
            "blocked_at": None,
        }
        for attempt in range(2):
            try:
                with self.sessions.begin() as session:
                    row = session.get(Follower, user_id)
                    if row is None:
                        session.add(Follower(user_id=user_id, **values))
                    else:
                        for key, value in values.items():
                            setattr(row, key, value)
                        session.execute(delete(Delivery).where(Delivery.user_id == user_id, Delivery.status != SENT))
                return
            except IntegrityError:  # the same user following on two replicas at once
                if attempt:
                    raise

    def follower(self, user_id: int) -> FollowInfo | None:
        with self.sessions() as session:
            row = session.get(Follower, user_id)
            if row is None or _aware(row.expires_at) <= utcnow():
                return None
            counts = dict(
                session.execute(
                    select(Delivery.status, func.count(Delivery.id))
                    .where(Delivery.user_id == user_id)
                    .group_by(Delivery.status)
                ).all()
            )
            return FollowInfo(
                user_id=row.user_id,
                chat_id=row.chat_id,
                selfies=row.selfies,
                created_at=_aware(row.created_at),
                expires_at=_aware(row.expires_at),
                delivered=int(counts.get(SENT, 0)),
                waiting=int(counts.get(PENDING, 0)) + int(counts.get(SENDING, 0)),
            )

    def templates(self, model: str, user_ids: Sequence[int] | None = None) -> list[FollowerTemplate]:
        """The live followers of `model` (not expired, not blocked), optionally only `user_ids`."""
        query = select(Follower).where(
            Follower.model == model, Follower.blocked_at.is_(None), Follower.expires_at > utcnow()
        )
        if user_ids is not None:
            query = query.where(Follower.user_id.in_(list(user_ids)))
        with self.sessions() as session:
            return [
                FollowerTemplate(
                    r.user_id, r.chat_id, r.model, np.frombuffer(r.template, np.float32).copy(), _aware(r.created_at)
                )
                for r in session.scalars(query.order_by(Follower.user_id))
            ]

    def remove_follower(self, user_id: int) -> bool:
        """/unfollow (or a user who blocked the bot): the template and every unsent row go at once. The sent rows
        stay (so a photo is never sent twice, should they follow again); `forget_user` deletes them."""
        with self.sessions.begin() as session:
            removed = _rowcount(session.execute(delete(Follower).where(Follower.user_id == user_id)))
            session.execute(delete(Delivery).where(Delivery.user_id == user_id, Delivery.status != SENT))
            return bool(removed)

    def forget_user(self, user_id: int) -> None:
        """/forget: the template, the whole outbox and the agreement."""
        with self.sessions.begin() as session:
            session.execute(delete(Follower).where(Follower.user_id == user_id))
            session.execute(delete(Delivery).where(Delivery.user_id == user_id))
            session.execute(delete(Consent).where(Consent.user_id == user_id))

    def purge_expired(self) -> int:
        """Followers past FOLLOW_TTL_DAYS, with their unsent rows; returns how many followers."""
        now = utcnow()
        with self.sessions.begin() as session:
            gone = session.scalars(select(Follower.user_id).where(Follower.expires_at <= now)).all()
            if gone:
                session.execute(delete(Follower).where(Follower.user_id.in_(gone)))
                session.execute(delete(Delivery).where(Delivery.user_id.in_(gone), Delivery.status != SENT))
            return len(gone)

    # ---- the outbox ------------------------------------------------------------------------

    def add_deliveries(self, user_id: int, chat_id: int, items: Sequence[NewDelivery]) -> int:
        """New outbox rows for a live follower; a photo already in their outbox (any status) is left alone.
        Returns how many rows were added (0 when the user no longer follows)."""
        if not items:
            return 0
        now = utcnow()
        rows = [
            {"user_id": user_id, "chat_id": chat_id, "path": item.path, "x": int(item.box[0]),
             "y": int(item.box[1]), "w": int(item.box[2]), "h": int(item.box[3]),
             "similarity": float(item.similarity), "status": PENDING, "created_at": now}
            for item in items
        ]  # fmt: skip
        dialect = self.engine.dialect.name
        with self.sessions.begin() as session:
            if session.get(Follower, user_id) is None:  # unfollowed meanwhile: nothing is added
                return 0
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert
                else:
                    from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
                statement = insert(Delivery).values(rows).on_conflict_do_nothing(index_elements=["user_id", "path"])
                # counted by RETURNING: a many-row INSERT's rowcount is -1 on PostgreSQL
                return len(session.execute(statement.returning(Delivery.id)).all())
        added = 0  # another database: one row at a time, a duplicate fails alone
        for row in rows:
            try:
                with self.sessions.begin() as session:
                    session.add(Delivery(**row))
                added += 1
            except IntegrityError:
                pass
        return added

    def claim_batch(self, interval_s: float, claim_s: float, limit: int = BATCH_ROWS) -> list[Batch]:
        """Take due rows of followers whose last batch is at least `interval_s` old, for `claim_s` seconds, in one
        UPDATE (two replicas never take the same row); the followers' `last_batch_at` moves to now. One batch per
        follower, its rows oldest first. The newest rows are taken first: a photo just matched goes out before the
        rest of someone's first delivery, which follows in the next claims (or after the interval)."""
        now = utcnow()
        token = secrets.token_hex(8)
        interval_cutoff = now - timedelta(seconds=interval_s)
        due_ids = (
            select(Delivery.id)
            .join(Follower, Follower.user_id == Delivery.user_id)
            .where(
                _due(now),
                Follower.blocked_at.is_(None),
                or_(Follower.last_batch_at.is_(None), Follower.last_batch_at <= interval_cutoff),
            )
            .order_by(Delivery.id.desc())
            .limit(limit)
        )
        with self.sessions.begin() as session:
            claimed = session.execute(
                update(Delivery)
                .where(Delivery.id.in_(due_ids.scalar_subquery()), _due(now))
                .values(status=SENDING, claimed_until=now + timedelta(seconds=claim_s), claimed_by=token)
                .execution_options(synchronize_session=False)
            )
            if not _rowcount(claimed):
                return []
            rows = session.scalars(
                select(Delivery).where(Delivery.claimed_by == token).order_by(Delivery.user_id, Delivery.id)
            ).all()
            users = sorted({r.user_id for r in rows})
            session.execute(
                update(Follower)
                .where(Follower.user_id.in_(users))
                .values(last_batch_at=now)
                .execution_options(synchronize_session=False)
            )
            batches: dict[int, Batch] = {}
            for r in rows:
                batch = batches.setdefault(r.user_id, Batch(token, r.user_id, r.chat_id, []))
                batch.items.append(Outgoing(r.id, r.path, (r.x, r.y, r.w, r.h), r.similarity))
            return list(batches.values())

    def renew_claim(self, token: str, ids: Sequence[int], claim_s: float) -> list[int]:
        """Which of `ids` this claim still holds (an /unfollow meanwhile deleted them), each held `claim_s` more
        seconds: a claim lasts while its sender works through it, and runs out soon after a sender died."""
        with self.sessions.begin() as session:
            return list(
                session.scalars(
                    update(Delivery)
                    .where(Delivery.id.in_(list(ids)), Delivery.claimed_by == token, Delivery.status == SENDING)
                    .values(claimed_until=utcnow() + timedelta(seconds=claim_s))
                    .returning(Delivery.id)
                    .execution_options(synchronize_session=False)
                )
            )

    def finish(self, token: str, ids: Sequence[int], status: str) -> int:
        """Rows of this claim sent (or skipped: their file vanished)."""
        with self.sessions.begin() as session:
            return _rowcount(
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(list(ids)), Delivery.claimed_by == token)
                    .values(status=status, sent_at=utcnow(), claimed_until=None)
                    .execution_options(synchronize_session=False)
                )
            )

    def unclaim(self, token: str, ids: Sequence[int]) -> None:
        """Give rows back (a send failed for a while): pending again, for a later batch."""
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(list(ids)), Delivery.claimed_by == token, Delivery.status == SENDING)
                .values(status=PENDING, claimed_until=None, claimed_by=None)
                .execution_options(synchronize_session=False)
            )

    def outbox(self, user_id: int) -> dict[str, str]:
        """Path -> status of every row of the user (tests, /following)."""
        with self.sessions() as session:
            return dict(
                session.execute(select(Delivery.path, Delivery.status).where(Delivery.user_id == user_id)).all()
            )
