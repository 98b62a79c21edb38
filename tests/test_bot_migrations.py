"""The Alembic migrations: upgrade, downgrade and upgrade again on a fresh SQLite file, from any directory."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.db import Store, alembic_config, upgrade

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLES = {"chat_settings", "queries", "matches"}


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}


def test_upgrade_downgrade_upgrade(tmp_path, monkeypatch):
    from alembic import command

    database = tmp_path / "fresh.sqlite3"
    url = f"sqlite:///{database}"
    monkeypatch.chdir(tmp_path)  # cwd must not matter
    upgrade(url)
    assert TABLES <= tables(database)
    command.downgrade(alembic_config(url), "base")
    assert not TABLES & tables(database)
    upgrade(url)
    assert TABLES <= tables(database)

    store = Store(url)
    store.set_chat_k(7, 3)
    query_id = store.add_query(chat_id=7, user_id=8, model="facenet", k=3, faces=1, latency_ms=12.5,
                               matches=[(1, 1, "Madonna", "/g/M/1.jpg", 0.9)])  # fmt: skip
    assert query_id == 1
    assert store.chat_settings(7) == (None, 3)
    assert [item.top_name for item in store.history(7, 8)] == ["Madonna"]
    assert store.forget(7, 8) == 1
    store.close()


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
        connection.execute("insert into matches (query_id, face, rank, name, path, similarity) values (1, 1, 1, 'M', 'M/1.jpg', 0.9)")
    upgrade(url)
    with sqlite3.connect(database) as connection:
        columns = {row[1] for row in connection.execute("pragma table_info(queries)")}
        assert "photo_sha256" not in columns and "user_id" in columns
        assert connection.execute("select count(*) from queries").fetchone()[0] == 1
    store = Store(url)
    store.add_query(chat_id=1, user_id=2, model="facenet", k=5, faces=1, latency_ms=5.0, matches=[])
    assert store.purge_older_than(30) == 1  # the 2020 row, not today's
    assert [item.model for item in store.history(1, 2)] == ["facenet"]
    with sqlite3.connect(database) as connection:
        assert connection.execute("select count(*) from matches").fetchone()[0] == 0
    store.close()
    command.downgrade(alembic_config(url), "0001")
    with sqlite3.connect(database) as connection:
        assert "photo_sha256" in {row[1] for row in connection.execute("pragma table_info(queries)")}


def test_alembic_command_line_from_repo_root(tmp_path):
    database = tmp_path / "cli.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    alembic = [sys.executable, "-m", "alembic"]
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(alembic + args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert TABLES <= tables(database)
