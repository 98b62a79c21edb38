"""The bot's database on a real SQLite file and on a real PostgreSQL server (`database_url` runs each test on both).

The Alembic migrations are walked one revision at a time, up to head and down to base and up again, and
the schema they build must match the SQLAlchemy models. The `HistoryStore` tests use its public methods only.
The sharing tests are what two bot replicas on one database do: two `HistoryStore` objects, and separate processes.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, select
from sqlalchemy import inspect as sa_inspect

import bot.follow_store  # noqa: F401 - the follow and invite tables are in Base.metadata once imported
import bot.invites  # noqa: F401
import bot.lookups  # noqa: F401
from bot.db import Base, HistoryStore, MatchRow, alembic_config, upgrade
from bot.follow_store import FollowStore, NewDelivery

REPO_ROOT = Path(__file__).resolve().parents[2]
# Telegram ids outgrow 32 bits: supergroup chats are -100xxxxxxxxxx, user ids pass 2**31.
BIG_CHAT = -1001234567890123
BIG_USER = 7_000_000_001


def add_query(store: HistoryStore, *, chat_id: int, user_id: int, latency_ms: float = 10.0, matches=(), **extra) -> int:
    """`store.add_query` with the arguments its current signature asks for (the schema is still changing)."""
    arguments = {"chat_id": chat_id, "user_id": user_id, "model": "facenet", "k": 3, "latency_ms": latency_ms,
                 "faces": len({m[0] for m in matches}), "matches": list(matches), **extra}  # fmt: skip
    parameters = inspect.signature(HistoryStore.add_query).parameters
    if "photo_sha256" in parameters:
        arguments.setdefault("photo_sha256", "ab" * 32)
    return store.add_query(**{key: value for key, value in arguments.items() if key in parameters})


def schema_diff(url: str) -> list:
    """What autogenerate would change to make the database match the models: empty when the migrations are right."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sa_inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def store(database_url):
    upgrade(database_url)
    store = HistoryStore(database_url)
    yield store
    store.close()


# ---- migrations ----------------------------------------------------------------------------


def test_migrations_walk_up_down_and_up_again_and_match_the_models(database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = alembic_config(database_url)
    script = ScriptDirectory.from_config(config)
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]  # base first
    assert revisions and revisions[-1] == script.get_current_head()
    model_tables = set(Base.metadata.tables)

    for revision in revisions:
        command.upgrade(config, revision)
        assert current_revision(database_url) == revision
    assert model_tables <= table_names(database_url)
    assert schema_diff(database_url) == []

    for revision in reversed(revisions):
        assert current_revision(database_url) == revision
        command.downgrade(config, "-1")
    assert current_revision(database_url) is None
    assert table_names(database_url) <= {"alembic_version"}

    upgrade(database_url)
    assert current_revision(database_url) == script.get_current_head()
    assert schema_diff(database_url) == []
    with_store = HistoryStore(database_url)
    try:
        add_query(with_store, chat_id=7, user_id=8, matches=[(1, 1, "Madonna", "/g/Madonna/1.jpg", 0.9)])
        assert [item.top_name for item in with_store.history(7, 8)] == ["Madonna"]
    finally:
        with_store.close()


def test_alembic_command_line_from_repo_root(database_url):
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(REPO_ROOT)}
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert set(Base.metadata.tables) <= table_names(database_url)
    assert schema_diff(database_url) == []


def test_upgrade_is_idempotent(database_url):
    upgrade(database_url)
    head = current_revision(database_url)
    upgrade(database_url)  # what every bot start does
    assert current_revision(database_url) == head


# ---- the HistoryStore API -------------------------------------------------------------------------


def test_chat_settings_default_set_and_overwrite(store):
    assert store.chat_settings(BIG_CHAT) == (None, None)
    store.set_chat_model(BIG_CHAT, "vgg16")
    assert store.chat_settings(BIG_CHAT) == ("vgg16", None)
    store.set_chat_k(BIG_CHAT, 5)
    assert store.chat_settings(BIG_CHAT) == ("vgg16", 5)
    store.set_chat_model(BIG_CHAT, "facenet")
    assert store.chat_settings(BIG_CHAT) == ("facenet", 5)
    store.set_chat_k(42, 1)
    assert store.chat_settings(42) == (None, 1)
    assert store.chat_settings(BIG_CHAT) == ("facenet", 5)


