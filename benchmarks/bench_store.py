"""Vector stores at scale: build, incremental add/remove, search latency, recall and memory.

Synthetic 128-d unit vectors shaped like face embeddings (identities x 10
noisy samples; one gallery file per face, the identity is the person). Steps, each timed end to end
(durable: the store's apply() has returned):
  build_s          initialise + apply the N faces in batches of --batch (as an index run would)
  add_1000_s       one apply adding 1,000 new faces (100 new people x 10)
  remove_person_s  one apply removing every file of one person (10 faces)
  search           --queries single-query searches (k=10): p50/p95 ms wall clock; search_cpu_p50_ms: CPU
                   time of the searching thread (the cost without other work on the cores; Milvus Lite
                   searches in a server thread, so it is not counted there); recall@10 against exact
                   search over the same live vectors
  rss_mb           a fresh process opens the store and runs 200 searches: its peak RSS (VmHWM) minus its
                   RSS before opening (rss_total_mb: the peak itself; this process imports no TensorFlow)
--reuse measures a store an earlier run of the same size left (search, memory) without rebuilding it;
build/add/remove are then null.
Prints one JSON line. Data goes to data/bench/ (git-ignored) unless --dir is given.
At 10M faces the vectors sit in a memory-mapped file (data/bench/vectors-*.npy, deleted at the end) and the
exact truth is computed in chunks: the run needs about 14 GB of RAM and 20 GB of disk; build with --batch 1000000.
Usage: python benchmarks/bench_store.py --faces 1000000 [--store local|milvus-lite] [--data uniform|facelike]
       [--queries 500] [--batch 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine.search.vectors import l2_normalize  # noqa: E402  (importing engine loads no TensorFlow)
from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader  # noqa: E402

DIM = 128
PER_PERSON = 10


# Real FaceNet embeddings are far from uniform on the sphere: on LFW (8,285 faces) their covariance has a
# participation ratio of 43 (46 directions hold 90% of the variance) and their mean has norm 0.23, so two
# random people's faces are at cosine 0.04 ± 0.15, not 0 ± 0.09. `--data facelike` draws the identities
# from a Gaussian with that spectrum (exp(-i/21.5): participation ratio 42.8) and mean; `uniform` (the
# default, and the harder case for any ANN index: no neighbourhood structure at all) from the whole sphere.
FACELIKE_DECAY = 21.5
FACELIKE_MEAN_NORM = 0.23


def identity_centres(count: int, dim: int, rng: np.random.Generator, data_kind: str) -> np.ndarray:
    raw = rng.standard_normal((count, dim), dtype=np.float32)
    if data_kind == "facelike":
        raw *= np.exp(-np.arange(dim) / (2 * FACELIKE_DECAY)).astype(np.float32)  # std: sqrt of the variance spectrum
        raw = l2_normalize(raw) * (1 - FACELIKE_MEAN_NORM)
        raw[:, 0] += FACELIKE_MEAN_NORM  # a common mean direction
    return l2_normalize(raw)


def synthetic(
    n: int,
    dim: int,
    rng: np.random.Generator,
    per_identity: int = 10,
    noise: float = 0.6,
    out=None,
    data_kind: str = "uniform",
):
    """Vectors shaped like face embeddings: `n // per_identity` identities, each a few noisy unit vectors.

    `out`: an array to fill (a memory-mapped file at 10M faces, so the 5 GB of vectors stay out of RSS).
    """
    centres = identity_centres(n // per_identity, dim, rng, data_kind)
    data = np.empty((n, dim), np.float32) if out is None else out
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        ids = np.arange(start, stop) // per_identity
        noisy = centres[ids] + noise / np.sqrt(dim) * rng.standard_normal((stop - start, dim), dtype=np.float32)
        data[start:stop] = l2_normalize(noisy)
    return data, centres


def exact_top10(queries: np.ndarray, data: np.ndarray, new_data: np.ndarray, removed_rows: slice) -> np.ndarray:
    """Exact top-10 positions over the live vectors (data less `removed_rows`, then new_data at len(data)+j),
    computed in chunks so 10M faces need no 20 GB similarity matrix."""
    chunks = [(start, data[start : start + 200_000]) for start in range(0, len(data), 200_000)]
    best_sims = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    for start, block in [*chunks, (len(data), new_data)]:
        sims = queries @ np.asarray(block).T
        positions = np.arange(start, start + len(block))
        sims[:, (positions >= removed_rows.start) & (positions < removed_rows.stop)] = -np.inf
        sims = np.concatenate([best_sims, sims], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(positions, (len(queries), len(positions)))], axis=1)
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        best_sims, best_ids = np.take_along_axis(sims, top, 1), np.take_along_axis(ids, top, 1)
    return best_ids


def open_bench_store(kind: str, path: Path):
    if kind == "local":
        from engine.stores.local import LocalStore

        return LocalStore(path)
    from engine.stores.milvus import MilvusStore

    return MilvusStore(str(path), model="bench")


def rows_for(start: int, stop: int, prefix: str = "id"):
    rows, records = [], []
    for i in range(start, stop):
        person = f"{prefix}{i // PER_PERSON:07d}"
        path = f"{person}/{i % PER_PERSON}.jpg"
        rows.append(FaceRow(path, person, (10, 10, 80, 80)))
        records.append(FileRecord(path, 1000, i, "0" * 64, 1))
    return rows, records


def rss_child(kind: str, path: str, queries_file: str) -> None:
    def rss_mb(key: str = "VmRSS:") -> float:
        # /proc, not ru_maxrss: ru_maxrss survives exec and would report the forking parent's peak
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024

    queries = np.load(queries_file)
    import faiss  # noqa: F401  (imported before the baseline: it is not the store's data)
    import sqlalchemy  # noqa: F401

    if kind != "local":
        import pymilvus  # noqa: F401
    base = rss_mb()
    store = open_bench_store(kind, Path(path))
    for q in queries[:200]:
        store.search(q[None], 10)
    peak = rss_mb("VmHWM:")
    print(json.dumps({"rss_mb": round(peak - base), "rss_total_mb": round(peak), "count": store.count}))
    store.close()


def build_add_remove(store, data, batch, new_data, new_rows, new_records, removed):
    """(build_s, add_1000_s, remove_person_s)"""
    t = time.perf_counter()
    store.initialise(StoreHeader("bench", DIM, "synthetic", "/bench"))
    for start in range(0, len(data), batch):
        stop = min(len(data), start + batch)
        rows, records = rows_for(start, stop)
        store.apply(Changes(rows=rows, vectors=data[start:stop], records=records))
    build_s = time.perf_counter() - t
    t = time.perf_counter()  # add 1,000 faces: 100 new people
    store.apply(Changes(rows=new_rows, vectors=new_data, records=new_records))
    add_1000_s = time.perf_counter() - t
    t = time.perf_counter()  # remove one person: 10 files, one face each
    store.apply(Changes(remove_paths=removed))
    remove_person_s = time.perf_counter() - t
    return build_s, add_1000_s, remove_person_s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--store", choices=("local", "milvus-lite"), default="local")
    parser.add_argument(
        "--data",
        choices=("uniform", "facelike"),
        default="uniform",
        help="how identities are drawn (see FACELIKE_DECAY)",
    )
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100_000, help="faces per apply() while building")
    parser.add_argument("--dir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--reuse", action="store_true", help="measure the store a former run left: no build/add/remove")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.store, *args.rss_child)
        return 0

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    args.dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.data == "uniform" else f"-{args.data}"
    vectors_file = args.dir / f"vectors-{args.faces}{suffix}.npy"
    out = np.lib.format.open_memmap(vectors_file, mode="w+", dtype=np.float32, shape=(args.faces, DIM))
    data, centres = synthetic(args.faces, DIM, rng, per_identity=PER_PERSON, out=out, data_kind=args.data)
    data.flush()
    generate_s = time.perf_counter() - t
    new_data, _ = synthetic(1000, DIM, np.random.default_rng(1), per_identity=PER_PERSON, data_kind=args.data)
    new_rows, new_records = rows_for(0, 1000, prefix="new")
    victim = int(rng.integers(0, args.faces // PER_PERSON))
    removed = {f"id{victim:07d}/{j}.jpg" for j in range(PER_PERSON)}
    target = args.dir / (f"store-{args.store}-{args.faces}{suffix}" + (".db" if args.store == "milvus-lite" else ""))
    reuse = args.reuse and target.exists()
    if not reuse:
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)

    store = open_bench_store(args.store, target)
    build_s = add_1000_s = remove_person_s = None
    if not reuse:
        build_s, add_1000_s, remove_person_s = build_add_remove(
            store, data, args.batch, new_data, new_rows, new_records, removed
        )

    # exact truth over the live vectors (the built ones less the removed person, plus the added ones)
    def live_path(position: int) -> str:
        if position >= args.faces:
            return new_rows[position - args.faces].path
        return f"id{position // PER_PERSON:07d}/{position % PER_PERSON}.jpg"

    ids = rng.integers(0, len(centres), args.queries)
    queries = centres[ids] + 0.6 / np.sqrt(DIM) * rng.standard_normal((args.queries, DIM), dtype=np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    # exact top-10 of every query first: a 1M x 128 product between two timed searches would leave OpenBLAS'
    # spinning threads stealing the cores from the next search
    exact_top = exact_top10(queries, data, new_data, slice(victim * PER_PERSON, (victim + 1) * PER_PERSON))
    times, cpu, recall = [], [], []
    for q, top in zip(queries, exact_top):
        t, c = time.perf_counter(), time.thread_time()
        hits = store.search(q[None], 10)[0]
        cpu.append(time.thread_time() - c)
        times.append(time.perf_counter() - t)
        exact = {live_path(int(i)) for i in top}
        recall.append(len(exact & {h.row.path for h in hits}) / 10)
        assert not removed & {h.row.path for h in hits}, "a removed face was returned"
    count = store.count
    store.close()
    del data, out
    vectors_file.unlink()
    if args.store == "milvus-lite":  # one process per file: stop this process' Lite server so the probe can open it
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(target))

    queries_file = args.dir / f"queries-{args.store}-{args.faces}{suffix}.npy"
    np.save(queries_file, queries)
    child = subprocess.run(
        [sys.executable, __file__, "--store", args.store, "--rss-child", str(target), str(queries_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    memory = json.loads(child.stdout.strip().splitlines()[-1])

    def rounded(value, digits):
        return None if value is None else round(value, digits)

    print(
        json.dumps(
            {
                "store": args.store,
                "faces": args.faces,
                "data": args.data,
                "count": count,
                "generate_s": round(generate_s, 1),
                "build_s": rounded(build_s, 1),
                "add_1000_s": rounded(add_1000_s, 3),
                "remove_person_s": rounded(remove_person_s, 3),
                "search_p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
                "search_p95_ms": round(float(np.percentile(times, 95)) * 1000, 3),
                "search_cpu_p50_ms": round(float(np.percentile(cpu, 50)) * 1000, 3),
                "recall_at_10": round(float(np.mean(recall)), 4),
                "rss_mb": memory["rss_mb"],
                "rss_total_mb": memory["rss_total_mb"],
                "disk_mb": round(sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2**20),
                "queries": args.queries,
                "load_avg_1m": round(os.getloadavg()[0], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
