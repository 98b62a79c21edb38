"""A real PostgreSQL server for the test session, and a fresh database per test.

The server is `pgserver` (dev extra): a pip-installed PostgreSQL 16 whose binaries ship in the wheel, so
`make test` on a fresh machine has one with nothing else installed. It runs in a temporary folder and
listens on a Unix socket only; run as root, pgserver runs it as a system user `pgserver` (PostgreSQL
refuses root), created on first use. `TEST_POSTGRES_URL` (a SQLAlchemy URL of a role allowed to CREATE
DATABASE) uses an existing server instead, e.g. on a platform pgserver has no wheel for.

Neither available is a failure with a hint, never a silent skip: the PostgreSQL tests are part of the suite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ENV_URL = "TEST_POSTGRES_URL"
HINT = (
    "the PostgreSQL tests need the `pgserver` package (`pip install -e '.[dev]'`, which `make test` runs) "
    f"or {ENV_URL}=postgresql+psycopg://user:password@host:port/postgres naming a server they may create databases on"
)


def sqlalchemy_url(libpq_uri: str) -> str:
    """pgserver's `postgresql://...` URI with the psycopg 3 driver SQLAlchemy needs named."""
    return libpq_uri.replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def running_server() -> Iterator[str]:
    """Start a throwaway server; yield the SQLAlchemy URL of its `postgres` database; stop and delete it."""
    external = os.environ.get(ENV_URL)
    if external:
        yield external
        return
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells)
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as error:
        problem = f"cannot start PostgreSQL: {error}; {HINT}"
    else:
        problem = None
    if problem:
        pytest.fail(problem, pytrace=False)
    # Not pytest's tmp_path: its root is private to the current user, and the server may run as another one.
    # A short path also keeps the socket's path under the OS limit (about 100 bytes).
    pgdata = Path(tempfile.mkdtemp(prefix="facesearch-pg-"))
    server = None
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="delete")
        yield sqlalchemy_url(server.get_uri())
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server; yield its URL; drop it (closing what is still connected)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
