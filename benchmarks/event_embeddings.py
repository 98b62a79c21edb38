"""Where the event benchmark's recall is lost, and three ways of scoring the same faces otherwise.

On the cached event gallery of one fold (run benchmarks/bench_event.py --fold F first: its store, truth and
selfie vectors), in numpy, with engine/search/appearances.py's decision replayed as benchmarks/event_grid.py does
(exact search, the cohort, the acceptance, one round of average query expansion, each photo by its best face;
the stored vectors give bench_event.py's figures to the last digit):

  refused     the guests refused at the acceptance level that leaves 95% of the strangers' selfies
              unanswered, by how many photos of theirs the gallery holds
  gallery-cohort
              a symmetric cohort: each gallery face's own cohort level (its similarities to the other gallery
              faces at ranks 64-128) also taken off its score, x weight
  dlib        score fusion with dlib's ResNet (face_recognition's 128-d encodings of the stored boxes and the
              selfies): guests refused at strangers clean 0.95 / 0.97 / 0.99, FaceNet alone, dlib alone and
              fused (cosines averaged with a weight, a concatenated unit vector), when face_recognition is
              installed (pip install dlib-bin face_recognition_models, then pip install --no-deps
              face_recognition)
  crops       the gallery faces re-embedded from their stored boxes and landmarks: one template-aligned crop,
              and the mean of five (the landmarks shifted by 5% of the eye distance left, right, up, down);
              the selfies as search embeds them

Each prints the highest recall with precision and strangers clean >= 0.95, and with the margin (>= 0.96 and
>= 0.97) that the README's candidate used, over a grid of decision settings; `--settings` prints the figures
at given settings instead (to report, on the other fold, settings chosen on one). Tune on A-F only.
Encodings are cached under DATA_DIR/bench/event/<fold>/ (dlib.npz, crops.npz).
Usage: python benchmarks/event_embeddings.py [--fold A-F] [--checks refused,gallery-cohort,dlib,crops]
       [--settings 0.46,0.5,0.55,0.5]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_event import LFW_FACE, plan  # noqa: E402
from engine.core import Engine  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402
from event_grid import COHORT_FROM, COHORT_SIZE, judge, load  # noqa: E402

COHORT_WEIGHT = 0.5
EXPAND = 5
# (threshold, accept, expand_threshold, expanded_threshold) of the engine's scale; a gallery cohort shifts them
GRID = list(
    itertools.product(
        (0.40, 0.42, 0.44, 0.46),
        (0.44, 0.46, 0.48, 0.50, 0.52, 0.54),
        (0.50, 0.55, 0.60),
        (0.46, 0.48, 0.50),
    )
)


@dataclass
class Fold:
    name: str
    work: Path
    data: dict  # event_grid.load's: keys, paths, who (the labelled person of each face), photos_of
    rows: list  # the store's face rows (path, box, landmarks), in the vectors' order
    gallery: np.ndarray  # stored vectors
    queries: np.ndarray  # selfie vectors as search embeds them (NaN rows: no face)

    @property
    def valid(self) -> np.ndarray:
        return ~np.isnan(self.queries[:, 0])


def open_fold(fold: str) -> Fold:
    base = EngineSettings()
    work = base.data_dir / "bench" / "event" / f"{fold}-g400-s200-seed0"
    settings = base.model_copy(update={"data_dir": work / "data", "gallery_layout": "photos"})
    store = Engine(settings).searcher("facenet").store
    rows, chunks = [], []
    for part_rows, part_vectors in store.face_vectors():
        rows += part_rows
        chunks.append(part_vectors)
    return Fold(fold, work, load(fold), rows, np.concatenate(chunks), np.load(work / "queries.npz")["vectors"])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def figures(
    fold: Fold, gallery: np.ndarray, queries: np.ndarray, setting: tuple, gallery_level: np.ndarray | None = None
) -> tuple[float, float, float]:
    """(precision, recall, strangers clean) of the decision at `setting` over these vectors, as event_grid's."""
    t, a, et, xt = setting
    d, valid = fold.data, ~np.isnan(queries[:, 0])
    queries = np.nan_to_num(queries)
    level_g = 0.0 if gallery_level is None else gallery_level
    similarity = queries @ gallery.T
    precisions, recalls, clean = [], [], []
    for i, (kind, name) in enumerate(d["keys"]):
        if not valid[i]:
            (recalls.append(0.0) if kind == "guest" else clean.append(1.0))
            continue
        ranked = -np.sort(-similarity[i])
        score = similarity[i] - COHORT_WEIGHT * ranked[COHORT_FROM : COHORT_FROM + COHORT_SIZE].mean() - level_g
        chosen = np.empty(0, int)
        if score.max() >= max(a, t):
            confident = [j for j in np.argsort(-score)[:EXPAND] if score[j] >= et]
            if confident:
                expanded = unit((queries[i] + gallery[confident].sum(0))[None])[0]
                again = gallery @ expanded
                level = COHORT_WEIGHT * (-np.sort(-again))[COHORT_FROM : COHORT_FROM + COHORT_SIZE].mean()
                score = again - level - level_g
                chosen = np.flatnonzero(score >= xt)
            else:
                chosen = np.flatnonzero(score >= t)
            chosen = chosen[np.argsort(-score[chosen], kind="stable")]
        judge(d, kind, name, chosen, precisions, recalls, clean)
    return float(np.mean(precisions)), float(np.mean(recalls)), float(np.mean(clean))


