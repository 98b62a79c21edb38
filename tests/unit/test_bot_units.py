"""The bot's small parts, without TensorFlow or Telegram: they run in seconds (`make unit`).

Rendering, paging and its stored form, retries, /k and /rename parsing, person names, the file_id cache, the access
settings, and the shared state and history on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import sys
import unicodedata
from datetime import timedelta
from pathlib import Path

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter

from bot import render
from bot.db import REMOVED, HistoryStore, upgrade
from bot.delivery import FileIdCache, retrying
from bot.handlers.commands import describe_answer, parse_k
from bot.paging import PhotoQuery, ResultState, result_keyboard, state_from_payload, state_to_payload
from bot.services.gallery import split_rename
from bot.settings import Settings
from bot.state import Part, SharedState
from engine import Engine, EngineSettings, FaceResult, Identity, Match
from engine.errors import BadInputError
from engine.indexing.gallery import MAX_NAME_BYTES, Gallery, check_name


def match(rank: int, name: str = "Ada Lovelace", similarity: float = 0.8) -> Match:
    return Match(rank=rank, name=name, path=f"/g/{name.replace(' ', '_')}/{rank}.jpg", similarity=similarity,
                 distance=0.6)  # fmt: skip


def state(shown: int = 5, faces: int = 2, ranks: int = 5, index_size: int = 100) -> ResultState:
    photo = PhotoQuery(
        file_id="file-1", name="photo", boxes=[(10 * n, 5, 30, 40) for n in range(faces)],
        matches=[[match(r) for r in range(1, ranks + 1)] for _ in range(faces)], unknown=[False, True][:faces],
    )  # fmt: skip
    return ResultState(chat_id=-1001234567890123, user_id=7_000_000_001, model="facenet", k=5, photos=[photo],
                       shown=shown, page=5, max_k=50, index_size=index_size)  # fmt: skip


# ---- render --------------------------------------------------------------------------------


def test_captions_and_summaries():
    assert render.caption(2, match(3)) == "Face 2 · #3 Ada Lovelace · 0.80"
    assert (
        render.caption(1, match(1), 4, closest=True)
        == "Photo 4 · Face 1 · closest #1 Ada Lovelace · 0.80 · not a match"
    )
    known = FaceResult(
        box=(0, 0, 9, 9), confidence=0.99, matches=[match(1), match(2, "Bo")], identity=Identity("Ada Lovelace", 0.52)
    )
    unknown = FaceResult(box=(0, 0, 9, 9), confidence=0.99, matches=[match(1)], identity=Identity(None, 0.1))
    assert render.summary([known]) == "most likely Ada Lovelace (score 0.52; 1 of the 2 closest faces)"
    lines = render.summary([known, unknown]).splitlines()
    assert lines[0].startswith("Face 1: most likely Ada Lovelace") and lines[1].startswith("Face 2: not in the gallery")
    assert render.not_in_gallery(2, unknown, 2).startswith(
        "Face 2: not in the gallery — I don't know this person (score 0.10)"
    )
    assert [len(c) for c in render.chunks(list(range(23)))] == [10, 10, 3]


# ---- paging --------------------------------------------------------------------------------


def test_result_state_round_trips_through_its_stored_form():
    original = state()
    again = state_from_payload(state_to_payload(original))
    assert again == original
    assert again.photos[0].matches[0][0] == match(1) and again.photos[0].boxes[1] == (10, 5, 30, 40)


def test_keyboards_say_what_is_left():
    keyboard = result_keyboard("tok", state())
    assert keyboard is not None
    assert [b.callback_data for b in keyboard.inline_keyboard[0]] == ["more:tok", "faces:tok"]
    assert result_keyboard("tok", state(faces=1, shown=50)) is None  # all ranks shown, one face
    assert not state(shown=5, index_size=5).has_more  # the gallery holds no more


# ---- retries -------------------------------------------------------------------------------


def test_retries_network_errors_and_flood_waits_but_not_bad_requests():
    calls: list[str] = []

    def failing(errors: list[Exception]):
        async def send() -> str:
            calls.append("call")
            if errors:
                raise errors.pop(0)
            return "sent"

        return send

    retried: list[str] = []
    result = asyncio.run(retrying(failing([NetworkError("reset"), RetryAfter(0)]), 5, retried.append))
    assert result == "sent" and len(calls) == 3 and retried == ["network", "flood_wait"]
    with pytest.raises(BadRequest):
        asyncio.run(retrying(failing([BadRequest("no")]), 5))
    with pytest.raises(NetworkError):
        asyncio.run(retrying(failing([NetworkError("a"), NetworkError("b")]), 1))


# ---- parsing -------------------------------------------------------------------------------


def test_k_is_one_ascii_whole_number_in_range():
    assert parse_k(["5"], 50) == 5
    for bad in (["²"], ["٣"], ["0"], ["51"], ["5", "6"], ["-1"], []):
        assert parse_k(bad, 50) is None, bad


@pytest.fixture
def gallery(tmp_path) -> Gallery:
    root = tmp_path / "gallery"
    for folder in ("Ada_Lovelace", "Ada", "Grace_Hopper"):
        (root / folder).mkdir(parents=True)
        (root / folder / "1.jpg").write_bytes(b"x")
    return Gallery(Engine(EngineSettings(data_dir=tmp_path / "data", gallery_dir=root)))


def test_rename_splits_at_the_existing_person(gallery):
    assert split_rename(gallery, ["Ada", "Lovelace", "Ada", "King"]) == ("Ada Lovelace", "Ada King")  # the longest
    assert split_rename(gallery, ["Grace", "Hopper", "->", "Amazing", "Grace"]) == ("Grace Hopper", "Amazing Grace")
    assert split_rename(gallery, ["Nobody", "Here"]) is None
    assert split_rename(gallery, ["Ada", "->"]) is None


def test_person_names_are_nfkc_normalised_and_limited_in_bytes():
    assert check_name("  Ａｄａ   Lovelace ") == "Ada Lovelace"  # full-width letters: the same person
    assert check_name("Beyonce\u0301") == unicodedata.normalize("NFKC", "Beyoncé")
    long_cyrillic = "Ж" * 64  # 64 characters (the engine's limit) but 128 bytes
    assert check_name(long_cyrillic) == long_cyrillic
    with pytest.raises(BadInputError, match="bytes"):
        check_name("山" * 50)  # 50 characters, 150 bytes
    assert len(("山" * 42).encode()) <= MAX_NAME_BYTES and check_name("山" * 42)
    with pytest.raises(BadInputError):
        check_name("../etc")


def test_history_says_when_a_person_was_removed():
    assert describe_answer(None, 0.1) == "not in the gallery"
    assert describe_answer(REMOVED, 0.6) == "a person since removed from the gallery"
    assert describe_answer("Ada", 0.61) == "Ada (0.61)"


# ---- the file_id cache (cachetools' LRU) ----------------------------------------------------


def test_file_id_cache_keeps_the_most_recently_used():
    cache: FileIdCache[str] = FileIdCache(2)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"  # a is now the most recent
    cache.put("c", "3")
    assert cache.get("b") is None and cache.get("a") == "1" and cache.get("c") == "3"
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)
    cache.drop(["a"])
    assert "a" not in cache and len(cache) == 1
    cache.clear()
    assert len(cache) == 0
    off: FileIdCache[str] = FileIdCache(0)
    off.put("a", "1")
    assert off.get("a") is None
    cache.size = 0  # the benchmarks turn it off, then on again
    cache.put("a", "1")
    assert cache.get("a") is None
    cache.size = 2
    cache.put("a", "1")
    assert cache.get("a") == "1"


# ---- settings ------------------------------------------------------------------------------


def test_an_empty_allow_list_refuses_to_start_unless_star(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("ALLOWED_USER_IDS", "ADMIN_IDS", "HISTORY_RETENTION_DAYS", "METRICS_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    closed = Settings()
    assert closed.access_problem() is not None and "ALLOWED_USER_IDS" in closed.access_problem()
    assert not closed.is_allowed(5)
    assert closed.history_retention_days == 30 and closed.metrics_listen == "127.0.0.1"
    monkeypatch.setenv("ALLOWED_USER_IDS", "*")
    anyone = Settings()
    assert anyone.access_problem() is None and anyone.is_allowed(5)
    monkeypatch.setenv("ALLOWED_USER_IDS", "1, 2")
    monkeypatch.setenv("ADMIN_IDS", "3")
    listed = Settings()
    assert listed.access_problem() is None and listed.is_allowed(3) and not listed.is_allowed(5)
    monkeypatch.setenv("HISTORY_RETENTION_DAYS", "")
    assert Settings().history_retention_days is None  # kept forever only when said


def test_python_m_bot_refuses_an_empty_allow_list(tmp_path):
    import subprocess

    env = {
        "PATH": "/usr/bin:/bin",
        "BOT_TOKEN": "1:x",
        "DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "ALLOWED_USER_IDS is empty" in done.stderr


# ---- shared state and history on a real SQLite file -------------------------------------------


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    store = HistoryStore(url)
    yield store
    store.close()


def test_sqlite_history_uses_wal_and_waits_for_locks(store):
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_buttons_claims_leases_and_albums(store):
    shared = SharedState(store, timedelta(hours=1))
    token = shared.put_button("result", 1, 2, {"x": [1, 2]})
    assert shared.button(token, "result").payload == {"x": [1, 2]}
    assert shared.button(token, "remove") is None and shared.button("nope", "result") is None
    assert shared.claim(f"more:{token}") and not shared.claim(f"more:{token}")  # a double press runs once
    assert shared.lease("user:2", timedelta(minutes=5)) and not shared.lease("user:2", timedelta(minutes=5))
    shared.release("user:2")
    assert shared.lease("user:2", timedelta(seconds=-1))  # already past its deadline...
    assert shared.lease("user:2", timedelta(minutes=5))  # ...so it is taken over (a replica died holding it)
    for message_id in (12, 11, 12):  # a repeated delivery is kept once
        shared.add_part(Part(1, "g", message_id, 2, f"f{message_id}", 10, "photo", "cap" if message_id == 11 else None))
    assert [p.file_id for p in shared.parts(1, "g")] == ["f11", "f12"]
    assert shared.last_part_at(1, "g") is not None and shared.last_part_at(1, "other") is None
    shared.forget_user(2)
    assert shared.button(token, "result") is None and shared.parts(1, "g") == []
    expired = SharedState(store, timedelta(seconds=-1))
    old = expired.put_button("result", 1, 3, {})
    assert expired.button(old, "result") is None
    assert shared.purge_expired() == 1  # the expired button (the expired lease was taken over)


def test_forget_covers_every_chat_and_a_removed_person_leaves_the_history(store):
    for chat in (1, 2):
        store.add_query(chat_id=chat, user_id=9, model="facenet", k=1, faces=1, latency_ms=1.0,
                        matches=[(1, 1, "Ada", "/g/Ada/1.jpg", 0.9)], answers=[(1, "Ada", 0.6)])  # fmt: skip
    store.add_query(chat_id=1, user_id=8, model="facenet", k=1, faces=1, latency_ms=1.0,
                    matches=[(1, 1, "Ada", "/g/Ada/1.jpg", 0.9), (1, 2, "Bo", "/g/Bo/1.jpg", 0.5)],
                    answers=[(1, "Ada", 0.6)])  # fmt: skip
    assert store.forget_person("Ada") >= 4
    item = store.history(1, 8)[0]
    assert item.answers == ((REMOVED, 0.6),) and item.top_name == "Bo"
    assert store.forget_user(9) == 2
    assert store.history(1, 9) == [] and store.history(2, 9) == [] and len(store.history(1, 8)) == 1


# ---- uploads reach only the photo decoders ----------------------------------------------------


def test_uploads_are_decoded_only_as_photo_formats():
    import io

    from PIL import Image

    from engine.errors import BadImageError
    from engine.images import decode_image

    def saved(format: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (32, 24), "teal").save(buffer, format=format)
        return buffer.getvalue()

    for format in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"):
        assert decode_image(saved(format), max_bytes=10**7, max_pixels=10**7).shape == (24, 32, 3), format
    for format in ("PCX", "TGA", "SGI", "PPM"):  # images Pillow reads, but not photos anyone sends: refused unread
        with pytest.raises(BadImageError, match="not a readable image"):
            decode_image(saved(format), max_bytes=10**7, max_pixels=10**7)


# ---- the models the bot offers come from the engine's registry (engine.backends) ---------------------------------


def test_help_lists_every_registered_model():
    from bot.handlers.commands import help_text, reindex_usage
    from engine.backends import BACKENDS

    text = help_text()
    for name, backend in BACKENDS.items():
        assert f"{name}: {'faces' if backend.embeds_faces else 'whole image'}" in text
    assert reindex_usage() == "/reindex [facenet|vgg16|all]" and reindex_usage() in text


def test_the_no_face_hint_names_a_whole_image_model():
    from bot.services.persons import MODEL
    from bot.services.search import whole_image_hint
    from engine.backends import BACKENDS

    assert whole_image_hint() == ", or switch to /model vgg16 to search by the whole image"
    assert BACKENDS[MODEL].embeds_faces  # /people's persons are made of faces


@pytest.fixture
def service(tmp_path):
    from bot.lifecycle import BotService

    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models", allowed_user_ids="*")
    service = BotService(settings)
    yield service
    for pool in (service.runtime.pool, service.runtime.index_pool, service.runtime.io_pool):
        pool.shutdown()


def test_model_lines_describe_each_backend(service, monkeypatch):
    from engine.backends import BACKENDS

    async def chat_settings(chat_id):
        return "facenet", 5

    monkeypatch.setattr(service.runtime, "chat_settings", chat_settings)
    monkeypatch.setattr(service.engine, "model_problem", lambda name: None if name == "facenet" else "no weights")
    lines = asyncio.run(service.chats.model_lines(1)).splitlines()
    assert lines[:2] == ["Current backend: facenet", "Backends:"]
    assert lines[2:4] == [
        f"• facenet: {BACKENDS['facenet'].description} — available",
        f"• vgg16: {BACKENDS['vgg16'].description} — unavailable — no weights",
    ]


def test_reindex_chooses_usable_models_and_claims_one_slot(service, monkeypatch):
    started = []

    def spawn_long(coroutine):
        started.append(coroutine)
        coroutine.close()  # the rebuild itself is not run here

    async def chat_settings(chat_id):
        return "vgg16", 5

    monkeypatch.setattr(service.runtime, "spawn_long", spawn_long)
    monkeypatch.setattr(service.runtime, "chat_settings", chat_settings)
    problems = {"facenet": None, "vgg16": "no weights"}
    monkeypatch.setattr(service.engine, "model_problem", problems.get)
    reindexer = service.reindexer
    assert asyncio.run(reindexer.start(1, "vgg16")) == "Can't reindex vgg16: no weights"
    assert asyncio.run(reindexer.start(1, None)) == "Can't reindex vgg16: no weights"  # the chat's model
    assert asyncio.run(reindexer.start(1, "all")) is None
    assert service.reindex_job is not None and service.reindex_job.models == ["facenet"] and len(started) == 1
    assert asyncio.run(reindexer.start(1, "facenet")).startswith("A reindex is already running.")
    reindexer.job = None
    problems["facenet"] = "no weights"
    assert asyncio.run(reindexer.start(1, "all")) == "No backend is available to reindex."
    assert len(started) == 1


def test_gallery_service_remove_outcomes():
    """/remove's verb without the engine: removed, removed while the index is busy, the last person, kept, and
    nobody of that name (a stale confirmation: the history is left as it was)."""
    from types import SimpleNamespace

    from bot.services.gallery import GalleryService, Removal
    from engine.errors import IndexBusyError
    from engine.indexing.gallery import EditResult, PersonFolder, PersonNotFoundError

    forgotten: list[str] = []
    folders = {"Ada Lovelace"}
    outcome: dict[str, Exception | None] = {"error": None}

    def remove(name):
        folders.discard(name)
        if outcome["error"] is not None:
            raise outcome["error"]
        return EditResult(person=PersonFolder(name, name.replace(" ", "_"), 3), photos=3, emptied=not folders)

    async def run(function, *args):
        return function(*args)

    svc = SimpleNamespace(
        gallery=SimpleNamespace(remove=remove, find=lambda name: name if name in folders else None),
        store=SimpleNamespace(forget_person=forgotten.append),
        db=run,
        write_index=run,
    )
    service = GalleryService(svc)  # type: ignore[arg-type]

    folders.add("Bob Smith")
    assert asyncio.run(service.remove(1, "Ada Lovelace")) == Removal("Ada Lovelace", 3)
    outcome["error"] = IndexBusyError("busy")
    folders.add("Ada Lovelace")
    assert asyncio.run(service.remove(1, "Ada Lovelace")) == Removal("Ada Lovelace", 0, index_busy=True)
    outcome["error"] = None
    folders.add("Ada Lovelace")
    folders.discard("Bob Smith")
    assert asyncio.run(service.remove(1, "Ada Lovelace")) == Removal("Ada Lovelace", 3, emptied=True)
    assert forgotten == ["Ada Lovelace"] * 3
    outcome["error"] = PersonNotFoundError("nobody called Ada Lovelace in the gallery")
    with pytest.raises(PersonNotFoundError):
        asyncio.run(service.remove(1, "Ada Lovelace"))
    assert forgotten == ["Ada Lovelace"] * 3

    def refuse(name):  # the person is still there: nothing removed
        raise IndexBusyError("busy")

    svc.gallery.remove = refuse
    folders.add("Ada Lovelace")
    with pytest.raises(IndexBusyError):
        asyncio.run(service.remove(1, "Ada Lovelace"))
    assert forgotten == ["Ada Lovelace"] * 3
