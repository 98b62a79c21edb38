"""Open-set identification on the LFW development people: FPIR / FNIR of the engine's identity decision.

Each fold of people (A–F, G–L) is split many times into a sparse open-set gallery (engine/tools/evaluate.py:
`open_set_split`: half of the people with >= 2 photos enrolled with all photos but one, the one left
out a mated probe, as many never-enrolled people's photos as non-mated probes). For every scoring
candidate (person-level support × cohort normalisation) the threshold is chosen on one fold (the one
that best meets FPIR <= 0.05 and FNIR <= 0.04 together) and FPIR, FNIR and rank-1 are reported on the
other fold at that threshold. Detections and embeddings come from benchmarks/lfw_cache.py's cache.
Usage: python benchmarks/open_set.py [--kinds original_150px] [--variants rotate-0.1] [--splits 10]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from engine.backends.facenet import FaceNetBackend  # noqa: E402
from engine.search.identity import IdentityParams  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402
from engine.tools.evaluate import array_search, open_set_answers, open_set_split  # noqa: E402
from lfw_cache import lfw_root, load_detections, load_embeddings, make_embedder, query_vectors  # noqa: E402
from tune_lfw import FOLDS, fold_of  # noqa: E402

TARGET_FPIR, TARGET_FNIR = 0.05, 0.04


def candidates() -> list[IdentityParams]:
    """Raw best similarity; minus a share of the cohort's mean; z-scored against the cohort."""
    grid = itertools.product((0.0, 0.5, 0.75, 1.0), (3, 10, 20), (False, True))
    return [
        IdentityParams(threshold=0.0, cohort_weight=weight, cohort=cohort, cohort_spread=spread, neighbours=50)
        for weight, cohort, spread in grid
        if (weight or (cohort == 3 and not spread)) and (weight == 1.0 or not spread)
    ]


def fold_answers(detections, plain, mirrored, fold: str, params_list, splits: int):
    """Per split: (mated, [(mated answers, non-mated answers) per params])."""
    members = [i for i, image in enumerate(detections.images) if fold_of(image) == fold]
    images_of: dict[str, list[str]] = {}
    index_of = {}
    for i in members:
        images_of.setdefault(detections.people[i], []).append(detections.images[i])
        index_of[detections.images[i]] = i
    results = []
    for seed in range(splits):
        gallery, mated, non_mated = open_set_split(images_of, seed)
        rows = [index_of[image] for image in gallery if not np.isnan(plain[index_of[image], 0])]
        features = plain[rows]
        people = [detections.people[i] for i in rows]
        vectors = {}
        for image, _ in [*mated, *non_mated]:
            i = index_of[image]
            if not np.isnan(plain[i, 0]):
                vectors[image] = query_vectors(plain[i : i + 1], None if mirrored is None else mirrored[i : i + 1])[0]
        search = array_search(features, people)
        per_params = [
            (
                open_set_answers(search, mated, vectors, params),
                open_set_answers(search, non_mated, vectors, params),
            )
            for params in params_list
        ]
        results.append((mated, per_params))
    return results


def _arrays(results, p: int):
    """Per split: (mated right-name flags, mated scores, non-mated scores) as arrays."""
    out = []
    for mated, per in results:
        mated_answers, non_mated_answers = per[p]
        right = np.array([name == person for (_, person), (name, _) in zip(mated, mated_answers)])
        out.append((right, np.array([s for _, s in mated_answers]), np.array([s for _, s in non_mated_answers])))
    return out


