"""Identification by retrieval (rank-1, hit@5, mAP@10) and LFW verification accuracy.

Protocol: every image of a person with at least two images is a query against all
other images of the gallery; an image where no face was found counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.core import Engine
from engine.errors import BadInputError
from engine.images import list_gallery_images, person_name
from engine.search.identity import IdentityParams, identify
from engine.search.searcher import Searcher
from engine.stores.base import Hit

Answers = list[tuple[str | None, float]]  # per probe: the person named before thresholding (or None), the score

TOP = 10


def eval_index_dir(engine: Engine, gallery: Path, model: str, limit: int | None) -> Path:
    """Evaluation indexes live apart from the bot's (DATA_DIR/eval/<gallery>-<hash>[-N]/<model>)."""
    tag = hashlib.sha1(str(gallery.resolve()).encode()).hexdigest()[:8]
    suffix = f"-first{limit}" if limit else ""
    return engine.settings.data_dir / "eval" / f"{gallery.name}-{tag}{suffix}" / model


def retrieval_metrics(
    search: Callable[[np.ndarray, int], list[list[Hit]]],
    rows_per_person: dict[str, int],
    rows_per_image: dict[str, int],
    queries: list[tuple[str, str]],
    query_features: dict[str, np.ndarray],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-query top-10 lists and the metrics, searching through the store (`search(vectors, k)`).

    `queries` are (image, person); a query never matches rows of its own image (it asks for
    more and drops them). `query_features` (image -> vector) are the query embeddings as
    search computes them; a query with no vector (no face found) is a miss.
    """
    answered = [image for image, _ in queries if image in query_features]
    tops: dict[str, list[Hit]] = {}
    extra = max(rows_per_image.values(), default=0)
    for start in range(0, len(answered), 512):
        block = answered[start : start + 512]
        hits = search(np.stack([query_features[image] for image in block]), TOP + extra)
        for image, image_hits in zip(block, hits):
            tops[image] = [hit for hit in image_hits if hit.row.path != image][:TOP]

    rank1 = hit5 = ap_sum = 0.0
    precision_at = np.zeros(TOP)
    per_query: list[dict[str, Any]] = []
    for image, person in queries:
        if image not in tops:
            per_query.append({"image": image, "person": person, "top": []})
            continue
        relevant = np.array([hit.row.name == person for hit in tops[image]], dtype=bool)
        total_relevant = rows_per_person.get(person, 0) - rows_per_image.get(image, 0)
        rank1 += float(relevant[:1].any())
        hit5 += float(relevant[:5].any())
        if total_relevant > 0 and len(relevant):
            precisions = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
            ap_sum += float((precisions * relevant).sum() / min(total_relevant, TOP))
        cumulative = np.cumsum(relevant) if len(relevant) else np.zeros(1)
        padded = np.concatenate([cumulative, np.full(TOP - len(cumulative), cumulative[-1])])[:TOP]
        precision_at += padded / np.arange(1, TOP + 1)
        per_query.append(
            {"image": image, "person": person, "top": [(hit.row.path, hit.row.name) for hit in tops[image]]}
        )
    n = len(queries)
    metrics = {
        "queries": n,
        "queries_without_face": n - len(answered),
        "rank1": rank1 / n if n else 0.0,
        "hit5": hit5 / n if n else 0.0,
        "map10": ap_sum / n if n else 0.0,
        "precision_at_k": [float(p) for p in precision_at / max(n, 1)],
    }
    return metrics, per_query


def query_vectors(
    searcher: Searcher, read: Callable[[Path], np.ndarray], gallery: Path, images: list[str], batch: int = 16
) -> dict[str, np.ndarray]:
    """Each query image's main-face vector computed as search computes it, in batches."""
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(images), batch):
        names, pixels = [], []
        for name in images[start : start + batch]:
            try:
                pixels.append(read(gallery / name))
                names.append(name)
            except BadInputError:
                continue
        if not pixels:
            continue
        regions, embedded = searcher.query_vectors(pixels, max_faces=1)
        position = 0
        for name, image_regions in zip(names, regions):
            if image_regions:
                vectors[name] = embedded[position]
                position += 1
    return vectors


