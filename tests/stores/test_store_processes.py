"""The local store shared by real processes: a writer killed mid-write, a waiting writer, a reader during writes.

The processes are tests/support/store_proc.py run with this interpreter (no mocks: real files, real locks).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.stores.base import Changes, StoreHeader
from engine.stores.local import LocalStore
from support.store_proc import DIM, SMALL, faces

PROC = Path(__file__).resolve().parents[1] / "support" / "store_proc.py"
HEADER = StoreHeader("facenet", DIM, "fp", "/gallery")


def _base_store(root: Path, files: int = 20) -> LocalStore:
    store = LocalStore(root, **SMALL)
    store.initialise(HEADER)
    rows, x, records = faces("base", 0, files)
    rows = [r.__class__(f"base/{i:03d}.jpg", "base", r.box) for i, r in enumerate(rows)]
    records = [r.__class__(f"base/{i:03d}.jpg", r.size, r.mtime_ns, r.sha256, r.faces) for i, r in enumerate(records)]
    store.apply(Changes(rows=rows, vectors=x, records=records))
    return store


def _spawn(*args: str, stdin: str = "") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(PROC), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_writer_killed_before_its_commit_leaves_the_old_state_and_the_waiter_commits(tmp_path):
    root = tmp_path / "store"
    store = _base_store(root)
    before = store.files()
    flag = tmp_path / "paused"
    crashing = _spawn("write", str(root), "1", "crash", "--pause-before-commit", str(flag), stdin="base/000.jpg\n")
    try:
        _wait_for(flag, crashing)  # its segment file is written, its transaction not begun, it holds the lock
        waiter = _spawn("write", str(root), "2", "waiter", stdin="base/001.jpg\n")
        time.sleep(1.5)
        assert waiter.poll() is None, "the second writer must wait for the lock"
        os.kill(crashing.pid, signal.SIGKILL)
        crashing.wait(timeout=10)
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        assert "committed 24" in out  # 20 base - 1 removed + 5 added
    finally:
        crashing.kill()
    assert store.refresh() is True
    files = store.files()
    expected = (set(before) - {"base/001.jpg"}) | {f"waiter/{i}.jpg" for i in range(5)}
    assert set(files) == expected  # nothing of the killed writer, the waiter's change whole
    assert store.count == 24 and store.people() == {"base": 19, "waiter": 5}
    rows, x, _ = faces("waiter", 2)
    assert [h[0].row for h in store.search(x, 1)] == rows
    _crash_rows, crash_x, _ = faces("crash", 1)
    assert all(not h.row.path.startswith("crash/") for hits in store.search(crash_x, 24) for h in hits)
    # the killed writer's segment file is gone (the waiter cleaned it), only committed segments remain
    referenced = {s.name for s in store._snapshot.segments}
    assert {p.stem for p in (root / "segments").iterdir()} == referenced
    # and a fresh process reads the same
    assert LocalStore(root).count == 24


def test_a_reader_process_only_sees_committed_states_while_another_process_writes(tmp_path):
    root = tmp_path / "store"
    _base_store(root, files=30)
    stop = tmp_path / "stop"
    reader = _spawn("read", str(root), str(stop))
    try:
        time.sleep(1.0)
        assert reader.poll() is None, reader.stderr.read()
        writer = _spawn("writes", str(root), "10")
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        committed = [30] + [int(line) for line in out.split()]
        assert committed == [30 + 3 * i for i in range(11)]
        time.sleep(0.5)
    finally:
        stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err  # no FAISS or SQLite error while segments were merged and deleted
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["searches"] > 10
    assert set(seen["counts"]) <= set(committed)
    assert max(seen["counts"]) == committed[-1]  # it picked up the last commit
