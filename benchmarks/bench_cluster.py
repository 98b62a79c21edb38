"""People clustering: quality on LFW development people, and cost at scale.

Quality (`--lfw`, the default): each LFW photo's labelled face (the most prominent face, as the people
layout indexes it: FACE_CONFIDENCE 0.9, the padded retry and the 0.85 fallback; FaceNet vectors as the
index stores them) is written to a real local store, with no name; the registry then groups the faces as
index runs would (`--runs` syncs, the photos arriving in that many batches) and the persons are compared
with the LFW labels. A face left without a person counts as a person of its own (so do people with one
photo: each should stay alone). Folds: names A-F and G-L. The threshold and min-faces are chosen on one
fold (the best BCubed F1 among settings with BCubed precision >= 0.95) and reported on the other, both
ways, for both photo kinds. Beside them: dlib's Chinese whispers (threshold 0.5, the usual recipe) over
face_recognition's 128-d encodings of the same faces (same photos, MTCNN's boxes), when face_recognition
is installed (it is not a project dependency: pip install dlib-bin face_recognition_models, then
pip install --no-deps face_recognition).

Cost (`--scale N`): N synthetic face-like vectors (benchmarks/bench_store.py --data facelike, 10 faces a
person) in a local store (HNSW from 50,000 on); one sync clustering all of them (the first index run of
a gallery), then 1,000 new faces and their sync (a later run), then a full re-cluster; wall time and
the process's peak RSS.

Needs ../shared/data/lfw and the embeddings cache (benchmarks/lfw_cache.py fills it; the first run does).
Usage: python benchmarks/bench_cluster.py [--kinds deepfunneled,original_150px] [--runs 4]
       python benchmarks/bench_cluster.py --scale 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
for _path in (str(REPO), str(REPO / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

from engine.people import ClusterParams, PeopleRegistry  # noqa: E402
from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader  # noqa: E402
from engine.stores.local import LocalStore  # noqa: E402

FOLDS = {"A-F": "ABCDEF", "G-L": "GHIJKL"}
THRESHOLDS = [round(0.50 + 0.025 * i, 3) for i in range(15)]  # 0.50 .. 0.85
MIN_FACES = [2, 3]
NEIGHBOURS = 10  # CLUSTER_NEIGHBOURS' default
DLIB_THRESHOLD = 0.5


# ---- metrics -------------------------------------------------------------------------------


def bcubed(truth: list, predicted: list) -> tuple[float, float, float]:
    """BCubed precision, recall, F1: per item, the share of its predicted cluster with its label, and of its
    label in its predicted cluster, averaged over items."""
    pairs = Counter(zip(truth, predicted))
    by_label, by_cluster = Counter(truth), Counter(predicted)
    precision = sum(n * n / by_cluster[c] for (_, c), n in pairs.items()) / len(truth)
    recall = sum(n * n / by_label[t] for (t, _), n in pairs.items()) / len(truth)
    return precision, recall, _f1(precision, recall)


def pairwise(truth: list, predicted: list) -> tuple[float, float, float]:
    """Precision and recall over pairs of items put together (predicted) or belonging together (truth)."""
    both = sum(n * (n - 1) / 2 for n in Counter(zip(truth, predicted)).values())
    predicted_pairs = sum(n * (n - 1) / 2 for n in Counter(predicted).values())
    true_pairs = sum(n * (n - 1) / 2 for n in Counter(truth).values())
    precision = both / predicted_pairs if predicted_pairs else 1.0
    recall = both / true_pairs if true_pairs else 1.0
    return precision, recall, _f1(precision, recall)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def scores(truth: list, predicted: list) -> dict:
    b, p = bcubed(truth, predicted), pairwise(truth, predicted)
    return {
        "bcubed_precision": round(b[0], 4), "bcubed_recall": round(b[1], 4), "bcubed_f1": round(b[2], 4),
        "pairwise_precision": round(p[0], 4), "pairwise_recall": round(p[1], 4), "pairwise_f1": round(p[2], 4),
        "faces": len(truth), "people": len(set(truth)), "persons": len(set(predicted)),
    }  # fmt: skip


# ---- clustering through the real registry and store ------------------------------------------


def make_store(root: Path, dim: int, ann_threshold: int = 50_000) -> LocalStore:
    store = LocalStore(root, ann_threshold=ann_threshold)
    store.initialise(StoreHeader("facenet", dim, "bench", "/bench-gallery"))
    return store


def add_faces(store: LocalStore, rows: list[FaceRow], vectors: np.ndarray, batch: int = 100_000) -> None:
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        records = [FileRecord(r.path, 1, 1, f"sha-{r.path}", 1) for r in part]
        store.apply(Changes(rows=part, vectors=vectors[start : start + batch], records=records))


def cluster_lfw(rows: list[FaceRow], vectors: np.ndarray, params: ClusterParams, runs: int, work: Path) -> list:
    """Each face's person id after `runs` index runs (photos arriving in that order, in equal batches); a face
    without a person gets a label of its own."""
    store = make_store(work / "store", vectors.shape[1])
    registry = PeopleRegistry(work / "people.sqlite", names="clusters", params=params)
    try:
        bounds = np.linspace(0, len(rows), runs + 1).astype(int)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            add_faces(store, rows[start:stop], vectors[start:stop])
            registry.sync(store)
        found = registry.person_of(rows)
    finally:
        registry.close()
        store.close()
    return [ref.id if ref is not None else f"alone-{i}" for i, ref in enumerate(found)]


def lfw_faces(kind: str):
    """(rows, vectors, people) of every photo whose labelled face is found, and the number of photos without one.

    The face is the most prominent at FACE_CONFIDENCE 0.9, else the most confident from 0.85 on (the engine's
    fallback); the few photos only the engine's padded last pass finds a face in are left out (their box is
    not cached), for every method alike.
    """
    from lfw_cache import load_embeddings

    rows, keep, people, detections = lfw_rows(kind)
    plain, _ = load_embeddings(detections, "rotate-0.1", None, confidence=0.9, fallback=0.85)
    vectors = plain[keep].astype(np.float32)
    assert not np.isnan(vectors).any(), "a labelled face without an embedding"
    return rows, vectors, people, len(detections.images) - len(keep)


def lfw_rows(kind: str):
    """(rows, their photo numbers, people, detections): the photos with a labelled face, from the detections cache."""
    from lfw_cache import load_detections

    detections = load_detections(kind)
    rows, keep, people = [], [], []
    for i, path in enumerate(detections.images):
        face = detections.main_face(i, 0.9, 0.85)
        if face is not None:
            rows.append(FaceRow(path, "", tuple(int(v) for v in face.box)))
            keep.append(i)
            people.append(detections.people[i])
    return rows, keep, people, detections


def dlib_encodings(kind: str, rows: list[FaceRow], tag: str, compute: bool = True) -> np.ndarray | None:
    """face_recognition's encodings of the same faces (MTCNN's boxes as the known face locations), cached per
    photo kind and first letters of the names (`tag`); None when not cached and `compute` is off (0.15 s of CPU a face)."""
    from lfw_cache import LFW, cache_dir

    path = cache_dir() / f"lfw-{kind}-{tag}-dlib-encodings.npz"
    if path.is_file():
        cached = np.load(path, allow_pickle=False)
        if list(cached["paths"]) == [r.path for r in rows]:
            return cached["encodings"]
    if not compute:
        return None
    import face_recognition

    out = np.zeros((len(rows), 128), np.float32)
    started = time.perf_counter()
    for n, row in enumerate(rows):
        image = face_recognition.load_image_file(LFW / kind / row.path)
        x, y, w, h = row.box
        location = (
            max(0, y),
            min(image.shape[1], x + w),
            min(image.shape[0], y + h),
            max(0, x),
        )  # top, right, bottom, left
        out[n] = face_recognition.face_encodings(image, known_face_locations=[location])[0]
        if n % 500 == 0:
            print(f"  dlib {kind} {tag}: {n}/{len(rows)} in {time.perf_counter() - started:.0f} s", flush=True)
    np.savez(path, paths=np.array([r.path for r in rows]), encodings=out)
    return out


def chinese_whispers(encodings: np.ndarray) -> list:
    import dlib

    return list(
        dlib.chinese_whispers_clustering([dlib.vector(e.astype(float).tolist()) for e in encodings], DLIB_THRESHOLD)
    )


def run_lfw(kinds: list[str], runs: int, dlib_compute: bool, dlib_letters: str) -> None:
    try:
        import face_recognition  # noqa: F401

        have_dlib = True
    except ImportError:
        have_dlib = False
        print("face_recognition is not installed: no Chinese whispers baseline")
    for kind in kinds:
        rows, vectors, people, faceless = lfw_faces(kind)
        print(
            f"\n{kind}: {len(rows)} photos with a face ({faceless} without one, left out for every method)", flush=True
        )
        folds = {name: [i for i, p in enumerate(people) if p[0].upper() in letters] for name, letters in FOLDS.items()}
        for tune, report in (("A-F", "G-L"), ("G-L", "A-F")):
            best = None
            for params, result in grid_search(rows, vectors, people, folds[tune]):
                print(f"    {tune} threshold {params.threshold:.3f} min_faces {params.min_faces}: BCubed P {result['bcubed_precision']:.4f} "
                      f"R {result['bcubed_recall']:.4f} F1 {result['bcubed_f1']:.4f}", flush=True)  # fmt: skip
                if result["bcubed_precision"] >= 0.95 and (best is None or result["bcubed_f1"] > best[1]["bcubed_f1"]):
                    best = (params, result)
            if best is None:
                print(f"  tuned on {tune}: no setting reaches BCubed precision 0.95")
                continue
            params, tuned = best
            print(f"  tuned on {tune}: threshold {params.threshold}, min_faces {params.min_faces} "
                  f"(BCubed P {tuned['bcubed_precision']}, F1 {tuned['bcubed_f1']} there)", flush=True)  # fmt: skip
            for n_runs in sorted({1, runs}):
                result = evaluate(rows, vectors, people, folds[report], params, n_runs)
                print(f"  reported on {report}, {n_runs} index run(s): {json.dumps(result)}", flush=True)
            letters = "".join(c for c in FOLDS[report] if c in dlib_letters)
            if not have_dlib or not letters:
                continue
            idx = [i for i in folds[report] if people[i][0].upper() in letters]
            encodings = dlib_encodings(kind, [rows[i] for i in idx], letters, compute=dlib_compute)
            if encodings is None:
                print(f"  Chinese whispers on people {letters}: no dlib encodings cached (--dlib computes them)")
                continue
            started = time.perf_counter()
            labels = chinese_whispers(encodings)
            result = scores([people[i] for i in idx], labels)
            result["seconds"] = round(time.perf_counter() - started, 2)
            print(f"  side by side on people {letters} ({len(idx)} photos):", flush=True)
            print(f"    Chinese whispers (dlib, 0.5): {json.dumps(result)}", flush=True)
            result = evaluate(rows, vectors, people, idx, params, 1)
            print(f"    ours ({params.threshold}, {params.min_faces}), one index run: {json.dumps(result)}", flush=True)


def grid_search(rows, vectors, people, index: list[int]):
    """(params, scores) for every threshold and min-faces on these photos, as one index run would group them:
    the store is searched once (the neighbours at the lowest threshold), then the grouping rule itself
    (engine.people.cluster.assign, which the registry runs) is applied for each setting."""
    from engine.people.cluster import NO_PERSON, Neighbours, assign

    keys = [(rows[i].path, rows[i].box) for i in index]
    position = {k: n for n, k in enumerate(keys)}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as work:
        store = make_store(Path(work) / "store", vectors.shape[1])
        add_faces(store, [rows[i] for i in index], vectors[index])
        hits = store.search(vectors[index], NEIGHBOURS + 1)
        store.close()
    near = [
        [
            (position[(h.row.path, tuple(h.row.box))], h.similarity)
            for h in found
            if (h.row.path, tuple(h.row.box)) != keys[n]
        ][:NEIGHBOURS]
        for n, found in enumerate(hits)
    ]
    truth = [people[i] for i in index]
    for min_faces in MIN_FACES:
        for threshold in THRESHOLDS:
            params = ClusterParams(threshold, min_faces, NEIGHBOURS)
            close = [[j for j, s in found if s >= threshold] for found in near]
            neighbours = Neighbours({n: np.array(c, np.int64) for n, c in enumerate(close)}, {})
            person = np.full(len(keys), NO_PERSON, np.int64)
            assign(list(range(len(keys))), neighbours, person, params, 1, keys)
            labels = [int(p) if p >= 0 else f"alone-{n}" for n, p in enumerate(person)]
            yield params, scores(truth, labels)


def evaluate(rows, vectors, people, index: list[int], params: ClusterParams, runs: int) -> dict:
    order = list(index)
    np.random.default_rng(0).shuffle(order)  # photos arrive in no particular order
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as work:
        started = time.perf_counter()
        predicted = cluster_lfw([rows[i] for i in order], vectors[order], params, runs, Path(work))
        seconds = time.perf_counter() - started
    result = scores([people[i] for i in order], predicted)
    result["seconds"] = round(seconds, 2)
    return result


# ---- cost at scale ---------------------------------------------------------------------------


def run_scale(n: int, threshold: float, min_faces: int) -> None:
    from bench_store import synthetic

    rng = np.random.default_rng(0)
    data, _ = synthetic(n + 1000, 128, rng, data_kind="facelike")
    rows = [FaceRow(f"p{i // 10}/{i}.jpg", "", (0, 0, 100, 100)) for i in range(n + 1000)]
    params = ClusterParams(threshold, min_faces, NEIGHBOURS)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=REPO / "data") as work:
        work = Path(work)
        started = time.perf_counter()
        store = make_store(work / "store", 128)
        add_faces(store, rows[:n], data[:n])
        build_s = time.perf_counter() - started
        registry = PeopleRegistry(work / "people.sqlite", names="clusters", params=params)
        started = time.perf_counter()
        first = registry.sync(store)
        first_s = time.perf_counter() - started
        add_faces(store, rows[n:], data[n:])
        started = time.perf_counter()
        later = registry.sync(store)
        later_s = time.perf_counter() - started
        started = time.perf_counter()
        again = registry.recluster(store)
        recluster_s = time.perf_counter() - started
        truth = [i // 10 for i in range(n + 1000)]
        predicted = [ref.id if ref is not None else f"alone-{i}" for i, ref in enumerate(registry.person_of(rows))]
        quality = scores(truth, predicted)
        registry.close()
        store.close()
    print(json.dumps({
        "faces": n, "threshold": threshold, "min_faces": min_faces, "store_build_s": round(build_s, 1),
        "first_sync_s": round(first_s, 1), "first_sync_faces_per_s": round(n / first_s),
        "sync_1000_new_s": round(later_s, 2), "recluster_s": round(recluster_s, 1),
        "persons": again.persons, "waiting": again.waiting, "new_persons_first_sync": first.new_persons,
        "assigned_by_later_sync": later.assigned,
        "peak_rss_mb": round(_peak_rss_mb()), "synthetic_bcubed": {k: quality[k] for k in ("bcubed_precision", "bcubed_recall", "bcubed_f1")},
    }), flush=True)  # fmt: skip


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="deepfunneled,original_150px")
    parser.add_argument(
        "--runs", type=int, default=4, help="index runs the photos arrive in (reported besides one run)"
    )
    parser.add_argument(
        "--dlib", action="store_true", help="compute face_recognition's encodings when not cached (slow)"
    )
    parser.add_argument(
        "--dlib-letters",
        default="ABCDEFGHIJKL",
        help="Chinese whispers side by side on the people whose names start with these letters (of the fold reported on)",
    )
    parser.add_argument(
        "--dlib-only", metavar="KIND:LETTERS", help="only cache face_recognition's encodings of these people"
    )
    parser.add_argument("--scale", type=int, help="cost on this many synthetic face-like vectors instead of LFW")
    parser.add_argument(
        "--threshold", type=float, help="with --scale: the clustering threshold (default: the settings')"
    )
    parser.add_argument("--min-faces", type=int, help="with --scale: min faces (default: the settings')")
    args = parser.parse_args()
    if args.dlib_only:
        kind, letters = args.dlib_only.split(":")
        rows, _, people, _ = lfw_rows(kind)
        dlib_encodings(kind, [r for r, p in zip(rows, people) if p[0].upper() in letters.upper()], letters.upper())
        return 0
    if args.scale:
        from engine.settings import EngineSettings

        s = EngineSettings()
        run_scale(args.scale, args.threshold or s.cluster_threshold, args.min_faces or s.cluster_min_faces)
        return 0
    from lfw_cache import lfw_root

    if lfw_root() is None:
        print("../shared/data/lfw not found: the LFW clustering benchmark needs it")
        return 0
    run_lfw([k for k in args.kinds.split(",") if k], args.runs, args.dlib, args.dlib_letters.upper())
    return 0


if __name__ == "__main__":
    sys.exit(main())
