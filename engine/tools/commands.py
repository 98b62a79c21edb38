"""What each CLI command does; printing lives here, not in the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from engine.backends import MODEL_NAMES, check_model
from engine.core import Engine
from engine.errors import BadInputError, EngineError
from engine.settings import EngineSettings
from engine.tools.fetch import fetch_model
from engine.types import IndexProgress, IndexReport


def models(settings: EngineSettings, subcommand: str | None, which: str) -> int:
    if subcommand == "fetch":
        for name in MODEL_NAMES if which == "all" else (check_model(which),):
            fetch_model(settings, name)
        return 0
    engine = Engine(settings)
    for model in MODEL_NAMES:
        problem = engine.model_problem(model)
        print(f"{model:8s} {'ready' if problem is None else 'unavailable: ' + problem}")
    print(f"device   {engine.device.describe()}")
    return 0


def progress_bar(total_hint: str) -> Callable[[IndexProgress], None]:
    """A tqdm bar fed by the engine's progress callback (shown only on a terminal)."""
    bar = None

    def update(progress: IndexProgress) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=progress.total, unit="img", desc=total_hint, disable=not sys.stderr.isatty())
        bar.update(progress.done - bar.n)
        if progress.done >= progress.total:
            bar.close()

    return update


def print_report(report: IndexReport) -> None:
    print(
        f"{report.model}: {report.images} images in {report.gallery}: {report.added} added, {report.updated} updated, "
        f"{report.removed} removed, {report.moved} moved, {report.unchanged} unchanged; {report.faces_indexed} faces indexed, "
        f"{report.no_face} without a face, {report.skipped} skipped; {report.seconds:.1f} s, "
        f"{report.images_per_second:.1f} images/s"
    )
    if report.rebuilt:
        print(
            f"  (the index {report.rebuilt_reason or 'held vectors of other weights, settings or gallery'}: rebuilt from scratch)"
        )
    for line in report.skipped_files[:20]:
        print(f"  skipped {line}")


def index(
    settings: EngineSettings, gallery: Path | None, model: str, *, as_json: bool = False, wait: bool = True
) -> int:
    """Index each model; with `as_json`, the final report of each as one JSON object per line."""
    if not wait:
        settings = settings.model_copy(update={"index_lock_wait_s": 0.0})
    engine = Engine(settings)
    if settings.index_ray and settings.index_ray != "local":
        from engine.indexing.distributed import check_reachable

        check_reachable(settings.index_ray)  # before minutes of model loading

    def waiting(message: str) -> None:
        print(message + " ...", file=sys.stderr, flush=True)

    if settings.gallery_layout == "people":  # a rename a crash interrupted: finished first (engine/indexing/gallery.py)
        from engine.indexing.gallery import Gallery

        Gallery(engine, gallery).recover(timeout=0)  # a running edit (lock held) finishes it itself
    for name in MODEL_NAMES if model == "all" else (model,):
        report = engine.build_index(name, gallery, progress=progress_bar(f"indexing ({name})"), on_wait=waiting)
        if as_json:
            print(json.dumps(report.to_dict()), flush=True)
            continue
        print_report(report)
        if report.pipeline:
            print(f"  {report.device}; {report.pipeline}")
        else:
            print(f"  {report.device}")
    return 0


def watch(settings: EngineSettings, gallery: Path | None, model: str, *, as_json: bool = False) -> int:
    """`index --watch`: keep each model's index up to date with the gallery until SIGTERM or SIGINT (then the run
    under way commits what it has, and the exit status is 0). One line per run (with `as_json`, its status as JSON)."""
    from engine.errors import ModelUnavailableError
    from engine.indexing.watch import WatchStatus, watch_loop

    engine = Engine(settings)
    names = list(MODEL_NAMES) if model == "all" else [check_model(model)]
    for name in names:
        if problem := engine.model_problem(name):
            raise ModelUnavailableError(problem)
    folder = Path(gallery or settings.resolved_gallery()).resolve()
    stop = threading.Event()

    def stop_on(signum: int, frame: object) -> None:
        print(f"{signal.Signals(signum).name}: stopping after the current step", file=sys.stderr, flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, stop_on) for sig in (signal.SIGTERM, signal.SIGINT)}
    runs = 0

    def show(status: WatchStatus) -> None:
        nonlocal runs
        if status.running or status.runs == runs:
            return
        runs = status.runs
        if as_json:
            print(json.dumps(dataclasses.asdict(status)), flush=True)
            return
        if status.problem:
            print(f"waiting: {status.problem}", flush=True)
        else:
            print(f"{status.last_changes}; {status.last_run_s:.1f} s", flush=True)

    try:
        if settings.gallery_layout == "people":  # as `index` does: a rename a crash interrupted is finished first
            from engine.indexing.gallery import Gallery

            Gallery(engine, gallery).recover(timeout=0)
        print(f"watching {folder}; stop with Ctrl-C or SIGTERM", file=sys.stderr, flush=True)
        watch_loop(engine, names, folder, settings, stop.is_set, progress=show)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        engine.close()
    print("stopped", file=sys.stderr, flush=True)
    return 0


