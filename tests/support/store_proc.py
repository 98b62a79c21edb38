"""Child processes for tests/stores/test_store_processes.py: real writers and readers of one local store.

python tests/support/store_proc.py write ROOT SEED TAG [--pause-before-commit FLAG]
    apply one change: add 5 faces under TAG/, remove the files listed on stdin (one a line)
python tests/support/store_proc.py writes ROOT N
    N applies, each adding 5 faces (w<i>/...) and removing 2 base files: prints the committed counts
python tests/support/store_proc.py read ROOT STOPFILE
    refresh + count + search in a loop until STOPFILE exists; prints JSON of the counts it saw
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if "engine" not in sys.modules:  # the stores need no TensorFlow: skip engine/__init__ (it loads FaceNet's)
    package = types.ModuleType("engine")
    package.__path__ = [str(ROOT / "engine")]
    sys.modules["engine"] = package

# imported after the stand-in `engine` package above, so engine/__init__ never runs
import numpy as np  # noqa: E402

from engine.stores.base import Changes, FaceRow, FileRecord  # noqa: E402
from engine.stores.local import LocalStore  # noqa: E402

DIM = 16
# small thresholds: segments are merged (and their files deleted) often while readers read
SMALL = {"ann_threshold": 30, "merge_min": 8, "merge_ratio": 0.1, "max_growing": 2}


def faces(tag: str, seed: int, n: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = [FaceRow(f"{tag}/{i}.jpg", tag, (i, i, 10, 10)) for i in range(n)]
    records = [FileRecord(r.path, 1, 1, f"{tag}{i}", 1) for i, r in enumerate(rows)]
    return rows, x, records


def write(root: str, seed: str, tag: str, *rest: str) -> None:
    hook = None
    if rest and rest[0] == "--pause-before-commit":
        flag = Path(rest[1])

        def hook():  # files written, transaction not begun: the moment a crash hurts most
            flag.touch()
            time.sleep(120)

    store = LocalStore(Path(root), before_commit=hook, **SMALL)
    remove = {line.strip() for line in sys.stdin if line.strip()}
    rows, x, records = faces(tag, int(seed))
    print("applying", flush=True)
    store.apply(Changes(rows=rows, vectors=x, records=records, remove_paths=remove))
    print("committed", store.count, flush=True)


def writes(root: str, n: str) -> None:
    store = LocalStore(Path(root), **SMALL)
    base = sorted(p for p in store.files() if p.startswith("base/"))
    for i in range(int(n)):
        rows, x, records = faces(f"w{i}", 100 + i)
        store.apply(Changes(rows=rows, vectors=x, records=records, remove_paths=set(base[2 * i : 2 * i + 2])))
        print(store.count, flush=True)
        time.sleep(0.05)


def read(root: str, stopfile: str) -> None:
    store = LocalStore(Path(root), **SMALL)
    rng = np.random.default_rng(7)
    counts, searches = set(), 0
    stop = Path(stopfile)
    while not stop.exists():
        store.refresh()
        count = store.count
        q = rng.standard_normal((1, DIM)).astype(np.float32)
        hits = store.search(q / np.linalg.norm(q), 5)[0]
        # hits may drop a row removed after this snapshot, never hold more than k or unsorted ones
        assert len(hits) <= 5 and [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
        counts.add(count)
        searches += 1
    print(json.dumps({"counts": sorted(counts), "searches": searches}), flush=True)


if __name__ == "__main__":
    {"write": write, "writes": writes, "read": read}[sys.argv[1]](*sys.argv[2:])
