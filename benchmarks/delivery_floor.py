"""How large a photos gallery must be before its answers are as precise as the whole event's: DELIVERY_MIN_FACES.

A delivery cannot be taken back, and a live event's gallery starts small. The same-person decision
(engine/search/appearances.py) takes a cohort level from each query's neighbours at ranks 64-128: in a gallery of
a few hundred faces those ranks are its lower half, the level is low, and look-alikes pass. This replays the
decision with the engine's default settings (as benchmarks/event_grid.py does, in numpy) on galleries made of
random whole photos of one fold's event, smaller and smaller, and prints precision, recall and strangers clean
against the number of faces, averaged over draws. Choose on A-F, report on G-L.
Run benchmarks/bench_event.py --fold F first (its store, truth and selfie vectors are what this reads).
Usage: python benchmarks/delivery_floor.py [--fold A-F] [--sizes 128,192,256,384,512,768,1024] [--draws 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from engine.search.appearances import AppearanceParams  # noqa: E402
from event_grid import cohort_term, judge, load  # noqa: E402


def answer(similarity: np.ndarray, vectors: np.ndarray, query: np.ndarray, p: AppearanceParams) -> np.ndarray:
    """Gallery faces (indices into `vectors`) judged the query's person, best first: appearances() in numpy."""
    order = np.argsort(-similarity, kind="stable")
    ranked = similarity[order]
    level = cohort_term(ranked, p.cohort_weight, p.threshold, p.cohort_past_matches, p.cohort_default)
    if not len(ranked) or ranked[0] - level < max(p.accept, p.threshold):
        return np.empty(0, int)
    confident = int(np.sum(ranked[: p.expand] - level >= p.expand_threshold))
    if not confident:
        chosen = np.flatnonzero(similarity - level >= p.threshold)
        return chosen[np.argsort(-similarity[chosen], kind="stable")]
    expanded = query + vectors[order[:confident]].sum(0)
    scores = vectors @ (expanded / np.linalg.norm(expanded))
    threshold = p.threshold if p.expanded_threshold is None else p.expanded_threshold
    level = cohort_term(-np.sort(-scores), p.cohort_weight, threshold, p.cohort_past_matches, p.cohort_default)
    chosen = np.flatnonzero(scores - level >= threshold)
    return chosen[np.argsort(-scores[chosen], kind="stable")]


def evaluate(data: dict, vectors: np.ndarray, queries: np.ndarray, keep: np.ndarray, p: AppearanceParams) -> tuple:
    """(precision, recall, strangers clean, faces) on the gallery made of the faces `keep` (whole photos)."""
    photos = {data["paths"][j] for j in keep}
    sub = {"paths": [data["paths"][j] for j in keep], "who": [data["who"][j] for j in keep]}
    sub["photos_of"] = {n: s & photos for n, s in data["photos_of"].items()}
    precisions: list = []
    recalls: list = []
    clean: list = []
    for i, (kind, name) in enumerate(data["keys"]):
        if not data["valid"][i]:
            continue
        if kind == "guest" and not sub["photos_of"].get(name):
            continue  # a guest in none of these photos: nothing to find
        chosen = answer(vectors[keep] @ queries[i], vectors[keep], queries[i], p)
        judge(sub, kind, name, chosen, precisions, recalls, clean)
    return float(np.mean(precisions)), float(np.mean(recalls)), float(np.mean(clean)), len(keep)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fold", default="A-F")
    parser.add_argument("--sizes", default="128,192,256,384,512,768,1024")
    parser.add_argument("--draws", type=int, default=8)
    args = parser.parse_args()
    data = load(args.fold)
    vectors, queries = data["vectors"], data["queries"]
    p = AppearanceParams()
    by_photo: dict[str, list[int]] = {}
    for j, path in enumerate(data["paths"]):
        by_photo.setdefault(path, []).append(j)
    photos = sorted(by_photo)
    print(f"fold {args.fold}: {len(photos)} photos, {len(vectors)} faces; decision: {p.describe()}")
    full = evaluate(data, vectors, queries, np.arange(len(vectors)), p)
    print(
        f"whole gallery ({full[3]} faces): precision {full[0]:.3f}  recall {full[1]:.3f}  strangers clean {full[2]:.3f}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        runs = []
        for draw in range(args.draws):
            rng = np.random.default_rng(draw)
            keep: list[int] = []
            for path in rng.permutation(photos):  # whole photos, as a gallery grows, until `size` faces
                if len(keep) >= size:
                    break
                keep += by_photo[path]
            runs.append(evaluate(data, vectors, queries, np.asarray(keep), p))
        pr, rc, cl, faces = np.mean(runs, axis=0)
        worst = min(r[0] for r in runs)
        print(
            f"{size:6d} faces ({faces:.0f}): precision {pr:.3f} (worst draw {worst:.3f})  recall {rc:.3f}  "
            f"strangers clean {cl:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
