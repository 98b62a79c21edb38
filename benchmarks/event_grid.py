"""A wide grid over the photos layout's same-person decision, on the event benchmark's cached vectors.

engine/search/appearances.py's decision replayed in numpy over one fold's stored faces and selfie vectors, cached by
benchmarks/bench_event.py (run it on the fold first): exact search (the benchmark's stores hold under
ANN_THRESHOLD faces, so the store's search is exact too), the cohort level, the acceptance, one round of
average query expansion, each photo by its best face. On the default it gives bench_event.py's figures to
the last digit (A-F: precision 0.968, recall 0.914, strangers clean 0.990 for the old default), at about
0.05 s a setting instead of 10 s. Prints the settings with the highest recall under precision and
strangers-clean floors. Tune on A-F only.
Usage: python benchmarks/event_grid.py [--fold A-F] [--precision 0.96] [--strangers 0.97]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_event import labelled  # noqa: E402
from engine.core import Engine  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402

COHORT_FROM, COHORT_SIZE = 64, 64
GRID = {
    "threshold": (0.40, 0.42, 0.44, 0.46),
    "accept": (0.44, 0.46, 0.48, 0.50, 0.52, 0.54),
    "cohort_weight": (0.5, 0.75),
    "expand": (5,),
    "expand_threshold": (0.5, 0.55, 0.6),
    "expanded_threshold": (0.42, 0.44, 0.46, 0.48, 0.5, 0.52),
}


def load(fold: str) -> dict:
    base = EngineSettings()
    work = base.data_dir / "bench" / "event" / f"{fold}-g400-s200-seed0"
    truth = {p: [(n, tuple(b)) for n, b in f] for p, f in json.loads((work / "truth.json").read_text()).items()}
    settings = base.model_copy(update={"data_dir": work / "data", "gallery_layout": "photos"})
    store = Engine(settings).searcher("facenet").store
    rows, chunks = [], []
    for chunk_rows, chunk_vectors in store.face_vectors():
        rows += chunk_rows
        chunks.append(chunk_vectors)
    vectors = np.concatenate(chunks)
    cached = np.load(work / "queries.npz")
    photos_of: dict[str, set[str]] = {}
    for path, faces in truth.items():
        for name, _ in faces:
            photos_of.setdefault(name, set()).add(path)
    queries = cached["vectors"]
    valid = ~np.isnan(queries[:, 0])
    queries = np.nan_to_num(queries)
    similarity = queries @ vectors.T
    order = np.argsort(-similarity, axis=1, kind="stable")
    expanded = {}  # m confident faces -> each query's similarities after expanding with its m nearest
    for m in range(1, max(GRID["expand"]) + 1):
        query = queries + vectors[order[:, :m]].sum(1)
        expanded[m] = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ vectors.T
    return {
        "vectors": vectors,
        "queries": queries,
        "keys": [tuple(str(k).split("|", 1)) for k in cached["keys"]],
        "valid": valid,
        "similarity": similarity,
        "sorted": -np.sort(-similarity, axis=1),
        "expanded": expanded,
        "expanded_sorted": {m: -np.sort(-s, axis=1) for m, s in expanded.items()},
        "paths": [row.path for row in rows],
        "who": [labelled(row.box, truth[row.path]) for row in rows],
        "photos_of": photos_of,
    }


def cohort_term(ranked: np.ndarray, weight: float, threshold: float, past: bool = True, default: float = 0.2) -> float:
    """engine/search/appearances.py's cohort term on one query's similarities sorted best first: the mean of the
    window at ranks COHORT_FROM.. past the query's own faces (`past`; see _scored there), times `weight`."""

    def level(own: int) -> float:
        part = ranked[own + COHORT_FROM : own + COHORT_FROM + COHORT_SIZE]
        return weight * (float(part.mean()) if len(part) else default)

    if not past:
        return level(0)
    own = int(np.sum(ranked >= threshold))
    while True:
        cohort = level(own)
        passing = int(np.sum(ranked - cohort >= threshold))
        if passing >= own:
            return cohort
        own = passing


def figures(data: dict, t: float, a: float, w: float, k: int, et: float, xt: float) -> tuple[float, float, float]:
    """(precision, recall, strangers clean) as bench_event.py's evaluate computes them."""
    precisions, recalls, clean = [], [], []
    for i, (kind, name) in enumerate(data["keys"]):
        if not data["valid"][i]:
            (recalls.append(0.0) if kind == "guest" else clean.append(1.0))
            continue
        ranked = data["sorted"][i]
        cohort = cohort_term(ranked, w, t)
        chosen: np.ndarray = np.empty(0, int)
        if ranked[0] - cohort >= max(a, t):
            confident = int(np.sum(ranked[:k] - cohort >= et))
            if confident:
                scores = data["expanded"][confident][i]
                level = cohort_term(data["expanded_sorted"][confident][i], w, xt)
                chosen = np.flatnonzero(scores - level >= xt)
            else:
                scores = data["similarity"][i]
                chosen = np.flatnonzero(scores - cohort >= t)
            chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
        judge(data, kind, name, chosen, precisions, recalls, clean)
    return float(np.mean(precisions)), float(np.mean(recalls)), float(np.mean(clean))


def judge(data: dict, kind: str, name: str, chosen: np.ndarray, precisions: list, recalls: list, clean: list) -> None:
    """One selfie's answer (`chosen`: gallery faces, best first) into the figures, as bench_event.py judges it:
    a stranger's is clean when empty; a guest's photos (each by its best face) give its precision and recall."""
    if kind == "stranger":
        clean.append(float(not len(chosen)))
        return
    best: dict[str, int] = {}
    for j in chosen:
        best.setdefault(data["paths"][j], int(j))
    wanted = data["photos_of"].get(name, set())
    right = judged = 0
    for path, j in best.items():
        who = data["who"][j]
        if who is not None or path in wanted:
            judged += 1
            right += who == name or (who is None and path in wanted)
    recalls.append(len(set(best) & wanted) / len(wanted) if wanted else 1.0)
    if judged:
        precisions.append(right / judged)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fold", default="A-F")
    parser.add_argument("--precision", type=float, default=0.96)
    parser.add_argument("--strangers", type=float, default=0.97)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    data = load(args.fold)
    results = [(figures(data, *values), values) for values in itertools.product(*GRID.values())]
    print(f"{len(results)} settings ({', '.join(GRID)}); cohort ranks {COHORT_FROM}+{COHORT_SIZE}")
    passing = [r for r in results if r[0][0] >= args.precision and r[0][2] >= args.strangers]
    for (precision, recall, clean), values in sorted(passing, key=lambda r: -r[0][1])[: args.top]:
        print(f"precision {precision:.3f}  recall {recall:.3f}  strangers clean {clean:.3f}  {values}")
    best_recall = max(results, key=lambda r: r[0][1])
    print(
        f"highest recall with no floor: {best_recall[0][1]:.3f} (precision {best_recall[0][0]:.3f}, "
        f"strangers clean {best_recall[0][2]:.3f}) {best_recall[1]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