def verification_accuracy(
    vectors: dict[str, np.ndarray], pairs: list[tuple[str, str, bool]], folds: int = 10
) -> dict[str, float]:
    """Accuracy of same/different decisions by a cosine threshold chosen on the other folds.

    `vectors` are each image's main face as a query embeds it; a pair with a faceless image scores -1.
    """
    scores = np.array([float(vectors[a] @ vectors[b]) if a in vectors and b in vectors else -1.0 for a, b, _ in pairs])
    labels = np.array([same for _, _, same in pairs])
    order = np.random.default_rng(0).permutation(len(pairs))
    fold_of = np.empty(len(pairs), int)
    fold_of[order] = np.arange(len(pairs)) % folds
    candidates = np.unique(scores)
    accuracies, thresholds = [], []
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        train_acc = [((scores[train] >= t) == labels[train]).mean() for t in candidates]
        threshold = float(candidates[int(np.argmax(train_acc))])
        thresholds.append(threshold)
        accuracies.append(float(((scores[test] >= threshold) == labels[test]).mean()))
    return {
        "pairs": len(pairs),
        "pairs_missing_face": int((scores == -1.0).sum()),
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "threshold_mean": float(np.mean(thresholds)),
    }


def read_pairs(path: Path) -> list[tuple[str, str, bool]]:
    """LFW pairs: `Name i j` (same person) or `Name1 i Name2 j` (different), as relative image paths."""
    pairs = []
    for line in path.read_text().splitlines():
        parts = line.strip().split("\t")
        if len(parts) == 3:
            name, i, j = parts
            pairs.append((f"{name}/{name}_{int(i):04d}.jpg", f"{name}/{name}_{int(j):04d}.jpg", True))
        elif len(parts) == 4:
            a, i, b, j = parts
            pairs.append((f"{a}/{a}_{int(i):04d}.jpg", f"{b}/{b}_{int(j):04d}.jpg", False))
    if not pairs:
        raise BadInputError(f"{path}: no pairs found (expected LFW's tab-separated pairs format)")
    return pairs


