"""Shared pytest fixtures.

The tests live in folders by area (unit, engine, stores, bot, processes), each marked by its folder; their shared
helpers are the `support` package (tests/ is on sys.path: `pythonpath` in pyproject.toml).

Engine fixtures (session-scoped, so TensorFlow models load once and the sample gallery
is indexed once): `sample_gallery`, `engine_settings`, `facenet_engine`, `sample_index`,
`indexed_engine`, `make_engine`. They use the real FaceNet weights in models/ and the
real sample gallery in data/sample-gallery/ (`python -m engine models fetch` creates
both); they FAIL when those are missing. Engine data (indexes, reports) always goes to
pytest tmp folders, never to the repository's data/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_TESTS_DIR = Path(__file__).resolve().parent

# The folder a test lives in gives it its area marker (registered in pyproject.toml). The other markers are set where
# the test is, or here from its fixtures and parameters: `postgres` (the PostgreSQL server), `milvus` (Milvus Lite),
# `ray` and `slow` (more than about 10 s on a 2-core machine) by hand.
AREA_MARKERS = {"unit": "unit", "engine": "engine", "stores": "stores", "bot": "bot", "processes": "processes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test by its folder (tests/unit/... → `unit`), `postgres` where it runs on the PostgreSQL server and
    `milvus` where a parameter puts it on Milvus Lite."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(_TESTS_DIR) and len(parts := path.relative_to(_TESTS_DIR).parts) > 1:
            if area := AREA_MARKERS.get(parts[0]):
                item.add_marker(area)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("database_url") == "postgresql" or "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker("postgres")
        if "milvus-lite" in params.values():
            item.add_marker("milvus")


# ---- engine fixtures -------------------------------------------------------------------


def _tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="session")
def repo_data_untouched():
    """Fails the session at teardown if a test changed the real sample gallery (tests mutate tmp copies).

    Only data/sample-gallery is watched: other tools (benchmarks) may legitimately write
    elsewhere under data/ while the tests run.
    """
    from support.helpers_engine import SAMPLE_GALLERY

    before = _tree_snapshot(SAMPLE_GALLERY)
    yield
    after = _tree_snapshot(SAMPLE_GALLERY)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"tests modified the sample gallery {SAMPLE_GALLERY}: {changed[:10]}"


@pytest.fixture(scope="session")
def sample_gallery() -> Path:
    """The real 5-person sample gallery (118 photos). Missing: a failure, not a skip."""
    from engine.images import list_gallery_images
    from support.helpers_engine import FETCH_HINT, SAMPLE_GALLERY, SAMPLE_PEOPLE, SAMPLE_PHOTOS

    assert SAMPLE_GALLERY.is_dir(), f"sample gallery missing at {SAMPLE_GALLERY}: {FETCH_HINT}"
    photos = list_gallery_images(SAMPLE_GALLERY)
    assert len(photos) == SAMPLE_PHOTOS, (
        f"sample gallery has {len(photos)} photos, expected {SAMPLE_PHOTOS}: {FETCH_HINT}"
    )
    assert sorted({p.parent.name for p in photos}) == list(SAMPLE_PEOPLE)
    return SAMPLE_GALLERY


@pytest.fixture(scope="session")
def facenet_weights() -> Path:
    from support.helpers_engine import FACENET_WEIGHTS, FETCH_HINT

    assert FACENET_WEIGHTS.is_file(), f"FaceNet weights missing at {FACENET_WEIGHTS}: {FETCH_HINT}"
    return FACENET_WEIGHTS


@pytest.fixture(scope="session")
def engine_settings(tmp_path_factory, sample_gallery, facenet_weights, repo_data_untouched):
    """EngineSettings with DATA_DIR in a session tmp folder, the repo's models/ and the sample gallery."""
    from engine import EngineSettings
    from support.helpers_engine import MODELS_DIR

    return EngineSettings(
        data_dir=tmp_path_factory.mktemp("engine-data"), models_dir=MODELS_DIR, gallery_dir=sample_gallery
    )


@pytest.fixture(scope="session")
def facenet_engine(engine_settings):
    """One Engine for the session with MTCNN and FaceNet loaded (no index built by this fixture)."""
    from engine import Engine

    engine = Engine(engine_settings)
    engine.load("facenet")
    return engine


@pytest.fixture(scope="session")
def keras_engine(engine_settings):
    """An Engine on the keras runtime (TensorFlow), MTCNN and FaceNet loaded: where the runtimes differ."""
    from engine import Engine, EngineSettings

    engine = Engine(EngineSettings(**{**engine_settings.model_dump(), "engine_runtime": "keras"}))
    engine.load("facenet")
    return engine


@pytest.fixture(scope="session")
def sample_index(facenet_engine):
    """The IndexReport of indexing the whole sample gallery once, into the session DATA_DIR."""
    return facenet_engine.build_index("facenet")


@pytest.fixture(scope="session")
def indexed_engine(facenet_engine, sample_index):
    """The session Engine with the sample gallery's FaceNet index live. Tests must not rebuild it."""
    return facenet_engine


@pytest.fixture(scope="session")
def make_engine(facenet_engine):
    """Factory: `make_engine(data_dir=..., gallery_dir=..., **settings)` → a fresh Engine.

    The fresh engine has its own settings and its own indexes, but reuses the session's
    already-loaded networks (loading them again costs seconds per engine): MTCNN always,
    under this engine's own detector and its detection settings; FaceNet when the settings
    it depends on are the same.
    """
    from engine import Engine, EngineSettings

    base = facenet_engine.settings
    facenet_fields = ("models_dir", "embed_batch_size", "xla", "engine_runtime")

    def make(**overrides) -> Engine:
        settings = EngineSettings(**{**base.model_dump(), **overrides})
        engine = Engine(settings)
        mine, loaded = engine.backends["facenet"], facenet_engine.backends["facenet"]
        if mine.runtime == loaded.runtime:
            loaded.detector.load()
            mine.detector._mtcnn = (
                loaded.detector._mtcnn
            )  # the loaded network; every detection setting stays this engine's
        if all(getattr(settings, f) == getattr(base, f) for f in facenet_fields):
            mine.network = loaded.network
        return engine

    return make


# ---- database fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """SQLAlchemy URL of the session's real PostgreSQL server (see tests/support/postgres_server.py); started on first use."""
    from support.postgres_server import running_server

    with running_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database, once as a real SQLite file and once as a fresh database on the real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bot.sqlite3'}"
        return
    from support.postgres_server import fresh_database

    with fresh_database(request.getfixturevalue("postgres_server")) as url:
        yield url


# ---- bot fixtures ------------------------------------------------------------------------


@pytest.fixture
async def api():
    """The fake Bot API server (real HTTP on a free local port) the bot under test talks to."""
    from support.fake_bot_api import FakeBotAPI

    async with FakeBotAPI() as server:
        yield server
