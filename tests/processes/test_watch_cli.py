"""`python -m engine index --watch` in a real process on a temporary photos gallery: a photo dropped in is indexed
(seen by a second engine on the same DATA_DIR, as a bot would see it), and SIGTERM stops it promptly with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from support.helpers_engine import BEN, JERRY, MADONNA, MODELS_DIR, encode, fresh_env, sample, side_by_side

TIMEOUT = 180
OLD = time.time() - 3600


def wait_until(condition: Callable[[], object], what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert process.poll() is None, f"the watcher exited ({process.returncode}): {log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {log.read_text()}"
        time.sleep(0.1)


def test_a_dropped_photo_is_indexed_and_sigterm_stops_the_watch(make_engine, tmp_path):
    gallery, data = tmp_path / "gallery", tmp_path / "data"
    (gallery / "day-1").mkdir(parents=True)
    (gallery / "day-1" / "IMG_0001.jpg").write_bytes(sample(BEN).read_bytes())
    os.utime(gallery / "day-1" / "IMG_0001.jpg", (OLD, OLD))
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = fresh_env(
        DATA_DIR=str(data), MODELS_DIR=str(MODELS_DIR), GALLERY_LAYOUT="photos", WATCH_SETTLE_S="0.4",
        INDEX_WORKERS="0",
    )  # fmt: skip
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "index", "--watch", "--gallery", str(gallery)],
            env=env, cwd=tmp_path, stdout=stdout, stderr=stderr, text=True,
        )  # fmt: skip
    try:
        wait_until(lambda: "1 added" in out.read_text(), "the first run", process, err)

        reader = make_engine(data_dir=data, gallery_dir=gallery, gallery_layout="photos")
        try:
            reader.searcher("facenet")  # opened before the photo lands: the new version is picked up by refresh()
            (gallery / "day-1" / "IMG_0002.jpg").write_bytes(encode(side_by_side(sample(JERRY), sample(MADONNA))))

            def indexed() -> bool:
                reader.refresh()
                record = reader.searcher("facenet").store.files().get("day-1/IMG_0002.jpg")
                return record is not None and record.faces == 2

            wait_until(indexed, "the dropped photo indexed", process, err)
            found = reader.search_path(sample(JERRY), model="facenet").faces[0]
            assert "day-1/IMG_0002.jpg" in {
                Path(p.path).relative_to(gallery.resolve()).as_posix() for p in found.photos
            }
        finally:
            reader.close()

        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, err.read_text()
        assert time.monotonic() - stopping < 10, "SIGTERM took long to stop the watch"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = out.read_text().splitlines()
    assert lines[0].startswith("facenet: 1 added") and any(line.startswith("facenet: 1 added") for line in lines[1:])
    assert "stopped" in err.read_text()