def run_evaluation(
    engine: Engine,
    gallery: Path,
    *,
    model: str,
    pairs_files: list[Path],
    limit: int | None,
    out_dir: Path | None,
    index_dir: Path | None = None,
) -> dict:
    gallery = Path(gallery).resolve()
    paths = list_gallery_images(gallery) if gallery.is_dir() else []
    if limit:
        paths = paths[:limit]
    index_dir = index_dir or eval_index_dir(engine, gallery, model, limit)
    started = time.perf_counter()
    store = engine.open_store(model, index_dir)
    try:
        build = engine.builder(model).build(store, gallery, paths)
        searcher = Searcher(engine.backend(model), store)
        relative = [path.relative_to(gallery).as_posix() for path in paths]
        images_of: dict[str, list[str]] = {}
        for image in relative:
            images_of.setdefault(person_name(Path(image)), []).append(image)
        queries = [(image, person) for person, images in images_of.items() if len(images) >= 2 for image in images]
        query_images = {image for image, _ in queries}
        if pairs_files:
            pairs = [pair for file in pairs_files for pair in read_pairs(file)]
            query_images |= {image for a, b, _ in pairs for image in (a, b) if (gallery / image).is_file()}
        vectors = query_vectors(searcher, engine.read, gallery, sorted(query_images))
        records = store.files()
        rows_per_image = {path: record.faces for path, record in records.items()}
        rows_per_person: dict[str, int] = {}
        for path, record in records.items():
            name = person_name(Path(path))
            rows_per_person[name] = rows_per_person.get(name, 0) + record.faces
        metrics, per_query = retrieval_metrics(store.search, rows_per_person, rows_per_image, queries, vectors)
    finally:
        store.close()

    report = {"model": model, "gallery": str(gallery), "images": len(paths), "people": len(images_of), **metrics}
    report["pipeline"] = engine.pipeline_params(model)
    report["index"] = {k: v for k, v in build.to_dict().items() if k != "skipped_files"}
    if pairs_files:
        report["verification"] = verification_accuracy(vectors, pairs)
    report["seconds"] = round(time.perf_counter() - started, 1)

    out_dir = Path(out_dir or engine.settings.data_dir / "reports")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval-{gallery.name}-{model}" + (f"-first{limit}" if limit else "")
    files = {
        "json": str(out_dir / f"{stem}.json"),
        "plot": str(out_dir / f"{stem}-precision.png"),
        "contact_sheet": str(out_dir / f"{stem}-contact-sheet.png"),
    }
    report["files"] = files
    Path(files["json"]).write_text(json.dumps(report, indent=2))
    from engine.tools.plots import contact_sheet, precision_plot

    precision_plot(metrics["precision_at_k"], f"{model} on {gallery.name}: precision at k", Path(files["plot"]))
    examples = [q for q in per_query if q["top"]][:: max(1, len(per_query) // 6)][:6]
    contact_sheet(
        [
            (gallery / q["image"], q["person"], [(gallery / path, name) for path, name in q["top"][:5]])
            for q in examples
        ],
        Path(files["contact_sheet"]),
    )
    return report


# ---- open-set identification ------------------------------------------------------------


def open_set_split(
    images_of: dict[str, list[str]], seed: int = 0
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """A sparse open-set split: (gallery images, mated probes, non-mated probes), probes as (image, person).

    Half of the people with >= 2 images are enrolled: all their images but one (drawn at random) go into
    the gallery, the one left out is a mated probe. As many people never enrolled (the other half and the
    one-image people) give one image each as non-mated probes.
    """
    rng = np.random.default_rng(seed)
    multi = sorted(person for person, images in images_of.items() if len(images) >= 2)
    enrolled = sorted(rng.permutation(multi)[: len(multi) // 2].tolist())
    gallery: list[str] = []
    mated: list[tuple[str, str]] = []
    for person in enrolled:
        images = sorted(images_of[person])
        probe = images[int(rng.integers(len(images)))]
        mated.append((probe, person))
        gallery.extend(image for image in images if image != probe)
    enrolled_set = set(enrolled)
    strangers = sorted(person for person in images_of if person not in enrolled_set)
    chosen = sorted(rng.permutation(strangers)[: len(mated)].tolist())
    non_mated: list[tuple[str, str]] = []
    for person in chosen:
        images = sorted(images_of[person])
        non_mated.append((images[int(rng.integers(len(images)))], person))
    return gallery, mated, non_mated


def array_search(features: np.ndarray, names: list[str]) -> Callable[[np.ndarray, int], list[list[Hit]]]:
    """Exact search over vectors held in memory (benchmarks on cached embeddings), shaped like a store's search."""
    from engine.stores.base import FaceRow

    rows = [FaceRow(path="", name=name, box=(0, 0, 0, 0)) for name in names]

    def search(queries: np.ndarray, k: int) -> list[list[Hit]]:
        similarities = queries @ features.T
        k = min(k, len(rows))
        top = np.argsort(-similarities, axis=1)[:, :k]
        return [[Hit(float(similarities[q, r]), rows[r]) for r in top[q]] for q in range(len(queries))]

    return search


def open_set_answers(
    search: Callable[[np.ndarray, int], list[list[Hit]]],
    probes: list[tuple[str, str]],
    vectors: dict[str, np.ndarray],
    params: IdentityParams,
) -> Answers:
    """(named person or None before thresholding, score) per probe; a probe with no face gets (None, -inf).

    `search(vectors, k)` is the store's search: the same neighbours and decision as a search makes.
    """
    import dataclasses

    answers: list[tuple[str | None, float]] = [(None, -np.inf)] * len(probes)
    answered = [i for i, (image, _) in enumerate(probes) if image in vectors]
    if not answered:
        return answers
    hits = search(np.stack([vectors[probes[i][0]] for i in answered]).astype(np.float32), params.neighbours)
    unthresholded = dataclasses.replace(params, threshold=-np.inf)
    for position, i in enumerate(answered):
        identity = identify([h.row.name for h in hits[position]], [h.similarity for h in hits[position]], unthresholded)
        answers[i] = (identity.name, identity.score)
    return answers


def open_set_rates(
    mated: list[tuple[str, str]], mated_answers: Answers, non_mated_answers: Answers, threshold: float
) -> dict[str, float]:
    """FPIR (strangers given a name), FNIR (enrolled people not given their name) and rank-1 of the mated probes."""
    named_strangers = [score >= threshold for _, score in non_mated_answers]
    missed = [not (name == person and score >= threshold) for (_, person), (name, score) in zip(mated, mated_answers)]
    rank1 = [name == person for (_, person), (name, _) in zip(mated, mated_answers)]
    return {
        "threshold": float(threshold),
        "fpir": float(np.mean(named_strangers)) if named_strangers else 0.0,
        "fnir": float(np.mean(missed)) if missed else 0.0,
        "rank1": float(np.mean(rank1)) if rank1 else 0.0,
    }


def open_set_curve(
    mated: list[tuple[str, str]],
    mated_answers: Answers,
    non_mated_answers: Answers,
    thresholds: np.ndarray | None = None,
) -> list[dict[str, float]]:
    if thresholds is None:
        scores = [s for _, s in [*mated_answers, *non_mated_answers] if np.isfinite(s)]
        thresholds = np.quantile(scores, np.linspace(0, 1, 201)) if scores else np.array([0.0])
    return [open_set_rates(mated, mated_answers, non_mated_answers, t) for t in thresholds]


def run_open_set_evaluation(
    engine: Engine,
    gallery: Path,
    *,
    model: str,
    limit: int | None,
    out_dir: Path | None,
    seed: int = 0,
    index_dir: Path | None = None,
) -> dict:
    """FPIR and FNIR of the engine's identity decision on an open-set split of `gallery` (see `open_set_split`).

    The enrolled people's photos (all but one each) are indexed as a gallery of their own; each probe goes
    through the search path (main face, flip-averaged) and the model's identity settings. Writes a JSON
    report and the FPIR/FNIR curve over thresholds as PNG.
    """
    gallery = Path(gallery).resolve()
    paths = list_gallery_images(gallery) if gallery.is_dir() else []
    if limit:
        paths = paths[:limit]
    if not paths:
        raise BadInputError(f"no images in {gallery} (expected one folder per person with photos in it)")
    started = time.perf_counter()
    images_of: dict[str, list[str]] = {}
    for path in paths:
        images_of.setdefault(person_name(path), []).append(path.relative_to(gallery).as_posix())
    enrolled_images, mated, non_mated = open_set_split(images_of, seed)
    if not mated:
        raise BadInputError(f"{gallery}: an open-set split needs people with at least two photos")
    base = index_dir or eval_index_dir(engine, gallery, model, limit)
    index_dir = base.parent.parent / f"{base.parent.name}-open-set-{seed}" / model
    store = engine.open_store(model, index_dir)
    try:
        build = engine.builder(model).build(store, gallery, [gallery / image for image in enrolled_images])
        params = engine.backend(model).identity_params()
        searcher = Searcher(engine.backend(model), store)
        vectors = query_vectors(searcher, engine.read, gallery, [image for image, _ in [*mated, *non_mated]])
        mated_answers = open_set_answers(store.search, mated, vectors, params)
        non_mated_answers = open_set_answers(store.search, non_mated, vectors, params)
    finally:
        store.close()
    at_default = open_set_rates(mated, mated_answers, non_mated_answers, params.threshold)
    curve = open_set_curve(mated, mated_answers, non_mated_answers)
    report: dict[str, Any] = {
        "model": model,
        "gallery": str(gallery),
        "seed": seed,
        "enrolled_people": len(mated),
        "gallery_images": len(enrolled_images),
        "mated_probes": len(mated),
        "non_mated_probes": len(non_mated),
        "probes_without_face": sum(1 for image, _ in [*mated, *non_mated] if image not in vectors),
        "identity_params": dict(params.__dict__),
        **{key: at_default[key] for key in ("threshold", "fpir", "fnir", "rank1")},
        "curve": curve,
        "index": {k: v for k, v in build.to_dict().items() if k != "skipped_files"},
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    out_dir = Path(out_dir or engine.settings.data_dir / "reports")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval-open-set-{gallery.name}-{model}" + (f"-first{limit}" if limit else "") + f"-seed{seed}"
    report["files"] = {"json": str(out_dir / f"{stem}.json"), "plot": str(out_dir / f"{stem}-fpir-fnir.png")}
    Path(report["files"]["json"]).write_text(json.dumps(report, indent=2))
    from engine.tools.plots import open_set_plot

    open_set_plot(curve, at_default, f"{model} on {gallery.name}: open set ({len(mated)} + {len(non_mated)} probes)",
                  Path(report["files"]["plot"]))  # fmt: skip
    return report
