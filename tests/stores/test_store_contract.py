"""One contract for every VectorStore backend: the local FAISS+SQLite store and Milvus Lite (a real .db file).

Small random unit vectors (dim 16) keep it fast; every test runs against both backends.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import IndexBusyError, StoreUnavailableError
from engine.stores import open_store
from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader
from engine.stores.local import LocalStore

DIM = 16
HEADER = StoreHeader(model="facenet", dim=DIM, fingerprint="abc", gallery="/gallery")

BACKENDS = ["local", "milvus-lite"]


@pytest.fixture(scope="module")
def milvus_db(tmp_path_factory) -> Path:
    """One Milvus Lite file for the module (its server starts once); each test has its own collections."""
    pytest.importorskip("milvus_lite")
    return tmp_path_factory.mktemp("milvus") / "x.db"


@pytest.fixture(params=BACKENDS)
def kind(request):
    return request.param


@pytest.fixture
def reopen(kind, tmp_path, request):
    """Opens another store object on the same store as `store`."""
    if kind == "local":
        # small thresholds so the tests go through merges and the HNSW sealed segment too
        return lambda: LocalStore(tmp_path / "local", ann_threshold=40, merge_min=12, merge_ratio=0.1, max_growing=3)
    db = request.getfixturevalue("milvus_db")
    model = "t" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]  # this test's collections
    return lambda: open_store(str(db), data_dir=tmp_path, model=model)


@pytest.fixture
def store(reopen):
    opened = reopen()
    yield opened
    opened.close()


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gallery(people: int = 6, per_person: int = 3, seed: int = 0):
    """people x per_person files, one face each: (rows, vectors, records)."""
    rng = np.random.default_rng(seed)
    rows, records = [], []
    for p in range(people):
        for i in range(per_person):
            path = f"person{p}/{i}.jpg"
            rows.append(FaceRow(path, f"person{p}", (p, i, 10 + p, 20 + i)))
            records.append(FileRecord(path, size=100 + i, mtime_ns=1000 * p + i, sha256=f"sha{p}-{i}", faces=1))
    return rows, unit(rng, len(rows)), records


def filled(store, **kwargs):
    store.initialise(HEADER)
    rows, vectors, records = gallery(**kwargs)
    store.apply(Changes(rows=rows, vectors=vectors, records=records))
    return rows, vectors, records


def paths_of(hits) -> list[str]:
    return [h.row.path for h in hits]


def test_a_new_store_is_empty(store):
    assert store.header is None
    assert store.count == 0
    assert store.files() == {} and store.people() == {}
    assert store.search(unit(np.random.default_rng(1), 2), 5) == [[], []]


def test_initialise_sets_the_header_and_reopening_reads_it(store, reopen):
    store.initialise(HEADER)
    assert store.header == HEADER and store.count == 0
    store.close()
    again = reopen()
    try:
        assert again.header == HEADER
    finally:
        again.close()


def test_search_returns_rows_with_metadata_best_first(store):
    rows, vectors, _records = filled(store)
    assert store.count == len(rows)
    hits = store.search(vectors[[4, 7]], 5)
    assert len(hits) == 2 and all(len(h) == 5 for h in hits)
    for query, expected in zip(hits, (rows[4], rows[7])):
        assert query[0].row == expected  # path, name and box come back
        assert query[0].similarity == pytest.approx(1.0, abs=1e-4)
        sims = [h.similarity for h in query]
        assert sims == sorted(sims, reverse=True)
    # exact order against brute force (the store is small: exact even when HNSW is used)
    exact = np.argsort(-(vectors @ vectors[4]))[:5]
    assert paths_of(hits[0]) == [rows[i].path for i in exact]
    # k larger than the store: every row once
    assert sorted(paths_of(store.search(vectors[:1], 100)[0])) == sorted(r.path for r in rows)


def test_counts_people_and_files(store):
    _rows, _, records = filled(store, people=4, per_person=3)
    assert store.people() == {f"person{p}": 3 for p in range(4)}
    assert store.files() == {r.path: r for r in records}


def test_changing_a_file_replaces_its_rows_and_record(store):
    rows, vectors, _records = filled(store)
    version = store.version
    path = rows[0].path
    new_vectors = unit(np.random.default_rng(9), 2)
    new_rows = [FaceRow(path, "person0", (1, 1, 5, 5)), FaceRow(path, "person0", (50, 50, 5, 5))]
    new_record = FileRecord(path, size=999, mtime_ns=5, sha256="changed", faces=2)
    store.apply(Changes(rows=new_rows, vectors=new_vectors, records=[new_record]))
    assert store.version != version
    assert store.count == len(rows) + 1
    assert store.files()[path] == new_record
    found = store.search(new_vectors, 1)
    assert [h[0].row for h in found] == new_rows
    # the old vector no longer finds the old row
    assert all(h.row != rows[0] for h in store.search(vectors[:1], len(rows) + 1)[0])
    # the same change again (two racing writers): no duplicate rows
    store.apply(Changes(rows=new_rows, vectors=new_vectors, records=[new_record]))
    assert store.count == len(rows) + 1


def test_removing_files(store):
    rows, vectors, _ = filled(store)
    gone = {rows[0].path, rows[1].path, rows[2].path}  # all of person0
    store.apply(Changes(remove_paths=gone))
    assert store.count == len(rows) - 3
    assert "person0" not in store.people()
    assert not gone & set(store.files())
    for hits in store.search(vectors, len(rows)):
        assert not gone & set(paths_of(hits))
        assert len(hits) == len(rows) - 3


@pytest.mark.parametrize("removed_people", [1, 6])
def test_purging_removed_vectors_keeps_the_rest_searchable(store, removed_people):
    """After a removal, purge_removed (what a removed person's privacy asks) leaves the same answers; with every
    row removed (the last person) it leaves an empty, usable store."""
    rows, vectors, _ = filled(store)
    gone = {row.path for row in rows if int(row.name.removeprefix("person")) < removed_people}
    store.apply(Changes(remove_paths=gone))
    before = [paths_of(hits) for hits in store.search(vectors, len(rows))]
    store.purge_removed()
    assert store.count == len(rows) - len(gone)
    assert [paths_of(hits) for hits in store.search(vectors, len(rows))] == before
    assert not gone & set(store.files())


def test_moves_keep_vectors_and_follow_the_file(store):
    rows, vectors, records = filled(store)
    store.apply(Changes(moves={rows[3].path: ("renamed/x.jpg", "someone")}))
    assert store.count == len(rows)
    hit = store.search(vectors[3:4], 1)[0][0]
    assert hit.row == FaceRow("renamed/x.jpg", "someone", rows[3].box)
    assert hit.similarity == pytest.approx(1.0, abs=1e-4)
    files = store.files()
    assert rows[3].path not in files
    assert files["renamed/x.jpg"].sha256 == records[3].sha256
    assert store.people()["someone"] == 1 and store.people()["person1"] == 2


def test_meta_blobs(store):
    filled(store)
    big = np.random.default_rng(3).bytes(200_000)  # more than one Milvus VARCHAR chunk
    store.apply(Changes(meta={"pca": big, "small": b"\x00\x01"}))
    assert store.get_meta("pca") == big and store.get_meta("small") == b"\x00\x01"
    assert store.get_meta("missing") is None
    store.apply(Changes(meta={"pca": b"short"}))
    assert store.get_meta("pca") == b"short"


def test_reopening_sees_the_same_store(store, reopen):
    rows, vectors, _records = filled(store)
    store.apply(Changes(remove_paths={rows[5].path}, meta={"k": b"v"}))
    before = (
        store.count,
        store.files(),
        store.people(),
        store.version,
        [paths_of(h) for h in store.search(vectors, 4)],
    )
    store.close()
    again = reopen()
    try:
        after = (
            again.count,
            again.files(),
            again.people(),
            again.version,
            [paths_of(h) for h in again.search(vectors, 4)],
        )
        assert after == before
        assert again.header == HEADER and again.get_meta("k") == b"v"
    finally:
        again.close()


def test_another_header_drops_everything(store):
    filled(store)
    store.apply(Changes(meta={"pca": b"old"}))
    other = StoreHeader(model="facenet", dim=8, fingerprint="other weights", gallery="/gallery")
    store.initialise(other)
    assert store.header == other
    assert store.count == 0 and store.files() == {} and store.people() == {} and store.get_meta("pca") is None
    store.apply(
        Changes(
            rows=[FaceRow("a/1.jpg", "a", (0, 0, 1, 1))],
            vectors=np.eye(1, 8, dtype=np.float32),
            records=[FileRecord("a/1.jpg", 1, 1, "s", 1)],
        )
    )
    assert store.search(np.eye(1, 8, dtype=np.float32), 3)[0][0].row.path == "a/1.jpg"


def test_initialise_with_the_same_header_keeps_the_rows(store):
    rows, _, _ = filled(store)
    store.initialise(HEADER)
    assert store.count == len(rows)


def test_refresh_sees_another_store_objects_writes(store, reopen):
    rows, vectors, _ = filled(store)
    second = reopen()
    try:
        assert second.count == len(rows)
        new = unit(np.random.default_rng(42), 1)
        second.apply(
            Changes(
                rows=[FaceRow("new/1.jpg", "new", (0, 0, 3, 3))],
                vectors=new,
                records=[FileRecord("new/1.jpg", 1, 1, "n", 1)],
                remove_paths={rows[0].path},
            )
        )
        assert store.refresh() is True
        assert store.version == second.version
        assert store.count == len(rows)
        assert store.search(new, 1)[0][0].row.path == "new/1.jpg"
        assert rows[0].path not in paths_of(store.search(vectors[:1], len(rows))[0])
        assert store.refresh() is False
    finally:
        second.close()


# ---- local store only -------------------------------------------------------------------


def test_local_segments_merge_and_tombstones_match_exact_search(tmp_path):
    """Many small applies with removals, through growing segments, merges and an HNSW sealed segment."""
    store = LocalStore(tmp_path, ann_threshold=60, merge_min=25, merge_ratio=0.1, max_growing=4, rebuild_ratio=0.2)
    store.initialise(HEADER)
    rng = np.random.default_rng(5)
    live: dict[str, np.ndarray] = {}
    kinds_seen = set()
    for step in range(30):
        vectors = unit(rng, 7)
        rows = [FaceRow(f"s{step}/{i}.jpg", f"p{step % 5}", (i, 0, 1, 1)) for i in range(7)]
        remove = set(rng.choice(sorted(live), size=min(3, len(live)), replace=False)) if live else set()
        store.apply(
            Changes(
                rows=rows,
                vectors=vectors,
                records=[FileRecord(r.path, 1, 1, "s", 1) for r in rows],
                remove_paths=remove,
            )
        )
        for path in remove:
            del live[path]
        live.update({r.path: v for r, v in zip(rows, vectors)})
        kinds_seen |= {(s.kind, type(s.index.index).__name__) for s in store._snapshot.segments}
        assert store.count == len(live)
    assert {k for k, _ in kinds_seen} == {"sealed", "growing"}
    paths = sorted(live)
    matrix = np.stack([live[p] for p in paths])
    queries = unit(rng, 20)
    for q, hits in zip(queries, store.search(queries, 10)):
        exact = [paths[i] for i in np.argsort(-(matrix @ q))[:10]]
        assert len(set(paths_of(hits)) & set(exact)) >= 9
    # a removal does not rewrite any segment file; an add writes one small file
    files_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "segments").iterdir()}
    store.apply(Changes(remove_paths={paths[0]}))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "segments").iterdir()} == files_before
    store.compact()
    assert len(store._snapshot.segments) == 1 and len(store._snapshot.deleted) == 0
    assert store.count == len(live) - 1
    assert len(list((tmp_path / "segments").iterdir())) == 1
    store.close()


def test_local_orphan_segments_are_removed_by_the_next_writer(tmp_path):
    store = LocalStore(tmp_path)
    store.initialise(HEADER)
    rows, vectors, records = gallery()
    store.apply(Changes(rows=rows, vectors=vectors, records=records))
    orphan = tmp_path / "segments" / "crashed-writer.faiss"
    orphan.write_bytes(b"half written")
    kept = set((tmp_path / "segments").iterdir()) - {orphan}
    with store.writer(timeout=1):
        pass
    assert not orphan.exists()
    assert set((tmp_path / "segments").iterdir()) == kept
    store.close()


def test_local_writer_lock_times_out_with_a_clear_error(tmp_path):
    first, second = LocalStore(tmp_path), LocalStore(tmp_path)
    with first.writer(timeout=1):
        started = time.monotonic()
        with pytest.raises(IndexBusyError, match="another index run holds the lock"), second.writer(timeout=0.5):
            pass
        assert time.monotonic() - started >= 0.5
    with second.writer(timeout=1):
        pass


def test_open_store_forms(tmp_path):
    local = open_store(None, data_dir=tmp_path, model="facenet")
    assert isinstance(local, LocalStore) and local.root == tmp_path / "index" / "facenet"
    with pytest.raises(StoreUnavailableError, match="ftp://x.*not a store address"):
        open_store("ftp://x", data_dir=tmp_path, model="facenet")
    pytest.importorskip("pymilvus")
    with pytest.raises(StoreUnavailableError, match="http://127.0.0.1:9"):
        open_store("http://127.0.0.1:9", data_dir=tmp_path, model="facenet")


@pytest.mark.milvus
def test_milvus_lite_file_open_in_another_process_is_a_clear_error(tmp_path):
    """Milvus Lite: one process per file. Another process gets a clear error; once the holder exits, it reads its data."""
    pytest.importorskip("milvus_lite")
    import subprocess
    import sys
    import time

    db = tmp_path / "held.db"
    child = f"""
import sys, types, numpy as np
package = types.ModuleType("engine"); package.__path__ = [{str(Path(__file__).resolve().parents[2] / "engine")!r}]
sys.modules["engine"] = package  # the store needs no TensorFlow
from engine.stores.milvus import MilvusStore
from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader
store = MilvusStore({str(db)!r}, model="facenet")
store.initialise(StoreHeader("facenet", 4, "fp", "/g"))
store.apply(Changes(rows=[FaceRow("a/1.jpg", "a", (0, 0, 1, 1))], vectors=np.eye(1, 4, dtype=np.float32),
                    records=[FileRecord("a/1.jpg", 1, 1, "s", 1)]))
print("open", flush=True)
sys.stdin.read()
"""
    holder = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=f"{db}.*one process"):
            open_store(str(db), data_dir=tmp_path, model="facenet")
        assert time.monotonic() - started < 30
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # a fresh process (this one) opens the file the holder wrote: collections are loaded again
    store = open_store(str(db), data_dir=tmp_path, model="facenet")
    try:
        assert store.count == 1 and store.header.dim == 4
        assert store.search(np.eye(1, 4, dtype=np.float32), 1)[0][0].row.path == "a/1.jpg"
    finally:
        store.close()


@pytest.mark.milvus
def test_milvus_writer_lock_is_held_across_processes(tmp_path):
    """A process holding the Milvus store's writer lock keeps another process's writer out: IndexBusyError after its
    timeout, as with the local store; once the holder lets go, the writer goes in.

    Milvus Lite opens a file in one process at a time, so the holder takes the store's lock file (its documented
    place: beside the .db file, named after the collections) without opening the .db file; a server store's lock
    is the same kind of file lock, under DATA_DIR."""
    pytest.importorskip("milvus_lite")
    import subprocess
    import sys

    db, held = tmp_path.resolve() / "shared.db", tmp_path / "held"
    lock = f"{db}.faces_facenet.write.lock"
    child = f"""
