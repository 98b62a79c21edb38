"""A Milvus Lite store written by a real process killed part-way through apply(): the next index run leaves no face
row without its file's record (such rows would keep matching under a name and path the gallery no longer has).

The writer is this file run as a script (python tests/stores/test_milvus_crash.py move|add ...): it applies one change to
the store and, after its Nth write to Milvus (or its first insert), says so through a flag file and waits to be
killed (SIGKILL, no clean-up). The next run is a real engine's index run on the same gallery and store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytestmark = pytest.mark.milvus

HERE = Path(__file__).resolve()
PHOTOS = ["Ben_Afflek", "Elton_John", "Madonna"]  # one photo each (their first)


def _child(mode: str, db: str, pause: str, flag: str, *paths: str) -> None:
    """The writer process: `move OLD NEW NAME` (as an index run moves a renamed person's photo) or `add PATH`
    (the rows and record of a new file); pauses after write number `pause` ("insert": after the first insert)."""
    import numpy as np

    from engine.stores.base import Changes, FaceRow, FileRecord
    from engine.stores.milvus import MilvusStore

    store = MilvusStore(db, model="facenet")
    writes: list[str] = []

    def counted(method: str):
        write = getattr(store.client, method)

        def call(*args, **kwargs):
            result = write(*args, **kwargs)
            writes.append(method)
            if (pause == "insert" and method == "insert") or (pause.isdigit() and len(writes) == int(pause)):
                Path(flag).write_text(json.dumps(writes))
                time.sleep(300)  # killed here
            return result

        return call

    if mode == "move":
        old, new, name = paths
        record = store.files()[old]
        changes = Changes(moves={old: (new, name)}, touched=[replace(record, path=new)])
    else:
        (path,) = paths
        vector = np.ones((1, store.header.dim), np.float32) / np.sqrt(store.header.dim)
        rows = [FaceRow(path, path.split("/")[0].replace("_", " "), (0, 0, 50, 50))]
        changes = Changes(rows=rows, vectors=vector, records=[FileRecord(path, 1, 1, "sha", 1)])
    for method in ("insert", "upsert", "delete"):
        setattr(store.client, method, counted(method))
    store.apply(changes)
    print(json.dumps(writes), flush=True)


def _write_and_kill(tmp_path: Path, *args: str) -> list[str] | None:
    """Run the writer; kill it where it paused. The writes it made, or None when it finished first."""
    flag = tmp_path / f"paused-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[2]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(HERE), args[0], args[1], args[2], str(flag), *args[3:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and child.poll() is None:
            assert time.monotonic() < deadline, "the writer neither paused nor finished"
            time.sleep(0.05)
        if child.poll() is not None:
            out, err = child.communicate()
            assert child.returncode == 0, err
            return None
        time.sleep(0.1)  # the flag is written whole before the writer sleeps
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        return json.loads(flag.read_text())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.fixture
def milvus_gallery(make_engine, tmp_path):
    """(a factory of engines on one small gallery and one Milvus Lite store, the gallery, the faces indexed)."""
    from support.helpers_engine import copy_photos, first_photos

    gallery = tmp_path / "gallery"
    copy_photos(gallery, [first_photos(person, 1)[0] for person in PHOTOS])

    def engine():
        return make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, vector_store_uri=str(tmp_path / "faces.db"))

    first = engine()
    first.build_index("facenet")
    count = first.index_info("facenet").count
    _close(first, tmp_path / "faces.db")
    return engine, gallery, count


def _close(engine, db: Path) -> None:
    """Close the engine and stop this process's Milvus Lite server of `db` (a closed client leaves it running, and
    Milvus Lite lets one process at a time open the file)."""
    from milvus_lite import server_manager_instance

    engine.close()
    server_manager_instance.release_server(str(db))


def _rows_and_records(engine):
    store = engine.searcher("facenet").store
    return [row for part, _ in store.face_vectors() for row in part], store.files()


@pytest.mark.parametrize("pause", [str(n) for n in range(1, 12)])
def test_a_move_killed_after_any_write_leaves_no_orphan_rows(milvus_gallery, tmp_path, pause):
    make, gallery, count = milvus_gallery
    from support.helpers_engine import first_photos

    old = first_photos("Ben_Afflek", 1)[0]
    new = "Ben_A/" + old.split("/", 1)[1]  # the person renamed on disk: the next index run moves its rows
    (gallery / new).parent.mkdir()
    (gallery / old).rename(gallery / new)
    (gallery / old).parent.rmdir()
    writes = _write_and_kill(tmp_path, "move", str(tmp_path / "faces.db"), pause, old, new, "Ben A")

    engine = make()  # the next run, after the crash
    try:
        engine.build_index("facenet")
        rows, records = _rows_and_records(engine)
        orphans = sorted({row.path for row in rows} - set(records))
        assert not orphans, f"rows without a record after a crash after writes {writes}: {orphans}"
        assert old not in records and not [row for row in rows if row.path == old]
        assert [row.name for row in rows if row.path == new] == ["Ben A"]
        assert engine.index_info("facenet").count == count == len(rows)
    finally:
        _close(engine, tmp_path / "faces.db")


def test_rows_written_before_their_record_are_swept_when_the_file_never_comes(milvus_gallery, tmp_path):
    """The writer dies between a new file's rows and its record, and the file is gone before the next run: its rows
    match no file the builder knows, so only the sweep of the next writer removes them."""
    make, _gallery, count = milvus_gallery
    writes = _write_and_kill(tmp_path, "add", str(tmp_path / "faces.db"), "insert", "Gone_Person/photo.jpg")
    assert writes is not None and writes[-1] == "insert"

    engine = make()
    try:
        report = engine.build_index("facenet")  # nothing changed in the gallery: the sweep alone
        assert report.embedded_images == 0
        rows, records = _rows_and_records(engine)
        assert not [row for row in rows if row.path not in records]
        assert engine.index_info("facenet").count == count == len(rows)
        assert "Gone Person" not in engine.searcher("facenet").store.people()
    finally:
        _close(engine, tmp_path / "faces.db")


if __name__ == "__main__":
    _child(*sys.argv[1:])
