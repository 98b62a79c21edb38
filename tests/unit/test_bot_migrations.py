"""Data migrations on a real SQLite file (the schema round trips on SQLite and PostgreSQL are in test_bot_db.py)."""

from __future__ import annotations

import sqlite3

from bot.db import HistoryStore, alembic_config, upgrade


def test_0002_drops_the_photo_hash_and_retention_purges(tmp_path):
    """An 0001 database with a row keeps the row, loses the photo hash; old queries are purged by age."""
    from alembic import command

    database = tmp_path / "old.sqlite3"
    url = f"sqlite:///{database}"
    upgrade(url, "0001")
    with sqlite3.connect(database) as connection:
        connection.execute(
            "insert into queries (chat_id, user_id, created_at, model, k, faces, latency_ms, photo_sha256) "
            "values (1, 2, '2020-01-01 00:00:00', 'facenet', 5, 1, 10.0, ?)",
            ("a" * 64,),
        )
        connection.execute(
            "insert into matches (query_id, face, rank, name, path, similarity) values (1, 1, 1, 'M', 'M/1.jpg', 0.9)"
        )
    upgrade(url)
    with sqlite3.connect(database) as connection:
        columns = {row[1] for row in connection.execute("pragma table_info(queries)")}
        assert "photo_sha256" not in columns and "user_id" in columns
        assert connection.execute("select count(*) from queries").fetchone()[0] == 1
    store = HistoryStore(url)
    store.add_query(chat_id=1, user_id=2, model="facenet", k=5, faces=1, latency_ms=5.0, matches=[])
    assert store.purge_older_than(30) == 1  # the 2020 row, not today's
    assert [item.model for item in store.history(1, 2)] == ["facenet"]
    with sqlite3.connect(database) as connection:
        assert connection.execute("select count(*) from matches").fetchone()[0] == 0
    store.close()
    command.downgrade(alembic_config(url), "0001")
    with sqlite3.connect(database) as connection:
        assert "photo_sha256" in {row[1] for row in connection.execute("pragma table_info(queries)")}