import sys
from pathlib import Path
from filelock import FileLock
with FileLock({lock!r}):
    Path({str(held)!r}).touch()
    sys.stdin.read()  # held until the test closes stdin
"""
    holder = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, text=True)
    store = None
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not take the lock"
            time.sleep(0.05)
        store = open_store(str(db), data_dir=tmp_path, model="facenet")
        started = time.monotonic()
        with pytest.raises(IndexBusyError, match=f"another index run holds the lock on {re.escape(lock)}"):
            with store.writer(timeout=0.5):
                pass
        assert time.monotonic() - started >= 0.5
        with pytest.raises(IndexBusyError):  # apply() waits as long as it takes; an index run asks with timeout 0
            with store.writer(timeout=0):
                pass
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    try:
        with store.writer(timeout=10):
            store.initialise(HEADER)  # nested inside the writer: re-entrant
        assert store.header == HEADER
    finally:
        store.close()


@pytest.mark.milvus
def test_milvus_server_writer_lock_lives_in_data_dir(tmp_path):
    """A server URI's writer lock: one file under DATA_DIR/locks per URI and collection prefix."""
    pytest.importorskip("pymilvus")
    from engine.stores.milvus import writer_lock_path

    path = writer_lock_path("http://milvus:19530", "faces_facenet", tmp_path)
    assert path.parent == tmp_path / "locks" and path.name.startswith("milvus-") and path.suffix == ".lock"
    assert writer_lock_path("http://milvus:19530/", "faces_facenet", tmp_path) == path
    assert writer_lock_path("http://milvus:19530", "faces_vgg16", tmp_path) != path
    assert writer_lock_path("http://other:19530", "faces_facenet", tmp_path) != path
    with pytest.raises(ValueError, match="DATA_DIR"):
        writer_lock_path("http://milvus:19530", "faces_facenet", None)
    lite = writer_lock_path(str(tmp_path / "faces.db"), "faces_facenet", None)
    assert lite == tmp_path.resolve() / "faces.db.faces_facenet.write.lock"


