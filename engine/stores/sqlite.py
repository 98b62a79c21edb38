"""SQLite files that several processes share (the local store's catalogue, the people registry)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa


def shared_sqlite(path: Path, metadata: sa.MetaData) -> sa.Engine:
    """An engine on `path` with `metadata`'s tables created if missing.

    WAL with synchronous=FULL (a committed transaction survives a power cut), a 30 s busy wait, and
    transactions begun explicitly: pysqlite does not BEGIN before a SELECT, so a read transaction would not be
    one snapshot. A connection whose `info["write"]` is set begins IMMEDIATE (takes the write lock at once).
    """
    engine = sa.create_engine(f"sqlite:///{path}")
    sa.event.listen(engine, "connect", _pragmas)
    sa.event.listen(
        engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")
    )
    with engine.begin() as conn:  # IF NOT EXISTS in one transaction: safe when processes open at once
        for table in metadata.sorted_tables:
            conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    return engine


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction begun IMMEDIATE on an engine from `shared_sqlite`: it holds SQLite's write lock from its
    start, so another process writing at the same time waits for it instead of failing on upgrade."""
    with engine.connect() as conn:
        conn.info["write"] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info["write"] = False


def _pragmas(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by the engine's "begin" event
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