def search(
    settings: EngineSettings,
    images: list[Path],
    model: str,
    k: int | None,
    max_faces: int | None,
    as_json: bool,
    limit: int | None = None,
) -> int:
    engine = Engine(settings)
    engine.check_model(model)
    if k is not None:
        engine.check_k(k)
    if max_faces is not None and max_faces < 1:
        raise BadInputError("--max-faces must be at least 1")
    if limit is not None and limit < 1:
        raise BadInputError("--limit must be at least 1")
    engine.load(model)
    engine.searcher(model).check_store()
    failures = 0
    for path in images:
        try:
            result = engine.search_path(path, model=model, k=k, max_faces=max_faces, limit=limit)
        except BadInputError as error:  # one bad photo does not stop the others
            failures += 1
            if as_json:
                print(json.dumps({"image": str(path), "error": str(error)}), flush=True)
            else:
                print(f"{path}: {error}", file=sys.stderr)
            continue
        if as_json:
            print(json.dumps(result.to_dict()), flush=True)
            continue
        if not result.faces:
            print(f"{path}: no face found (try --model vgg16 to search the whole image)")
        for number, face in enumerate(result.faces, start=1):
            print(f"{path}: face {number} at {list(face.box)} (confidence {face.confidence:.2f})")
            if face.photos is not None:  # photos layout: the photos this person appears in
                person = f" ({face.person.name or 'person ' + str(face.person.id)})" if face.person else ""
                if not face.photos_total:
                    print("  not in any photo of this gallery")
                else:
                    print(
                        f"  appears in {face.photos_total} photo{'s' if face.photos_total != 1 else ''}{person}"
                        + (f", best {len(face.photos)}:" if len(face.photos) < face.photos_total else ":")
                    )
                for photo in face.photos:
                    print(f"  {photo.path}  face at {list(photo.box)}  similarity {photo.similarity:.3f}")
                continue
            for match in face.matches:
                print(f"  #{match.rank} {match.name}  similarity {match.similarity:.3f}  {match.path}")
    return 2 if failures else 0


def evaluate(
    settings: EngineSettings, gallery: Path, model: str, pairs: list[Path], limit: int | None, out: Path | None
) -> int:
    from engine.tools.evaluate import run_evaluation

    report = run_evaluation(Engine(settings), gallery, model=model, pairs_files=pairs, limit=limit, out_dir=out)
    summary = {key: report[key] for key in ("model", "queries", "rank1", "hit5", "map10") if key in report}
    if "verification" in report:
        summary["verification_accuracy"] = report["verification"]["accuracy"]
    print(json.dumps(summary))
    print(f"report: {report['files']['json']}\nplots:  {report['files']['plot']}  {report['files']['contact_sheet']}")
    return 0


def evaluate_open_set(
    settings: EngineSettings, gallery: Path, model: str, limit: int | None, out: Path | None, seed: int
) -> int:
    from engine.tools.evaluate import run_open_set_evaluation

    report = run_open_set_evaluation(Engine(settings), gallery, model=model, limit=limit, out_dir=out, seed=seed)
    keys = ("model", "mated_probes", "non_mated_probes", "threshold", "fpir", "fnir", "rank1")
    print(json.dumps({key: report[key] for key in keys}))
    print(f"report: {report['files']['json']}\nplot:   {report['files']['plot']}")
    return 0


def people(settings: EngineSettings, args: argparse.Namespace) -> int:
    """`people [--json]` lists persons largest first; `people name|merge|hide|unassign|recluster` edits them."""
    engine = Engine(settings)
    registry = engine.people(args.model)
    command = args.people_command
    if command != "recluster":
        engine.sync_people(args.model)  # an index written before the registry existed, or by an older version
    if command == "name":
        ref = registry.name(args.id, args.name)
        print(f"person {ref.id} is now named {ref.name}")
    elif command == "merge":
        ref = registry.merge(args.id, args.other)
        print(f"person {args.other} merged into person {ref.id}" + (f" ({ref.name})" if ref.name else ""))
    elif command == "hide":
        registry.hide(args.id)
        print(f"person {args.id} is hidden")
    elif command == "unhide":
        opted_out = args.id in registry.opted_out()
        registry.unhide(args.id, opted_out=args.opted_out)  # PersonOptedOutError without --opted-out
        print(f"person {args.id} is shown again" + (" (they had opted out)" if opted_out else ""))
    elif command == "unassign":
        taken = registry.unassign(args.path, parse_box(args.box) if args.box else None)
        for taken_face in taken:
            print(f"taken out: {taken_face.path} {list(taken_face.box)}")
    elif command == "recluster":
        report = engine.recluster_people(args.model)
        print(
            f"{report.persons} persons; {report.assigned} faces given a person, {report.new_persons} new persons, "
            f"{report.waiting} faces without one; {report.seconds:.1f} s"
        )
    else:
        listed = registry.list()
        for person in listed:
            if args.json:
                print(json.dumps(person.to_dict(), ensure_ascii=False), flush=True)
                continue
            face = person.representative
            assert face is not None, "list() gives persons with at least one face"
            print(
                f"{person.id:>6}  {person.name or '(not named)'}  {len(person.faces)} faces, {person.photos} photos; "
                f"e.g. {face.path} {list(face.box)}"
            )
        if not args.json:
            opted = registry.opted_out()
            print(f"{len(listed)} persons; {registry.waiting()} faces waiting for a person")
            if opted:
                print(f"opted out (hidden at their request; unhide --opted-out undoes it): {sorted(opted)}")
    return 0


def parse_box(text: str) -> tuple[int, int, int, int]:
    parts = text.replace(" ", "").split(",")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise BadInputError(f"--box must be four whole numbers x,y,w,h, not {text!r}")
    x, y, w, h = numbers
    return (x, y, w, h)


__all__ = ["EngineError", "evaluate", "evaluate_open_set", "index", "models", "people", "search", "watch"]
