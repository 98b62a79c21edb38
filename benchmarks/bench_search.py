"""Search alone at scale: exact matrix-product k-NN vs the FAISS HNSW index the engine switches to.

1,000,000 synthetic 128-d unit vectors shaped like face embeddings (identities as
clusters: 100,000 centres, 10 noisy samples each), queries are fresh samples of
random identities. Prints p50/p95 latency per single query and recall@10 vs exact.
Usage: python benchmarks/bench_search.py [--n 1000000] [--queries 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine.search import l2_normalize  # noqa: E402
from engine.search import VectorSearch  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402


def synthetic(n: int, dim: int, rng: np.random.Generator, per_identity: int = 10, noise: float = 0.6):
    centres = l2_normalize(rng.standard_normal((n // per_identity, dim), dtype=np.float32))
    data = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        ids = np.arange(start, stop) // per_identity
        data[start:stop] = l2_normalize(centres[ids] + noise / np.sqrt(dim) * rng.standard_normal((stop - start, dim), dtype=np.float32))
    return data, centres


def percentile_ms(times: list[float], q: float) -> float:
    return float(np.percentile(np.array(times) * 1000, q))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    settings = EngineSettings()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    data, centres = synthetic(args.n, 128, rng)
    ids = rng.integers(0, len(centres), args.queries)
    queries = l2_normalize(centres[ids] + 0.6 / np.sqrt(128) * rng.standard_normal((args.queries, 128), dtype=np.float32))
    print(f"{args.n:,} vectors x 128 generated in {time.perf_counter() - started:.1f} s")

    exact = VectorSearch(data)
    truth, exact_times = [], []
    for q in queries:
        t = time.perf_counter()
        _, idx = exact.search(q[None], args.k)
        exact_times.append(time.perf_counter() - t)
        truth.append(set(idx[0].tolist()))
    print(f"exact   : p50 {percentile_ms(exact_times, 50):7.2f} ms  p95 {percentile_ms(exact_times, 95):7.2f} ms per query")

    started = time.perf_counter()
    ann = VectorSearch.build(data, use_ann=True, hnsw_m=settings.hnsw_m, ef_search=settings.hnsw_ef_search)
    print(f"HNSW M={settings.hnsw_m} built in {time.perf_counter() - started:.0f} s")
    for ef in (32, 64, 128, 256):
        ann.ann_index.hnsw.efSearch = ef
        times, recall = [], []
        for q, expected in zip(queries, truth):
            t = time.perf_counter()
            _, idx = ann.search(q[None], args.k)
            times.append(time.perf_counter() - t)
            recall.append(len(expected & set(idx[0].tolist())) / args.k)
        marker = "  <- engine default" if ef == settings.hnsw_ef_search else ""
        print(
            f"HNSW ef={ef:<3}: p50 {percentile_ms(times, 50):7.3f} ms  p95 {percentile_ms(times, 95):7.3f} ms  "
            f"recall@{args.k} {np.mean(recall):.4f}{marker}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
