"""Crop and answer settings chosen on one fold of people, reported on the other (LFW development part).

The development people are split by name into two folds, A–F and G–L. For each photo kind, every
candidate (crop variant × fallback face confidence × person-level support; the padded detection pass as the
engine does it unless --padding 0) is scored by leave-one-out rank-1 within each fold
(the protocol of `python -m engine eval`: gallery rows are plain embeddings of each photo's main face,
queries flip-averaged when the cache holds mirrored embeddings, else plain; a photo without a face a
miss). The best candidate on one fold is reported on the other, and the other way round; a candidate
only becomes a default if it wins on both.
Detections and embeddings come from benchmarks/lfw_cache.py's cache (filled on first use).
Usage: python benchmarks/tune_lfw.py [--kinds deepfunneled,original_150px] [--variants rotate-0.1,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from engine.search.identity import IdentityParams, person_scores  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402
from lfw_cache import KINDS, VARIANTS, lfw_root, load_detections, load_embeddings, make_embedder, query_vectors  # noqa: E402

FOLDS = {"A-F": tuple("ABCDEF"), "G-L": tuple("GHIJKL")}
SUPPORTS = (0.0, 0.05, 0.1, 0.25)


def fold_of(image: str) -> str:
    return "A-F" if image[0].upper() in FOLDS["A-F"] else "G-L"


def fold_scores(detections, plain, mirrored, fold: str, supports=SUPPORTS) -> dict[float, float]:
    """Leave-one-out rank-1 of the fold's people, per person-level support (0: the top face's name)."""
    members = [i for i, image in enumerate(detections.images) if fold_of(image) == fold]
    count: dict[str, int] = {}
    for i in members:
        count[detections.people[i]] = count.get(detections.people[i], 0) + 1
    queries = [i for i in members if count[detections.people[i]] >= 2]
    rows = [i for i in members if not np.isnan(plain[i, 0])]
    people = np.array(detections.people)[rows]
    features = plain[rows]
    answered = [i for i in queries if not np.isnan(plain[i, 0])]
    vectors = query_vectors(plain[answered], None if mirrored is None else mirrored[answered])
    row_position = {image_index: position for position, image_index in enumerate(rows)}
    hits = {support: 0 for support in supports}
    neighbours = 20
    for start in range(0, len(answered), 1024):
        block = answered[start : start + 1024]
        similarities = vectors[start : start + len(block)] @ features.T
        for j, i in enumerate(block):
            similarities[j, row_position[i]] = -np.inf  # never the query photo itself
        top = np.argpartition(-similarities, neighbours, axis=1)[:, :neighbours]
        for j, i in enumerate(block):
            order = top[j][np.argsort(-similarities[j, top[j]])]
            names, sims = people[order].tolist(), similarities[j, order]
            for support in supports:
                best = person_scores(names, sims, IdentityParams(threshold=0.0, support=support))[0][0]
                hits[support] += best == detections.people[i]
    return {support: hits[support] / len(queries) for support in supports}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--fallbacks",
        default="1.0,0.9,0.85,0.8,0.7",
        help="FACE_FALLBACK_CONFIDENCE candidates (1.0: off; photos with no face at 0.9 take their best face from there on)",
    )
    parser.add_argument(
        "--padding",
        type=float,
        default=EngineSettings().face_retry_padding,
        help="FACE_RETRY_PADDING: the last, padded detection pass for photos without a face (0: off; default: the engine's)",
    )
    args = parser.parse_args()
    if lfw_root() is None:
        print("../shared/data/lfw not found: this benchmark needs it")
        return 0
    embedder = make_embedder()
    for kind in args.kinds.split(","):
        detections = load_detections(kind)
        table: dict[tuple[str, float, float], dict[str, float]] = {}
        for variant in args.variants.split(","):
            for fallback in (float(f) for f in args.fallbacks.split(",")):
                plain, mirrored = load_embeddings(
                    detections, variant, embedder, fallback=fallback, padding=args.padding
                )
                per_fold = {fold: fold_scores(detections, plain, mirrored, fold) for fold in FOLDS}
                for support in SUPPORTS:
                    table[(variant, fallback, support)] = {fold: per_fold[fold][support] for fold in FOLDS}
                    print(
                        f"{kind:15s} crop={variant:13s} fallback={fallback:<4} support={support:<4} "
                        + "  ".join(f"rank1[{fold}]={per_fold[fold][support]:.4f}" for fold in FOLDS),
                        flush=True,
                    )
        for chooser, reporter in (("A-F", "G-L"), ("G-L", "A-F")):
            best = max(table, key=lambda key: table[key][chooser])
            print(
                f"{kind}: chosen on {chooser}: crop={best[0]} fallback={best[1]} support={best[2]} "
                f"(rank1 {table[best][chooser]:.4f} there) -> rank1 on {reporter}: {table[best][reporter]:.4f}"
            )
        both = [key for key in table if all(table[key][f] >= max(t[f] for t in table.values()) - 0.001 for f in FOLDS)]
        print(f"{kind}: within 0.001 of the best on both folds: {both}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