# ---- faces of the photos layout: several per photo, with confidence and landmarks ---------------


def group_photo_rows(path: str = "day-1/ceremony/IMG_0042.jpg", faces: int = 3) -> list[FaceRow]:
    return [
        FaceRow(path, "", (100 * i, 50, 60 + i, 70 + i), 0.9 + i / 100,
                tuple((100.0 * i + j + 0.5, 60.0 + j) for j in range(5)))
        for i in range(faces)
    ]  # fmt: skip


def test_rows_keep_confidence_and_landmarks_and_follow_moves(store, reopen):
    header = StoreHeader(model="facenet", dim=DIM, fingerprint="abc", gallery="/gallery", layout="photos")
    store.initialise(header)
    rows = group_photo_rows()
    vectors = unit(np.random.default_rng(5), len(rows))
    store.apply(Changes(rows=rows, vectors=vectors, records=[FileRecord(rows[0].path, 1, 1, "s", len(rows))]))
    for vector, row in zip(vectors, rows):
        assert store.search(vector[None], 1)[0][0].row == row  # (path, box) and the detection details come back
    store.apply(Changes(moves={rows[0].path: ("day-2/IMG_0042.jpg", "")}))
    moved = [store.search(vector[None], 1)[0][0].row for vector in vectors]
    assert moved == [FaceRow("day-2/IMG_0042.jpg", "", r.box, r.confidence, r.landmarks) for r in rows]
    store.close()
    again = reopen()
    try:
        assert again.header == header and again.header.layout == "photos"
        assert again.search(vectors[1:2], 1)[0][0].row == moved[1]
    finally:
        again.close()