def test_history_newest_first_with_the_best_match(store):
    before = datetime.now(timezone.utc)
    first = add_query(store, chat_id=BIG_CHAT, user_id=BIG_USER,
                      matches=[(1, 1, "Ada", "/g/Ada/1.jpg", 0.61), (1, 2, "Zoë Ünicode", "/g/Zoë/2.jpg", 0.83)])  # fmt: skip
    second = add_query(store, chat_id=BIG_CHAT, user_id=BIG_USER, matches=[])  # no face
    third = add_query(store, chat_id=BIG_CHAT, user_id=BIG_USER,
                      matches=[(1, 1, "Bob", "/g/Bob/1.jpg", 0.7), (2, 1, "Cy", "/g/Cy/1.jpg", 0.75)])  # fmt: skip
    add_query(store, chat_id=BIG_CHAT, user_id=BIG_USER + 1, matches=[(1, 1, "Other", "/g/O/1.jpg", 0.9)])
    add_query(store, chat_id=BIG_CHAT + 1, user_id=BIG_USER, matches=[(1, 1, "Other", "/g/O/1.jpg", 0.9)])
    assert first < second < third

    items = store.history(BIG_CHAT, BIG_USER)
    assert [(i.top_name, i.faces) for i in items] == [("Cy", 2), (None, 0), ("Zoë Ünicode", 1)]
    assert items[0].top_similarity == pytest.approx(0.75)
    assert items[1].top_similarity is None
    assert items[2].top_similarity == pytest.approx(0.83)
    for item in items:
        assert item.model == "facenet"
        assert item.created_at.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= item.created_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert [i.top_name for i in store.history(BIG_CHAT, BIG_USER, limit=2)] == ["Cy", None]
    assert store.history(BIG_CHAT, 1) == []


def test_forget_deletes_only_that_users_queries_in_that_chat(store):
    for _ in range(3):
        add_query(store, chat_id=5, user_id=6, matches=[(1, 1, "Ada", "/g/Ada/1.jpg", 0.6), (1, 2, "Bo", "/b", 0.5)])
    add_query(store, chat_id=5, user_id=7, matches=[(1, 1, "Ada", "/g/Ada/1.jpg", 0.6)])
    add_query(store, chat_id=9, user_id=6, matches=[(1, 1, "Ada", "/g/Ada/1.jpg", 0.6)])

    assert store.forget(5, 6) == 3
    assert store.history(5, 6) == []
    assert store.forget(5, 6) == 0
    assert len(store.history(5, 7)) == 1
    assert len(store.history(9, 6)) == 1
    with store.engine.connect() as connection:  # the forgotten queries' matches went too
        assert connection.execute(select(func.count()).select_from(MatchRow)).scalar() == 2


def test_stats_count_queries_users_and_median_latency(store):
    empty = store.stats()
    assert (empty.queries, empty.users, empty.median_latency_ms) == (0, 0, None)
    for user, latency in ((1, 10.0), (1, 30.0), (2, 20.0), (BIG_USER, 1000.0)):
        add_query(store, chat_id=3, user_id=user, latency_ms=latency)
    stats = store.stats()
    assert (stats.queries, stats.users) == (4, 3)
    assert stats.median_latency_ms == pytest.approx(25.0)


# ---- sharing one database, as bot replicas do ----------------------------------------------


def test_two_stores_on_one_database_see_each_others_writes(database_url):
    upgrade(database_url)
    first, second = HistoryStore(database_url), HistoryStore(database_url)
    try:
        first.set_chat_model(11, "vgg16")
        assert second.chat_settings(11) == ("vgg16", None)
        second.set_chat_k(11, 4)
        assert first.chat_settings(11) == ("vgg16", 4)
        first.set_chat_model(11, "facenet")
        assert second.chat_settings(11) == ("facenet", 4)

        add_query(first, chat_id=11, user_id=12, matches=[(1, 1, "Ada", "/g/Ada/1.jpg", 0.6)])
        add_query(second, chat_id=11, user_id=12, matches=[(1, 1, "Bo", "/g/Bo/1.jpg", 0.7)])
        assert [i.top_name for i in first.history(11, 12)] == ["Bo", "Ada"]
        assert second.stats().queries == 2
        assert first.forget(11, 12) == 2
        assert second.history(11, 12) == []
    finally:
        first.close()
        second.close()