def rates_over(results, p: int, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Mean FPIR / FNIR (and their spread over splits) at each threshold; rank-1 of the mated probes."""
    thresholds = np.atleast_1d(thresholds)[:, None]
    fpir, fnir, rank1 = [], [], []
    for right, mated_scores, non_mated_scores in _arrays(results, p):
        fpir.append((non_mated_scores[None, :] >= thresholds).mean(axis=1))
        fnir.append(1.0 - (right[None, :] & (mated_scores[None, :] >= thresholds)).mean(axis=1))
        rank1.append(right.mean())
    fpir, fnir = np.array(fpir), np.array(fnir)
    return {
        "fpir": fpir.mean(axis=0), "fnir": fnir.mean(axis=0), "fpir_std": fpir.std(axis=0), "fnir_std": fnir.std(axis=0),
        "rank1": np.full(len(thresholds), float(np.mean(rank1))),
    }  # fmt: skip


def rates(results, p: int, threshold: float) -> dict:
    return {key: float(values[0]) for key, values in rates_over(results, p, np.array([threshold])).items()}


def choose_threshold(results, p: int) -> float:
    """The threshold that best meets both targets (lowest max(FPIR / 0.05, FNIR / 0.04)) on these splits."""
    scores = np.concatenate([np.concatenate([m, n]) for _, m, n in _arrays(results, p)])
    grid = np.unique(np.quantile(scores[np.isfinite(scores)], np.linspace(0.02, 0.98, 481)))
    r = rates_over(results, p, grid)
    return float(grid[int(np.argmin(np.maximum(r["fpir"] / TARGET_FPIR, r["fnir"] / TARGET_FNIR)))])


def describe(params: IdentityParams) -> str:
    return (
        f"support={params.support:<4} cohort_weight={params.cohort_weight:<4} cohort={params.cohort:<2} "
        f"spread={params.cohort_spread!s:5} neighbours={params.neighbours}"
    )


def decision_cost(features: np.ndarray, people: list[str], queries: np.ndarray, params: IdentityParams) -> None:
    """The search step through the local store with and without the identity decision (k=5 vs `neighbours` +
    identify), per query."""
    import tempfile
    import time

    from engine.search.identity import identify
    from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader
    from engine.stores.local import LocalStore

    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(Path(folder))
        store.initialise(StoreHeader("facenet", features.shape[1], "open-set-bench", "/lfw"))
        rows = [FaceRow(f"{person}/{i}.jpg", person, (0, 0, 1, 1)) for i, person in enumerate(people)]
        records = [FileRecord(row.path, 1, i, "0" * 64, 1) for i, row in enumerate(rows)]
        store.apply(Changes(rows=rows, vectors=features, records=records))
        timings = {}
        for label, k, decide in (
            ("k=5 matches only", 5, False),
            (f"k={params.neighbours} + identity", params.neighbours, True),
        ):
            times = []
            for query in queries:
                started = time.perf_counter()
                hits = store.search(query[None], k)[0]
                if decide:
                    identify([hit.row.name for hit in hits], [hit.similarity for hit in hits], params)
                times.append((time.perf_counter() - started) * 1000)
            timings[label] = np.percentile(times, 50)
        store.close()
    print(
        f"search step on a {len(features)}-face gallery (local store), p50 over {len(queries)} queries: "
        + ", ".join(f"{label} {ms:.3f} ms" for label, ms in timings.items()),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default="original_150px,deepfunneled")
    parser.add_argument("--variants", default="rotate-0.1")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--default-only", action="store_true", help="only the engine's default identity settings")
    args = parser.parse_args()
    if lfw_root() is None:
        print("../shared/data/lfw not found: this benchmark needs it")
        return 0
    embedder = make_embedder()
    default = FaceNetBackend.default_identity
    params_list = [default] if args.default_only else [default, *candidates()]
    for kind in args.kinds.split(","):
        detections = load_detections(kind)
        for variant in args.variants.split(","):
            settings = EngineSettings()  # the engine's detection: padded pass and fallback face included
            plain, mirrored = load_embeddings(
                detections,
                variant,
                embedder,
                fallback=settings.face_fallback_confidence,
                padding=settings.face_retry_padding,
            )
            found = ~np.isnan(plain[:, 0])
            decision_cost(plain[found], [p for p, f in zip(detections.people, found) if f], plain[found][::40], default)
            results = {
                fold: fold_answers(detections, plain, mirrored, fold, params_list, args.splits) for fold in FOLDS
            }
            d = {fold: rates(results[fold], 0, default.threshold) for fold in FOLDS}
            print(
                f"{kind} crop={variant} DEFAULT ({describe(default)} threshold={default.threshold}): "
                + "  ".join(
                    f"[{fold}] FPIR={d[fold]['fpir']:.4f}±{d[fold]['fpir_std']:.3f} "
                    f"FNIR={d[fold]['fnir']:.4f}±{d[fold]['fnir_std']:.3f} rank1={d[fold]['rank1']:.4f}"
                    for fold in FOLDS
                ),
                flush=True,
            )
            if args.default_only:
                continue
            for p, params in enumerate(params_list[1:], start=1):
                line = []
                for chooser, reporter in (("A-F", "G-L"), ("G-L", "A-F")):
                    threshold = choose_threshold(results[chooser], p)
                    r = rates(results[reporter], p, threshold)
                    line.append(
                        f"chosen on {chooser} t={threshold:.3f} -> [{reporter}] FPIR={r['fpir']:.4f} FNIR={r['fnir']:.4f} "
                        f"rank1={r['rank1']:.4f}"
                    )
                pooled = choose_threshold(results["A-F"] + results["G-L"], p)
                line.append(f"threshold on both folds {pooled:.3f}")
                print(f"{kind} crop={variant} {describe(params)} " + " | ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