def test_a_header_of_another_layout_drops_everything(store):
    filled(store)
    photos = StoreHeader(model="facenet", dim=DIM, fingerprint="abc", gallery="/gallery", layout="photos")
    assert photos != HEADER  # the layout is part of a store's identity
    store.initialise(photos)
    assert store.header == photos and store.count == 0 and store.files() == {}


def test_local_store_written_before_detection_details_opens_with_them_unknown(tmp_path):
    import sqlite3

    store = LocalStore(tmp_path / "old")
    rows, vectors, _records = filled(store)
    store.close()
    with sqlite3.connect(tmp_path / "old" / "store.sqlite") as db:  # the faces table as it was before
        db.execute("ALTER TABLE faces DROP COLUMN confidence")
        db.execute("ALTER TABLE faces DROP COLUMN landmarks")
        old_header = '{"model": "facenet", "dim": 16, "fingerprint": "abc", "gallery": "/gallery"}'  # no layout yet
        db.execute("UPDATE state SET value = ? WHERE key = 'header'", (old_header,))
    again = LocalStore(tmp_path / "old")
    try:
        assert again.header == HEADER  # an old header (no layout) reads as the people layout: no rebuild
        assert again.search(vectors[2:3], 1)[0][0].row == rows[2]  # confidence and landmarks None
        new = FaceRow("new/1.jpg", "new", (1, 2, 3, 4), 0.95, tuple((float(i), float(i)) for i in range(5)))
        again.apply(Changes(rows=[new], vectors=vectors[:1] * -1, records=[FileRecord("new/1.jpg", 1, 1, "n", 1)]))
        assert again.search(-vectors[:1], 1)[0][0].row == new
    finally:
        again.close()