def report(
    fold: Fold, what: str, gallery: np.ndarray, queries: np.ndarray, settings: list[tuple] | None, **kwargs
) -> None:
    if settings:
        for setting in settings:
            p, r, c = figures(fold, gallery, queries, setting, **kwargs)
            print(f"  {what} at {setting}: precision {p:.4f}  recall {r:.4f}  strangers clean {c:.4f}", flush=True)
        return
    results = [(figures(fold, gallery, queries, setting, **kwargs), setting) for setting in GRID]
    for floor_p, floor_c in ((0.95, 0.95), (0.96, 0.97)):
        passing = [r for r in results if r[0][0] >= floor_p and r[0][2] >= floor_c]
        if not passing:
            print(f"  {what}: no setting with precision >= {floor_p} and strangers clean >= {floor_c}")
            continue
        (p, r, c), setting = max(passing, key=lambda x: x[0][1])
        print(
            f"  {what}: highest recall with precision >= {floor_p}, strangers clean >= {floor_c}: "
            f"{r:.4f} (precision {p:.4f}, strangers clean {c:.4f}) at {setting}",
            flush=True,
        )


def best_scores(fold: Fold, gallery: np.ndarray, queries: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Each guest's best cohort-normalised score over their own faces, and each stranger's best over all faces."""
    d, valid = fold.data, ~np.isnan(queries[:, 0])
    similarity = np.nan_to_num(queries) @ gallery.T
    ranked = -np.sort(-similarity, axis=1)
    level = COHORT_WEIGHT * ranked[:, COHORT_FROM : COHORT_FROM + COHORT_SIZE].mean(1)
    faces_of: dict[str, list[int]] = {}
    for j, who in enumerate(d["who"]):
        if who is not None:
            faces_of.setdefault(who, []).append(j)
    guests, strangers = {}, []
    for i, (kind, name) in enumerate(d["keys"]):
        score = similarity[i] - level[i]
        if kind == "stranger":
            strangers.append(score.max() if valid[i] else -np.inf)
        else:
            mine = faces_of.get(name, [])
            guests[name] = float(score[mine].max()) if valid[i] and mine else -np.inf
    return guests, np.array(strangers)


def refused(fold: Fold) -> None:
    guests, strangers = best_scores(fold, fold.gallery, fold.queries)
    level = float(np.quantile(strangers, 0.95))
    out = [name for name, score in guests.items() if score < level]
    photos = Counter(len(fold.data["photos_of"].get(name, ())) for name in out)
    everyone = Counter(len(fold.data["photos_of"].get(name, ())) for name in guests)
    print(
        f"refused: at the acceptance level {level:.3f} (95% of strangers unanswered) {len(out)} of {len(guests)} "
        f"guests have no face of theirs at or above it; by their photos in the gallery: "
        f"{dict(sorted(photos.items()))} (all guests: {dict(sorted(everyone.items()))})"
    )


def gallery_cohort(fold: Fold, settings: list[tuple] | None) -> None:
    g = fold.gallery
    levels = -np.sort(-(g @ g.T), axis=1)[:, 1 + COHORT_FROM : 1 + COHORT_FROM + COHORT_SIZE].mean(1)
    print(f"gallery-cohort: gallery faces' cohort level mean {levels.mean():.3f}, sd {levels.std():.3f}")
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        # centred on the mean level, so that the grid's settings keep their meaning
        report(fold, f"weight {weight}", g, fold.queries, settings, gallery_level=weight * (levels - levels.mean()))


def dlib_encodings(fold: Fold) -> tuple[np.ndarray, np.ndarray]:
    cache = fold.work / "dlib.npz"
    if cache.is_file():
        data = np.load(cache)
        return data["gallery"], data["queries"]
    import face_recognition
    from PIL import Image

    started = time.perf_counter()
    gallery = np.zeros((len(fold.rows), 128), np.float32)
    image, current = None, None
    for j, row in enumerate(fold.rows):
        if row.path != current:
            current = row.path
            image = np.asarray(Image.open(fold.work / "gallery" / row.path).convert("RGB"))
        x, y, w, h = row.box
        gallery[j] = face_recognition.face_encodings(image, [(y, x + w, y + h, x)], model="small")[0]
    layout = plan(fold.name, 400, 200, 0)
    selfies = [*layout["guests"].values(), *layout["strangers"].values()]
    x, y, w, h = LFW_FACE
    queries = np.zeros((len(selfies), 128), np.float32)
    for i, path in enumerate(selfies):
        image = np.asarray(Image.open(path).convert("RGB"))
        queries[i] = face_recognition.face_encodings(image, [(y, x + w, y + h, x)], model="small")[0]
    print(f"dlib: {len(gallery)} faces and {len(queries)} selfies encoded in {time.perf_counter() - started:.0f} s")
    np.savez(cache, gallery=gallery, queries=queries)
    return gallery, queries


def dlib_fusion(fold: Fold) -> None:
    try:
        import face_recognition  # noqa: F401
    except ImportError:
        print("dlib: face_recognition is not installed (see the docstring); skipped")
        return
    dg, dq = (unit(x) for x in dlib_encodings(fold))
    queries = np.where(fold.valid[:, None], np.nan_to_num(fold.queries), np.nan)
    for weight in (1.0, 0.7, 0.5, 0.3, 0.0):  # FaceNet's share of the fused cosine
        g = np.hstack([np.sqrt(weight) * fold.gallery, np.sqrt(1 - weight) * dg])
        q = np.hstack([np.sqrt(weight) * queries, np.sqrt(1 - weight) * dq])
        guests, strangers = best_scores(fold, g, q)
        scores = np.array(list(guests.values()))
        out = {clean: int((scores < np.quantile(strangers, clean)).sum()) for clean in (0.95, 0.97, 0.99)}
        print(f"dlib: FaceNet weight {weight}: guests refused at strangers clean 0.95 / 0.97 / 0.99: {out}")


def crops(fold: Fold, settings: list[tuple] | None) -> None:
    cache = fold.work / "crops.npz"
    if cache.is_file():
        views = np.load(cache)["views"]
    else:
        from PIL import Image

        from engine.models.align import face_crop
        from engine.types import DetectedFace

        engine = Engine(EngineSettings())
        engine.load_networks("facenet")
        network = engine.backend("facenet").network
        shifts = np.array([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)], np.float64)
        started = time.perf_counter()
        views = np.zeros((len(shifts), len(fold.rows), 128), np.float32)
        image, current = None, None
        for j, row in enumerate(fold.rows):
            if row.path != current:
                current = row.path
                image = np.asarray(Image.open(fold.work / "gallery" / row.path).convert("RGB"))
            landmarks = np.asarray(row.landmarks, np.float64)
            eyes = np.linalg.norm(landmarks[1] - landmarks[0])
            batch = [
                face_crop(
                    image,
                    DetectedFace(row.box, row.confidence or 1.0, landmarks + shift * 0.05 * eyes),
                    size=160,
                    margin=0.1,
                    alignment="template",
                )
                for shift in shifts
            ]
            views[:, j] = network.embed(np.stack(batch), flip=False)
        print(f"crops: {len(fold.rows)} faces x {len(shifts)} crops in {time.perf_counter() - started:.0f} s")
        np.savez(cache, views=views)
    report(fold, "stored (rotate alignment, one crop)", fold.gallery, fold.queries, settings)
    report(fold, "template alignment, one crop", views[0], fold.queries, settings)
    report(fold, "template alignment, mean of 5 shifted crops", unit(views.sum(0)), fold.queries, settings)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fold", default="A-F")
    parser.add_argument("--checks", default="refused,gallery-cohort,dlib,crops")
    parser.add_argument(
        "--settings",
        nargs="*",
        default=None,
        help="threshold,accept,expand_threshold,expanded_threshold ... (default: the grid, best under floors)",
    )
    args = parser.parse_args()
    settings = [tuple(float(v) for v in s.split(",")) for s in args.settings] if args.settings else None
    fold = open_fold(args.fold)
    print(f"fold {args.fold}: {len(fold.rows)} faces, {len(fold.queries)} selfies")
    checks = args.checks.split(",")
    if "refused" in checks:
        refused(fold)
    if "gallery-cohort" in checks:
        gallery_cohort(fold, settings)
    if "dlib" in checks:
        dlib_fusion(fold)
    if "crops" in checks:
        crops(fold, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
