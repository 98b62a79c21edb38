"""History and per-chat settings: SQLAlchemy 2.0 models and the repository the handlers use.

The schema is owned by Alembic (`migrations/`); `upgrade()` applies it. Every method here is
blocking: handlers call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

if TYPE_CHECKING:  # alembic is imported when the database is migrated
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
REMOVED = ""  # the identity name of an answer whose person was removed from the gallery since


class Base(DeclarativeBase):
    pass


class ChatSettings(Base):
    __tablename__ = "chat_settings"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    model: Mapped[str | None] = mapped_column(String(32))
    k: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Query(Base):
    __tablename__ = "queries"
    __table_args__ = (
        Index("ix_queries_chat_user_created", "chat_id", "user_id", "created_at"),
        Index("ix_queries_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(32))
    k: Mapped[int] = mapped_column(Integer)
    faces: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)

    matches: Mapped[list[MatchRow]] = relationship(
        back_populates="query", cascade="all, delete-orphan", passive_deletes=True, order_by="MatchRow.id"
    )
    answers: Mapped[list[FaceAnswer]] = relationship(
        back_populates="query", cascade="all, delete-orphan", passive_deletes=True, order_by="FaceAnswer.face"
    )


class MatchRow(Base):
    __tablename__ = "matches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("queries.id", ondelete="CASCADE"), index=True)
    face: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    similarity: Mapped[float] = mapped_column(Float)

    query: Mapped[Query] = relationship(back_populates="matches")


class FaceAnswer(Base):
    """The open-set decision for one face of a query: who it is, or NULL (not in the gallery)."""

    __tablename__ = "query_faces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("queries.id", ondelete="CASCADE"), index=True)
    face: Mapped[int] = mapped_column(Integer)
    identity_name: Mapped[str | None] = mapped_column(String(255))
    identity_score: Mapped[float] = mapped_column(Float)

    query: Mapped[Query] = relationship(back_populates="answers")


class ButtonState(Base):
    """What an inline button needs, shared by every replica and kept across restarts until `expires_at`.

    `kind`: "result" (More matches / Show faces: the answer's photos, faces and ranks shown) or "remove" (a
    `/remove` confirmation); `payload` is JSON.
    """

    __tablename__ = "button_states"
    __table_args__ = (Index("ix_button_states_expires_at", "expires_at"),)

    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Claim(Base):
    """A one-time claim (a button pressed, an album answered) or a lease (a user's search running) any replica sees.

    Inserting the key wins; a second insert fails on the primary key. A lease past `expires_at` may be taken over.
    """

    __tablename__ = "claims"
    __table_args__ = (Index("ix_claims_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlbumPart(Base):
    """One photo of a media group (album) as it arrived at any replica; kept so `/add Name` can answer the album."""

    __tablename__ = "album_parts"
    __table_args__ = (
        UniqueConstraint("chat_id", "media_group_id", "message_id", name="uq_album_parts_message"),
        Index("ix_album_parts_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    media_group_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    file_id: Mapped[str] = mapped_column(String(255))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    caption: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class HistoryItem:
    created_at: datetime
    model: str
    faces: int
    top_name: str | None
    top_similarity: float | None
    answers: tuple[tuple[str | None, float], ...] = ()  # per face: the person named (None: not in the gallery), score


@dataclass(frozen=True)
class Stats:
    queries: int
    users: int
    median_latency_ms: float | None


def migrations_dir() -> Path:
    """`migrations/` next to the `bot` package (a checkout), else in the working directory (an install)."""
    for root in (ROOT, Path.cwd()):
        if (root / "migrations" / "env.py").is_file():
            return (root / "migrations").resolve()
    raise FileNotFoundError(f"no migrations/ folder in {ROOT} or {Path.cwd()}")


def alembic_config(url: str) -> Config:
    """An Alembic Config with an absolute script_location: works from any working directory."""
    from alembic.config import Config

    script_location = migrations_dir()
    ini = script_location.parent / "alembic.ini"
    config = Config(str(ini)) if ini.is_file() else Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def _rowcount(result: Any) -> int:
    """Rows a DELETE or UPDATE touched (a CursorResult's rowcount)."""
    return int(getattr(result, "rowcount", 0) or 0)


SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    """WAL (readers never block the writer; another replica's or process's write waits, not fails) and a busy
    timeout: a write meeting another one's lock waits up to 30 s instead of raising "database is locked"."""
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class HistoryStore:
    """The bot's history and chat settings over one database (queries, their matches, per-chat model and k);
    `bot.state.SharedState` keeps the buttons, claims, leases and album parts in the same database."""

    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: SAEngine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # ---- per-chat settings -------------------------------------------------------------

    def chat_settings(self, chat_id: int) -> tuple[str | None, int | None]:
        with self.sessions() as session:
            row = session.get(ChatSettings, chat_id)
            return (row.model, row.k) if row else (None, None)

    def set_chat_model(self, chat_id: int, model: str) -> None:
        self._update_chat(chat_id, model=model)

    def set_chat_k(self, chat_id: int, k: int) -> None:
        self._update_chat(chat_id, k=k)

    def _update_chat(self, chat_id: int, **values: Any) -> None:
        """Update the chat's row, or add it; if another replica added it meanwhile, update theirs."""
        for attempt in range(2):
            try:
                with self.sessions.begin() as session:
                    row = session.get(ChatSettings, chat_id)
                    if row is None:
                        row = ChatSettings(chat_id=chat_id)
                        session.add(row)
                    for key, value in values.items():
                        setattr(row, key, value)
                    row.updated_at = utcnow()
                return
            except IntegrityError:  # the same new chat, inserted by another store between our get and insert
                if attempt:
                    raise

    # ---- queries -----------------------------------------------------------------------

    def add_query(
        self,
        *,
        chat_id: int,
        user_id: int,
        model: str,
        k: int,
        faces: int,
        latency_ms: float,
        matches: Sequence[tuple[int, int, str, str, float]],
        answers: Sequence[tuple[int, str | None, float]] = (),
    ) -> int:
        """Record one search; `matches` holds (face number, rank, name, path, similarity), `answers` each face's
        open-set decision (face number, person or None, score)."""
        with self.sessions.begin() as session:
            query = Query(
                chat_id=chat_id,
                user_id=user_id,
                created_at=utcnow(),
                model=model,
                k=k,
                faces=faces,
                latency_ms=latency_ms,
            )
            query.matches = [
                MatchRow(face=face, rank=rank, name=name, path=path, similarity=similarity)
                for face, rank, name, path, similarity in matches
            ]
            query.answers = [
                FaceAnswer(face=face, identity_name=name, identity_score=score) for face, name, score in answers
            ]
            session.add(query)
            session.flush()
            return query.id

    def history(self, chat_id: int, user_id: int, limit: int = 10) -> list[HistoryItem]:
        with self.sessions() as session:
            queries = session.scalars(
                select(Query)
                .where(Query.chat_id == chat_id, Query.user_id == user_id)
                .order_by(Query.created_at.desc(), Query.id.desc())
                .limit(limit)
            ).all()
            items = []
            for query in queries:
                best = max(query.matches, key=lambda m: m.similarity, default=None)
                created = query.created_at if query.created_at.tzinfo else query.created_at.replace(tzinfo=timezone.utc)
                items.append(
                    HistoryItem(
                        created_at=created,
                        model=query.model,
                        faces=query.faces,
                        top_name=best.name if best else None,
                        top_similarity=best.similarity if best else None,
                        answers=tuple((a.identity_name, a.identity_score) for a in query.answers),
                    )
                )
            return items

    def forget(self, chat_id: int, user_id: int) -> int:
        """Delete this user's queries in this chat (their matches go with them); returns how many."""
        with self.sessions.begin() as session:
            ids = session.scalars(select(Query.id).where(Query.chat_id == chat_id, Query.user_id == user_id)).all()
            if ids:
                session.execute(delete(MatchRow).where(MatchRow.query_id.in_(ids)))
                session.execute(delete(FaceAnswer).where(FaceAnswer.query_id.in_(ids)))
                session.execute(delete(Query).where(Query.id.in_(ids)))
            return len(ids)

    def forget_user(self, user_id: int) -> int:
        """Delete this user's queries in every chat (`/forget`); returns how many."""
        with self.sessions.begin() as session:
            ids = session.scalars(select(Query.id).where(Query.user_id == user_id)).all()
            self._delete_queries(session, ids)
            return len(ids)

    def forget_person(self, name: str) -> int:
        """A removed person leaves the history: their matches are deleted and answers naming them keep no name
        (`/history` says "a removed person"). Returns how many rows changed."""
        with self.sessions.begin() as session:
            changed = _rowcount(session.execute(delete(MatchRow).where(MatchRow.name == name)))
            renamed = update(FaceAnswer).where(FaceAnswer.identity_name == name).values(identity_name=REMOVED)
            return changed + _rowcount(session.execute(renamed))

    @staticmethod
    def _delete_queries(session: Any, ids: Sequence[int]) -> None:
        if ids:
            session.execute(delete(MatchRow).where(MatchRow.query_id.in_(ids)))
            session.execute(delete(FaceAnswer).where(FaceAnswer.query_id.in_(ids)))
            session.execute(delete(Query).where(Query.id.in_(ids)))

    def purge_older_than(self, days: float) -> int:
        """Delete queries (and their matches) older than `days` days; returns how many (HISTORY_RETENTION_DAYS)."""
        cutoff = utcnow() - timedelta(days=days)
        with self.sessions.begin() as session:
            ids = session.scalars(select(Query.id).where(Query.created_at < cutoff)).all()
            if ids:
                session.execute(delete(MatchRow).where(MatchRow.query_id.in_(ids)))
                session.execute(delete(FaceAnswer).where(FaceAnswer.query_id.in_(ids)))
                session.execute(delete(Query).where(Query.id.in_(ids)))
            return len(ids)

    def stats(self) -> Stats:
        with self.sessions() as session:
            count = session.scalar(select(func.count(Query.id))) or 0
            users = session.scalar(select(func.count(func.distinct(Query.user_id)))) or 0
            latencies = session.scalars(select(Query.latency_ms).order_by(Query.id.desc()).limit(10_000)).all()
            median = statistics.median(latencies) if latencies else None
            return Stats(queries=count, users=users, median_latency_ms=median)