def test_search_with_vectors_gives_the_stored_vectors(store):
    rows, vectors, _ = filled(store, people=8, per_person=3)  # local: through merges, several segments
    store.apply(Changes(remove_paths={rows[0].path}))
    hits = store.search(vectors[[5, 9]], 6, with_vectors=True)
    for query in hits:
        assert len(query) == 6
        for hit in query:
            want = vectors[rows.index(hit.row)]
            assert float(hit.vector @ want) >= 0.99999
    assert all(hit.vector is None for hit in store.search(vectors[:1], 3)[0])


class _RefusingOnce:
    """A client whose first handshakes fail as a loaded machine's fresh Milvus Lite server's did (gRPC GOAWAY)."""

    refusals = 0
    made = 0

    def __init__(self, uri: str, timeout: float):
        type(self).made += 1

    def list_collections(self) -> list[str]:
        if type(self).made <= type(self).refusals:
            raise RuntimeError('<_InactiveRpcError: status = StatusCode.UNAVAILABLE details = "Too many pings">')
        return []


@pytest.mark.milvus
def test_milvus_connect_retries_a_refused_handshake_and_not_other_errors():
    from engine.stores.milvus import _connect

    _RefusingOnce.refusals, _RefusingOnce.made = 1, 0
    assert isinstance(_connect(_RefusingOnce, "faces.db", 1.0), _RefusingOnce)
    assert _RefusingOnce.made == 2
    _RefusingOnce.refusals, _RefusingOnce.made = 5, 0
    with pytest.raises(RuntimeError, match="Too many pings"):
        _connect(_RefusingOnce, "faces.db", 1.0, attempts=2)  # gives up after its attempts
    assert _RefusingOnce.made == 2

    class Broken(_RefusingOnce):
        def list_collections(self) -> list[str]:
            raise ValueError("illegal uri")

    Broken.made = 0
    with pytest.raises(ValueError):
        _connect(Broken, "faces.db", 1.0)
    assert Broken.made == 1  # not a refused handshake: no retry
