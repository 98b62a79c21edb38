"""Accuracy on both runtimes: rank-1 and open-set FPIR/FNIR on the whole development folds, both photo kinds.

For each runtime (ENGINE_RUNTIME onnx and keras) and photo kind, every LFW A–L photo goes once through the
engine's own path: `backend.gallery_regions` (MTCNN, the most prominent face, the fallback and padded passes)
then `backend.embed` as indexing embeds it (gallery) and as a search embeds it (query, flip-averaged). In the
people layout a search finds the same main face as indexing, so one detection pass gives both vectors.
Vectors are cached per runtime and kind (DATA_DIR/cache/runtime-accuracy/), so the runtimes can be run apart.

Then, per fold (people A–F, G–L) and kind, with exact search over the fold's own photos:
- rank-1: every photo of a person with >= 2 photos queries the others (its own row left out), as `engine eval`;
- open set: `open_set_split` (seed 0) and the model's identity decision, as `engine eval --open-set`;
- the share of queries whose top-1 photo is the same on both runtimes, and how the main faces' boxes agree.

Usage: python benchmarks/runtime_accuracy.py [--runtimes onnx,keras] [--kinds deepfunneled,original_150px]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine.images import list_gallery_images, person_name
from engine.settings import EngineSettings
from lfw_cache import KINDS, LFW, REPO, cache_dir  # also puts the repository on sys.path
from tune_lfw import FOLDS, fold_of

BATCH = 32


def cache_path(runtime: str, kind: str) -> Path:
    folder = cache_dir() / "runtime-accuracy"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{runtime}-{kind}.npz"


def embed_kind(runtime: str, kind: str) -> Path:
    """Every photo of `kind` through the engine on `runtime`: main-face box, gallery and query vectors (cached)."""
    path = cache_path(runtime, kind)
    if path.is_file():
        return path
    from engine.core import Engine

    engine = Engine(EngineSettings(engine_runtime=runtime))
    backend = engine.backend("facenet")
    assert backend.runtime == runtime, (backend.runtime, runtime)
    gallery = LFW / kind
    paths = list_gallery_images(gallery)
    n = len(paths)
    boxes = np.full((n, 4), -1, np.int32)
    plain = np.full((n, backend.dim), np.nan, np.float32)
    query = np.full((n, backend.dim), np.nan, np.float32)
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        images = [engine.read(p) for p in paths[start : start + BATCH]]
        regions = backend.gallery_regions(images)
        rows = [start + i for i, found in enumerate(regions) if found]
        faces = [found[0] for found in regions if found]
        if faces:
            plain[rows] = backend.embed(faces, query=False)
            query[rows] = backend.embed(faces, query=True)
            boxes[rows] = [face.box for face in faces]
        if start % (BATCH * 32) == 0:
            print(f"  {runtime} {kind}: {start + len(images)}/{n} in {time.perf_counter() - started:.0f} s", flush=True)
    relative = np.array([p.relative_to(gallery).as_posix() for p in paths])
    np.savez(path, paths=relative, boxes=boxes, plain=plain, query=query)
    print(f"{runtime} {kind}: {n} photos in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def rank1(paths: np.ndarray, plain: np.ndarray, query: np.ndarray, members: np.ndarray) -> tuple[float, dict]:
    """Rank-1 over the photos `members` (indices): (rank-1, {query index: top-1 index or -1})."""
    people = np.array([person_name(Path(p)) for p in paths])
    counts: dict[str, int] = {}
    for i in members:
        counts[people[i]] = counts.get(people[i], 0) + 1
    queries = [i for i in members if counts[people[i]] >= 2]
    rows = np.array([i for i in members if not np.isnan(plain[i, 0])])
    tops: dict[int, int] = {}
    hits = 0
    for start in range(0, len(queries), 512):
        block = queries[start : start + 512]
        answered = [i for i in block if not np.isnan(query[i, 0])]
        for i in block:
            tops[i] = -1
        if not answered:
            continue
        similarities = query[answered] @ plain[rows].T
        for position, i in enumerate(answered):
            similarities[position, rows == i] = -np.inf  # never its own row
        best = rows[np.argmax(similarities, axis=1)]
        for i, top in zip(answered, best):
            tops[i] = int(top)
            hits += int(people[top] == people[i])
    return hits / len(queries), tops


def open_set(paths: np.ndarray, plain: np.ndarray, query: np.ndarray, members: np.ndarray, params) -> dict:
    """FPIR/FNIR at the model's threshold on the seed-0 open-set split of the photos `members`."""
    from engine.tools.evaluate import array_search, open_set_answers, open_set_rates, open_set_split

    index_of = {str(paths[i]): i for i in members}
    images_of: dict[str, list[str]] = {}
    for i in members:
        images_of.setdefault(person_name(Path(paths[i])), []).append(str(paths[i]))
    enrolled, mated, non_mated = open_set_split(images_of, seed=0)
    rows = [index_of[image] for image in enrolled if not np.isnan(plain[index_of[image], 0])]
    search = array_search(plain[rows], [person_name(Path(paths[i])) for i in rows])
    vectors = {
        image: query[index_of[image]] for image, _ in [*mated, *non_mated] if not np.isnan(query[index_of[image], 0])
    }
    rates = open_set_rates(
        mated,
        open_set_answers(search, mated, vectors, params),
        open_set_answers(search, non_mated, vectors, params),
        params.threshold,
    )
    return {"fpir": rates["fpir"], "fnir": rates["fnir"], "mated": len(mated), "non_mated": len(non_mated)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return w * h / union if union else 0.0


def report(runtimes: list[str], kinds: list[str]) -> dict:
    from engine.core import Engine

    params = Engine(EngineSettings(engine_runtime="keras")).backend("facenet").identity_params()
    results: dict = {"identity_threshold": params.threshold, "kinds": {}}
    for kind in kinds:
        data = {runtime: np.load(cache_path(runtime, kind)) for runtime in runtimes}
        paths = data[runtimes[0]]["paths"]
        assert all((data[r]["paths"] == paths).all() for r in runtimes)
        folds = np.array([fold_of(str(p)) for p in paths])
        by_kind: dict = {}
        for fold in FOLDS:
            members = np.flatnonzero(folds == fold)
            entry: dict = {"photos": int(len(members))}
            tops = {}
            for runtime in runtimes:
                d = data[runtime]
                score, tops[runtime] = rank1(paths, d["plain"], d["query"], members)
                entry[runtime] = {
                    "rank1": score,
                    "queries": len(tops[runtime]),
                    "photos_without_face": int(np.isnan(d["plain"][members, 0]).sum()),
                    **open_set(paths, d["plain"], d["query"], members, params),
                }
            if len(runtimes) == 2:
                a, b = (tops[r] for r in runtimes)
                entry["same_top1"] = sum(a[i] == b[i] for i in a) / len(a)
            by_kind[fold] = entry
        if len(runtimes) == 2:
            boxes = [data[r]["boxes"] for r in runtimes]
            both = (boxes[0][:, 0] >= 0) & (boxes[1][:, 0] >= 0)
            overlaps = np.array([iou(boxes[0][i], boxes[1][i]) for i in np.flatnonzero(both)])
            within = np.abs(boxes[0][both] - boxes[1][both]).max(axis=1) <= 1
            cosines = np.sum(data[runtimes[0]]["plain"][both] * data[runtimes[1]]["plain"][both], axis=1)  # gallery
            by_kind["main_faces"] = {"found_" + r: int((data[r]["boxes"][:, 0] >= 0).sum()) for r in runtimes} | {
                "same_box": float((boxes[0][both] == boxes[1][both]).all(axis=1).mean()),
                "same_box_within_1px": float(within.mean()),
                "vector_cosine_at_least_0.99999": float((cosines >= 0.99999).mean()),
                "vector_cosine_min": float(cosines.min()),
                "iou_min": float(overlaps.min()),
                "iou_below_0.5": int((overlaps < 0.5).sum()),
            }
        results["kinds"][kind] = by_kind
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtimes", default="onnx,keras")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    args = parser.parse_args()
    if not (LFW / "deepfunneled").is_dir():
        print(f"{LFW} not found: the LFW benchmarks need ../shared")
        return 0
    runtimes = [r for r in args.runtimes.split(",") if r]
    kinds = [k for k in args.kinds.split(",") if k]
    for kind in kinds:
        for runtime in runtimes:
            if not cache_path(runtime, kind).is_file():
                # each runtime in its own process: the onnx one must not share a process with TensorFlow
                subprocess.run(
                    [sys.executable, __file__, "--embed-only", runtime, kind], check=True, cwd=REPO, env=os.environ
                )
    results = report(runtimes, kinds)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--embed-only":
        embed_kind(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
