"""Query latency with the engine warm: one 250x250 LFW photo against the whole A-L gallery.

Builds (or reuses, incremental) the deep-funneled A-L index under DATA_DIR/eval, then
times `search_bytes` for a sample of photos, split into detect / embed / search, and
prints the process's peak memory. Needs ../shared.
Usage: python benchmarks/bench_query.py [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from engine.core import Engine  # noqa: E402
from engine.images import list_gallery_images  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--variant", default="deepfunneled")
    args = parser.parse_args()
    gallery = REPO.parent / "shared" / "data" / "lfw" / args.variant
    if not gallery.is_dir():
        print(f"{gallery} not found: this benchmark needs ../shared")
        return 0
    base = EngineSettings()
    # the A-L index lives apart from the bot's: DATA_DIR/bench/<variant> as this engine's DATA_DIR
    engine = Engine(
        base.model_copy(update={"data_dir": base.data_dir / "bench" / args.variant, "gallery_dir": gallery})
    )
    report = engine.build_index("facenet", gallery)
    print(
        f"index: {engine.index_info('facenet').count} faces ({report.unchanged} images unchanged, {report.added} added)"
    )
    paths = list_gallery_images(gallery)[:: max(1, 8000 // args.queries)][: args.queries]
    payloads = [p.read_bytes() for p in paths]
    for data in payloads[:5]:
        engine.search_bytes(data, k=5)  # warm-up
    totals, parts = [], {"detect": [], "embed": [], "search": []}
    for data in payloads:
        started = time.perf_counter()
        result = engine.search_bytes(data, k=5)
        totals.append((time.perf_counter() - started) * 1000)
        for key in parts:
            parts[key].append(result.ms[key])
    print(f"{len(payloads)} queries, k=5, one face each on average, engine warm:")
    print(
        f"  total : p50 {np.percentile(totals, 50):6.1f} ms  p95 {np.percentile(totals, 95):6.1f} ms (decode included)"
    )
    for key, values in parts.items():
        print(f"  {key:6}: p50 {np.percentile(values, 50):6.1f} ms  p95 {np.percentile(values, 95):6.1f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS) of the warm engine with the A-L index: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