REPLICA = textwrap.dedent(
    """
    import sys

    import alembic.command  # imported before the start line, so both replicas really migrate at once
    from bot.db import HistoryStore, upgrade

    url, replica, queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    sys.stdin.readline()  # the test starts both at once
    upgrade(url)  # both replicas migrate the fresh database at start, as BotService.start does
    store = HistoryStore(url)
    parameters = HistoryStore.add_query.__code__.co_varnames
    extra = {"photo_sha256": "cd" * 32} if "photo_sha256" in parameters else {}
    for n in range(queries):
        store.set_chat_k(1000 + n, replica)  # both write the same new chats' settings
        store.add_query(chat_id=77, user_id=replica, model="facenet", k=3, faces=1, latency_ms=float(n),
                        matches=[(1, 1, f"p{replica}", f"/g/p{replica}/{n}.jpg", 0.5)], **extra)
    store.set_chat_model(500 + replica, "vgg16")
    store.close()
    print("done", flush=True)
    """
)


def test_two_replica_processes_migrate_and_write_at_once(database_url):
    """Two separate processes start on one fresh database, migrate it, then write the same chats' settings."""
    queries = 20
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", REPLICA, database_url]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    replicas = [subprocess.Popen([*command, str(n), str(queries)], env=env, text=True, **pipes) for n in (1, 2)]
    try:
        for process in replicas:
            assert process.stdout.readline().strip() == "ready", process.communicate(timeout=60)[1]
        for process in replicas:
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in replicas:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0 and out.strip() == "done", err
    finally:
        for process in replicas:
            if process.poll() is None:
                process.kill()
                process.wait()

    store = HistoryStore(database_url)
    try:
        for replica in (1, 2):
            assert len(store.history(77, replica, limit=queries + 5)) == queries
            assert store.chat_settings(500 + replica) == ("vgg16", None)
        assert store.stats().queries == 2 * queries
        for n in range(queries):
            model, k = store.chat_settings(1000 + n)
            assert model is None and k in (1, 2)  # last writer wins, nobody failed
    finally:
        store.close()


# ---- the deliveries' outbox (live events) ----------------------------------------------------


def _follower(follows, user_id: int) -> None:
    follows.put_follower(user_id, user_id, "facenet", np.ones(128, np.float32), selfies=1, ttl_days=30)


def _queue(follows, user_id: int, paths: list[str]) -> None:
    assert follows.add_deliveries(user_id, user_id, [NewDelivery(p, (1, 2, 3, 4), 0.9) for p in paths]) == len(paths)


def test_a_claim_takes_the_newest_rows_first_so_a_new_photo_passes_a_first_delivery(store):
    follows = FollowStore(store)
    _follower(follows, 1)
    _follower(follows, 2)
    _queue(follows, 1, [f"first/{n:03d}.jpg" for n in range(120)])  # follower 1's first delivery: 120 photos
    _queue(follows, 2, ["new/IMG_0001.jpg"])  # then a new photo of follower 2
    _queue(follows, 1, ["new/IMG_0002.jpg"])  # and one of follower 1
    batches = {b.user_id: b for b in follows.claim_batch(0.0, 30.0, limit=20)}
    assert [i.path for i in batches[2].items] == ["new/IMG_0001.jpg"]
    ones = [i.path for i in batches[1].items]
    assert len(ones) == 19 and "new/IMG_0002.jpg" in ones
    assert [i.id for i in batches[1].items] == sorted(i.id for i in batches[1].items)  # sent oldest first
    # the next claims take the rest of the first delivery, newest first, each row once
    taken = {i.path for b in batches.values() for i in b.items}
    while claimed := follows.claim_batch(0.0, 30.0, limit=20):
        for batch in claimed:
            paths = {i.path for i in batch.items}
            assert not paths & taken
            taken |= paths
    assert len(taken) == 122


def test_a_renewed_claim_holds_while_one_not_renewed_runs_out(store):
    follows = FollowStore(store)
    _follower(follows, 1)
    _queue(follows, 1, ["a.jpg", "b.jpg"])
    (batch,) = follows.claim_batch(0.0, 0.0)  # a claim that runs out at once ...
    ids = [i.id for i in batch.items]
    assert sorted(follows.renew_claim(batch.token, ids, 60.0)) == sorted(ids)  # ... renewed: held for a minute
    assert follows.claim_batch(0.0, 30.0) == []
    follows.finish(batch.token, ids[:1], "sent")
    assert follows.renew_claim(batch.token, ids, 0.0) == ids[1:]  # a row finished is no longer held
    (again,) = follows.claim_batch(0.0, 30.0)  # renewed for no time: it ran out, another sender takes the row
    assert [i.path for i in again.items] == ["b.jpg"]
    assert follows.renew_claim(batch.token, ids, 60.0) == []  # the first sender no longer holds it
