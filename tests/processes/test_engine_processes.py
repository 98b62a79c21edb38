"""Several real processes on one DATA_DIR: a killed index run resumes, a second run waits or says
another one runs, and a running engine picks up what another process indexed."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.helpers_engine import ELTON, FACENET_WEIGHTS, copy_photos, first_photos, fresh_env, sample

pytestmark = pytest.mark.slow  # each test runs several engine processes (more than 10 s each)

PEOPLE = ("Ben_Afflek", "Jerry_Seinfeld", "Madonna", "Mindy_Kaling")


def engine_env(data_dir: Path, models_dir: Path, **extra) -> dict[str, str]:
    """A fresh engine process's environment (none of the caller's engine settings) on these folders."""
    return fresh_env(
        DATA_DIR=str(data_dir), MODELS_DIR=str(models_dir), **{key: str(value) for key, value in extra.items()}
    )


@pytest.fixture()
def place(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / FACENET_WEIGHTS.name).symlink_to(FACENET_WEIGHTS)
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [photo for person in PEOPLE for photo in first_photos(person, 8)])
    return tmp_path / "data", models, gallery


def start_index(data_dir, models, gallery, *args, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "index", "--gallery", str(gallery), *args],
        env=engine_env(data_dir, models, **env),
        cwd=data_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_faces(data_dir: Path, at_least: int, process: subprocess.Popen, timeout: float = 240) -> int:
    """Poll the store from this process (a reader) until another process has committed `at_least` faces."""
    from engine.stores.local import LocalStore

    store = LocalStore(data_dir / "index" / "facenet")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            store.refresh()
            if store.count >= at_least:
                return store.count
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        raise AssertionError(f"no {at_least} faces committed within {timeout} s")
    finally:
        store.close()


def test_a_killed_index_run_resumes_where_it_stopped(place, make_engine):
    data_dir, models, gallery = place
    run = start_index(data_dir, models, gallery, INDEX_COMMIT_EVERY=4, DETECT_BATCH_SIZE=4)
    committed = wait_for_faces(data_dir, 4, run)
    run.send_signal(signal.SIGKILL)  # power cut: no clean-up of any kind
    run.wait(timeout=30)

    engine = make_engine(data_dir=data_dir, gallery_dir=gallery)
    report = engine.build_index("facenet")
    assert report.unchanged >= 4 and report.unchanged >= committed - 1  # resumed, not started over
    assert report.unchanged + report.added == 32
    assert report.embedded_images == report.added < 32
    assert report.faces_indexed == engine.index_info("facenet").count >= 30
    store = engine.searcher("facenet").store
    assert len(store.files()) == 32
    assert engine.search_path(sample(first_photos("Madonna", 1)[0]), k=1).faces[0].matches[0].name == "Madonna"


def test_a_second_index_run_waits_or_reports_the_first(place):
    """This test process holds the store's writer lock, as a first index run would."""
    import json

    from engine.stores.local import LocalStore

    data_dir, models, gallery = place
    holder = LocalStore(data_dir / "index" / "facenet")
    with holder.writer(timeout=0):
        refused = start_index(data_dir, models, gallery, "--no-wait")
        out, err = refused.communicate(timeout=240)
        assert refused.returncode == 2, (out, err)
        assert "another index run" in err

        waiting = start_index(data_dir, models, gallery, "--json")
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in waiting.stderr], daemon=True)
        reader.start()
        said = []  # it starts, finds the lock held and says so, however long its start takes on a busy machine
        while not said or "another index run is writing the facenet index; waiting for it to finish" not in said[-1]:
            said.append(lines.get(timeout=300))
        assert waiting.poll() is None, "".join(said)  # it waits: nothing may be written meanwhile
        holder.refresh()
        assert holder.count == 0 and holder.header is None
    out = waiting.stdout.read()
    assert waiting.wait(timeout=600) == 0, "".join(said)
    reader.join(timeout=60)
    holder.close()
    report = json.loads(out)
    assert (report["added"], report["faces_indexed"]) == (32, 32)


def test_a_running_engine_picks_up_what_another_process_indexed(place, make_engine):
    data_dir, models, gallery = place
    newcomer = "Elton_John"
    engine = make_engine(data_dir=data_dir, gallery_dir=gallery)
    engine.build_index("facenet")
    elton = sample(ELTON)  # a clear face (MTCNN misses the face in Elton's first photo)
    assert engine.search_path(elton, k=1).faces[0].matches[0].name != "Elton John"

    copy_photos(gallery, first_photos(newcomer, 4))
    other = start_index(data_dir, models, gallery, "--json")
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, err

    assert engine.refresh() == ["facenet"]
    assert engine.search_path(elton, k=1).faces[0].matches[0].name == "Elton John"
    assert engine.refresh() == []
