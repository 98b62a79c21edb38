"""Several selfies, one person: the fusion threshold on LFW pairs, and the recall gain on the development event.

Two parts (engine/search/fusion.py):

--tune-fusion: the same-person threshold of the fusion. Every development photo (at most 10 a person, people with
  2 or more photos) is embedded as a search embeds a selfie (its main face, flip-averaged FaceNet). Genuine pairs
  are every pair of one person's photos, impostor pairs as many random pairs of different people. Printed per fold:
  the share of genuine pairs passing and of impostor pairs passing at each threshold, and the threshold at which
  99% of genuine pairs pass on A-F (SAME_PERSON is chosen there and reported on G-L); then the same for sets of
  three selfies under the leave-one-out rule (three of one person; two of one person with one stranger).

default: an event built as bench_event builds it (benchmarks/bench_event.py: group photos of one fold's people at
  45-130 px on 1600x1200 canvases), except that each guest (a person with 4 or more photos) keeps three photos
  back as selfies, and only the rest are pasted. Each guest searches with 1, 2 and 3 selfies (the fused template,
  searched with the same decision as one face, Searcher.photos_for); strangers (people never pasted) with as many
  of theirs as they have. Printed for each count: precision and recall (as bench_event), sets refused as different
  people, strangers clean. Nothing is tuned here: the decision is the engine's.
Cached under DATA_DIR/bench/selfies/<fold>/ (gallery, index, query vectors). Needs ../shared/data/lfw.
With --matched, the 2- and 3-selfie decisions are also run with their thresholds raised step by step until their
precision reaches the 1-selfie precision: recall at the same precision (a comparison point, not a setting).
Usage: python benchmarks/bench_selfies.py [--fold A-F|G-L] [--selfies 1,2,3] [--matched] [--tune-fusion]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_event import FOLDS, LFW, MAX_APPEARANCES, build_gallery, labelled, people_of  # noqa: E402
from engine.search.fusion import SAME_PERSON, DifferentPeopleError, fuse, leave_one_out  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402

SELFIES = 3  # photos each guest keeps back as selfies
PER_PERSON = 10  # photos a person at most in the pair statistics


def plan(fold: str, guests: int, strangers: int, seed: int) -> dict:
    """bench_event's plan with three selfies held back per guest: guests have 4+ photos, their 4th on pasted."""
    rng = random.Random(seed)
    people = people_of(fold)
    eligible = sorted(name for name, photos in people.items() if len(photos) > SELFIES)
    rest = sorted(name for name, photos in people.items() if len(photos) <= SELFIES)
    rng.shuffle(eligible)
    rng.shuffle(rest)
    chosen = sorted(eligible[:guests])
    several = [name for name in rest if len(people[name]) >= 2]
    single = [name for name in rest if len(people[name]) == 1]
    stranger_names = sorted(several[: strangers // 2] + single[: strangers - strangers // 2])
    fillers = single[strangers - strangers // 2 :][: guests // 2]
    appearances = [(name, str(photo)) for name in chosen for photo in people[name][SELFIES : SELFIES + MAX_APPEARANCES]]
    appearances += [(name, str(people[name][0])) for name in fillers]
    rng.shuffle(appearances)
    photos: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    size = rng.randint(3, 8)
    for name, photo in appearances:
        if any(name == other for other, _ in current):
            appearances.append((name, photo))
            if len(appearances) > 10 * len(chosen) + 1000:
                break
            continue
        current.append((name, photo))
        if len(current) == size:
            photos.append(current)
            current, size = [], rng.randint(3, 8)
    if current:
        photos.append(current)
    return {
        "fold": fold,
        "guests": {name: [str(p) for p in people[name][:SELFIES]] for name in chosen},
        "strangers": {name: [str(p) for p in people[name][:SELFIES]] for name in stranger_names},
        "photos": photos,
    }


def embed_paths(engine, paths: list[str], cache: Path) -> np.ndarray:
    """The main face's query vector of each photo (NaN rows where none), as a search makes it; cached."""
    if cache.is_file():
        data = np.load(cache)
        if list(data["paths"]) == paths:
            return data["vectors"]
    engine.load_networks("facenet")
    backend = engine.backend("facenet")
    out = np.full((len(paths), 128), np.nan, np.float32)
    started = time.perf_counter()
    for i, path in enumerate(paths):
        regions = backend.query_regions([engine.read(Path(path))], 1)[0]
        if regions:
            out[i] = backend.embed(regions[:1], query=True)[0]
        if i % 500 == 499:
            print(f"  embedded {i + 1}/{len(paths)} in {time.perf_counter() - started:.0f} s", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(paths), vectors=out)
    return out


def pair_figures(vectors: np.ndarray, people: list[str], seed: int) -> dict:
    """Genuine and impostor pair similarities, and leave-one-out minima of 3-selfie sets (genuine, one stranger)."""
    rng = np.random.default_rng(seed)
    ok = ~np.isnan(vectors[:, 0])
    by_person: dict[str, list[int]] = {}
    for i, name in enumerate(people):
        if ok[i]:
            by_person.setdefault(name, []).append(i)
    genuine = np.array(
        [float(vectors[a] @ vectors[b]) for rows in by_person.values() for a, b in itertools.combinations(rows, 2)]
    )
    usable = np.flatnonzero(ok)
    names = np.array(people)
    a, b = rng.choice(usable, 200_000), rng.choice(usable, 200_000)
    keep = names[a] != names[b]
    impostor = np.einsum("ij,ij->i", vectors[a[keep]], vectors[b[keep]])
    triples, mixed = [], []
    people_3 = [rows for rows in by_person.values() if len(rows) >= 3]
    people_2 = [rows for rows in by_person.values() if len(rows) >= 2]
    for _ in range(20_000):
        rows = people_3[rng.integers(len(people_3))]
        triples.append(float(leave_one_out(vectors[rng.choice(rows, 3, replace=False)]).min()))
        rows = people_2[rng.integers(len(people_2))]
        stranger = usable[rng.integers(len(usable))]
        if names[stranger] == names[rows[0]]:
            continue
        mixed.append(float(leave_one_out(vectors[[*rng.choice(rows, 2, replace=False), stranger]]).min()))
    return {"genuine": genuine, "impostor": impostor, "triples": np.array(triples), "mixed": np.array(mixed)}


def tune_fusion(seed: int) -> None:
    from engine.core import Engine

    base = EngineSettings()
    engine = Engine(base)
    figures = {}
    for fold, letters in FOLDS.items():
        paths, people = [], []
        for folder in sorted(LFW.iterdir()):
            photos = sorted(folder.glob("*.jpg")) if folder.is_dir() and folder.name[0] in letters else []
            if len(photos) >= 2:
                for photo in photos[:PER_PERSON]:
                    paths.append(str(photo))
                    people.append(folder.name)
        vectors = embed_paths(engine, paths, base.data_dir / "bench" / "selfies" / f"pairs-{fold}.npz")
        print(
            f"{fold}: {len(paths)} photos of {len(set(people))} people, {int(np.isnan(vectors[:, 0]).sum())} without a face"
        )
        figures[fold] = pair_figures(vectors, people, seed)
    chosen = float(np.quantile(figures["A-F"]["genuine"], 0.01))
    print(f"A-F: 99% of genuine pairs pass from similarity {chosen:.3f}; SAME_PERSON in the engine: {SAME_PERSON}")
    for fold, f in figures.items():
        print(
            f"{fold}: {len(f['genuine'])} genuine pairs, {len(f['impostor'])} impostor pairs, sets of 3: {len(f['triples'])} genuine, {len(f['mixed'])} with a stranger"
        )
        for threshold in sorted({0.2, 0.25, 0.3, 0.35, 0.4, round(chosen, 3), SAME_PERSON}):
            print(
                f"  threshold {threshold:.3f}: pairs: genuine pass {np.mean(f['genuine'] >= threshold):.4f}, "
                f"impostors pass {np.mean(f['impostor'] >= threshold):.4f};  3 selfies: genuine pass "
                f"{np.mean(f['triples'] >= threshold):.4f}, with a stranger pass {np.mean(f['mixed'] >= threshold):.4f}"
            )


def evaluate_event(args) -> None:
    from engine.core import Engine

    base = EngineSettings()
    work = base.data_dir / "bench" / "selfies" / f"{args.fold}-g{args.guests}-s{args.strangers}-seed{args.seed}"
    gallery = work / "gallery"
    layout_file = work / "layout.json"
    if layout_file.is_file():
        layout = json.loads(layout_file.read_text())
    else:
        layout = plan(args.fold, args.guests, args.strangers, args.seed)
        work.mkdir(parents=True, exist_ok=True)
        layout_file.write_text(json.dumps(layout))
    truth_faces = build_gallery(gallery, layout, args.seed)
    print(
        f"fold {args.fold}: {len(truth_faces)} group photos, {sum(len(v) for v in truth_faces.values())} faces pasted, "
        f"{len(layout['guests'])} guests (3 selfies each held back), {len(layout['strangers'])} strangers",
        flush=True,
    )
    settings = base.model_copy(update={"data_dir": work / "data", "gallery_dir": gallery, "gallery_layout": "photos"})
    engine = Engine(settings)
    started = time.perf_counter()
    report = engine.build_index("facenet", gallery)
    print(f"index: {report.faces_indexed} faces in {time.perf_counter() - started:.0f} s", flush=True)
    searcher = engine.searcher("facenet")
    keys = [(kind, name) for kind in ("guests", "strangers") for name in layout[kind]]
    paths = [path for kind, name in keys for path in layout[kind][name]]
    flat = embed_paths(engine, paths, work / "queries.npz")
    vectors, at = {}, 0
    for kind, name in keys:
        count = len(layout[kind][name])
        vectors[(kind, name)] = flat[at : at + count]
        at += count
    photos_of: dict[str, set[str]] = {}
    for path, faces in truth_faces.items():
        for name, _ in faces:
            photos_of.setdefault(name, set()).add(path)

    def figures(count: int, params) -> dict:
        precisions, recalls, clean = [], [], []
        refused = {"guests": 0, "strangers": 0}
        faceless = 0
        for (kind, name), rows in vectors.items():
            rows = rows[:count]
            rows = rows[~np.isnan(rows[:, 0])]  # a selfie without a face is left out (the bot says so)
            answer = []
            if len(rows) == 0:
                faceless += kind == "guests"
            else:
                try:
                    answer = searcher.photos_for(fuse(rows).vector, params=params)
                except DifferentPeopleError:
                    refused[kind] += 1
            if kind == "strangers":
                clean.append(float(not answer))
                continue
            found, right, judged = set(), 0, 0
            wanted = photos_of.get(name, set())
            for photo in answer:
                relative = Path(photo.path).relative_to(gallery).as_posix()
                found.add(relative)
                who = labelled(photo.box, truth_faces[relative])
                if who is not None or relative in wanted:
                    judged += 1
                    right += who == name or (who is None and relative in wanted)
            recalls.append(len(found & wanted) / len(wanted) if wanted else 1.0)
            if judged:
                precisions.append(right / judged)
        return {
            "precision": float(np.mean(precisions)),
            "recall": float(np.mean(recalls)),
            "clean": float(np.mean(clean)),
            "refused": refused,
            "faceless": faceless,
        }

    params = searcher.appearance_params()
    baseline = None
    for count in [int(c) for c in args.selfies.split(",")]:
        f = figures(count, params)
        baseline = f["precision"] if baseline is None else baseline
        print(
            f"{count} selfie{'s' if count > 1 else ''}: precision {f['precision']:.3f}  recall {f['recall']:.3f}  "
            f"strangers clean {f['clean']:.3f}  refused as different people: {f['refused']['guests']} guests, "
            f"{f['refused']['strangers']} strangers; guests without any face {f['faceless']}",
            flush=True,
        )
        if count > 1 and args.matched:
            # the same precision as the first count's: the decision's thresholds raised until precision matches
            # (an operating point for the comparison only; the engine's decision is not changed)
            for raise_by in (0.02, 0.04, 0.06, 0.08, 0.1):
                raised = replace(
                    params,
                    threshold=params.threshold + raise_by,
                    expanded_threshold=(params.expanded_threshold or params.threshold) + raise_by,
                )
                g = figures(count, raised)
                print(
                    f"   thresholds +{raise_by:.2f}: precision {g['precision']:.3f}  recall {g['recall']:.3f}  "
                    f"strangers clean {g['clean']:.3f}",
                    flush=True,
                )
                if g["precision"] >= baseline:
                    break


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fold", default="G-L", choices=sorted(FOLDS))
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--strangers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selfies", default="1,2,3")
    parser.add_argument("--tune-fusion", action="store_true", help="the fusion's same-person threshold on LFW pairs")
    parser.add_argument(
        "--matched",
        action="store_true",
        help="also raise the thresholds of 2+ selfies until their precision matches 1's",
    )
    args = parser.parse_args()
    if not LFW.is_dir():
        print(f"{LFW} not found: this benchmark needs the LFW development photos in ../shared/data/lfw")
        return 0
    if args.tune_fusion:
        tune_fusion(args.seed)
    else:
        evaluate_event(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
