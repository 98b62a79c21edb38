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
                               photo_sha256="0" * 64, matches=[(1, 1, "Madonna", "/g/M/1.jpg", 0.9)])  # fmt: skip
    assert query_id == 1
    assert store.chat_settings(7) == (None, 3)
    assert [item.top_name for item in store.history(7, 8)] == ["Madonna"]
    assert store.forget(7, 8) == 1
    store.close()


def test_alembic_command_line_from_repo_root(tmp_path):
    database = tmp_path / "cli.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    alembic = [sys.executable, "-m", "alembic"]
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(alembic + args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert TABLES <= tables(database)
