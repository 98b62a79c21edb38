"""Command line: `python -m engine {models,index,search,eval,demo,people}`.

Exit codes: 0 success, 2 bad input (bad arguments, unreadable images, missing weights
or index), 1 internal error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow C++ chatter; errors still raise

from engine.backends import FACE_MODELS, MODEL_NAMES  # noqa: E402
from engine.errors import BadInputError, EngineError  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Reverse face image search engine.")
    parser.add_argument("--data-dir", type=Path, help="override DATA_DIR")
    parser.add_argument("--models-dir", type=Path, help="override MODELS_DIR")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="show or fetch model weights")
    models_commands = models.add_subparsers(dest="models_command")
    fetch = models_commands.add_parser("fetch", help="download weights (and the sample gallery) and verify them")
    fetch.add_argument("which", nargs="?", default="facenet", choices=[*MODEL_NAMES, "all"])

    index = commands.add_parser("index", help="build or update the index of a gallery (incremental)")
    index.add_argument("--gallery", type=Path, help="gallery folder, one sub-folder per person (default GALLERY_DIR)")
    index.add_argument("--model", default="facenet", choices=[*MODEL_NAMES, "all"])
    index.add_argument(
        "--layout", choices=["people", "photos"],
        help="people: one folder per person; photos: any tree, every face, no names from folders (default GALLERY_LAYOUT)",
    )  # fmt: skip
    index.add_argument("--all-faces", action="store_true", help="index every face of a photo, not only the main one")
    index.add_argument("--json", action="store_true", help="print the final report as one JSON object")
    index.add_argument("--no-wait", action="store_true", help="fail at once if another index run holds the lock")
    index.add_argument(
        "--watch",
        action="store_true",
        help="then keep watching the gallery: index new, changed and deleted photos as they land, until SIGTERM or "
        "Ctrl-C (WATCH_SETTLE_S, WATCH_POLL_S)",
    )
    index.add_argument(
        "--workers",
        type=int,
        help="processes decoding and detecting (0: in this process; default INDEX_WORKERS or one per core)",
    )
    index.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="index on Ray: 'local' starts a local cluster, else join one (host:port, ray://...)",
    )

    search = commands.add_parser("search", help="search the faces of one or more photos")
    search.add_argument("images", nargs="+", type=Path)
    search.add_argument("--model", default="facenet", help=f"one of: {', '.join(MODEL_NAMES)}")
    search.add_argument("-k", type=int, help="matches per face (default DEFAULT_K)")
    search.add_argument("--max-faces", type=int, help="search at most this many faces per photo")
    search.add_argument("--json", action="store_true", help="one JSON object per image per line")
    search.add_argument("--layout", choices=["people", "photos"], help="the index's layout (default GALLERY_LAYOUT)")
    search.add_argument(
        "--limit",
        type=int,
        help="photos layout: at most this many photos per face (default: every photo over the threshold)",
    )

    evaluate = commands.add_parser("eval", help="identification-by-retrieval (and verification) accuracy")
    evaluate.add_argument("--gallery", type=Path, required=True)
    evaluate.add_argument("--model", default="facenet", choices=MODEL_NAMES)
    evaluate.add_argument("--pairs", type=Path, action="append", help="LFW pairs file(s) for verification accuracy")
    evaluate.add_argument("--limit", type=int, help="use only the first N images (sorted path order)")
    evaluate.add_argument("--out", type=Path, help="report folder (default DATA_DIR/reports)")
    evaluate.add_argument(
        "--open-set",
        action="store_true",
        help="open-set identification: FPIR/FNIR at the default threshold, curve as PNG",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="which random open-set split (with --open-set)")

    commands.add_parser("demo", help="index the sample gallery, search a few of its photos, write a contact sheet")

    people = commands.add_parser(
        "people", help="list the persons of the gallery; name, merge, hide them, take a face out"
    )
    people.add_argument("--model", default="facenet", help=f"whose faces ({', '.join(FACE_MODELS)})")
    people.add_argument(
        "--json", action="store_true", help='one object per person per line: {"id", "name", "faces", "photos"}'
    )
    people_commands = people.add_subparsers(dest="people_command")
    name = people_commands.add_parser("name", help="name a person")
    name.add_argument("id", type=int)
    name.add_argument("name", help='"Firstname Lastname"')
    merge = people_commands.add_parser("merge", help="merge the second person into the first")
    merge.add_argument("id", type=int)
    merge.add_argument("other", type=int)
    hide = people_commands.add_parser("hide", help="never show or name this person")
    hide.add_argument("id", type=int)
    unhide = people_commands.add_parser("unhide", help="show a hidden person again (one who opted out: --opted-out)")
    unhide.add_argument("id", type=int)
    unhide.add_argument(
        "--opted-out", action="store_true", help="also a person who opted out with the bot's /optout (their choice)"
    )
    unassign = people_commands.add_parser(
        "unassign", help="take a photo's face (or every face of it) out of its person for good"
    )
    unassign.add_argument("path", help="the photo's path relative to the gallery (as `people --json` shows it)")
    unassign.add_argument("--box", help="x,y,w,h of the face (default: every face of the photo)")
    people_commands.add_parser("recluster", help="group every face into persons again (named persons kept)")
    return parser


def make_settings(args: argparse.Namespace) -> EngineSettings:
    overrides = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.models_dir:
        overrides["models_dir"] = args.models_dir
    if getattr(args, "layout", None):
        overrides["gallery_layout"] = args.layout
    if getattr(args, "all_faces", False):
        overrides["index_all_faces"] = True
    if getattr(args, "workers", None) is not None:
        if args.workers < 0:
            raise BadInputError("--workers must be 0 or more")
        overrides["index_workers"] = args.workers
    if getattr(args, "ray", None):
        overrides["index_ray"] = args.ray
    return EngineSettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = make_settings(args)
        return run_command(args, settings)
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # last resort: an internal error, with its traceback
        logging.getLogger("engine").exception("internal error: %s", error)
        return 1


def run_command(args: argparse.Namespace, settings: EngineSettings) -> int:
    from engine.tools import commands

    if args.command == "models":
        return commands.models(settings, args.models_command, getattr(args, "which", "facenet"))
    if args.command == "index":
        from engine.runtime.onnx import limit_heap_retention

        limit_heap_retention(settings.heap_mmap_threshold_mb)  # a long run of camera photos: see HEAP_MMAP_THRESHOLD_MB
        if args.watch:
            return commands.watch(settings, args.gallery, args.model, as_json=args.json)
        return commands.index(settings, args.gallery, args.model, as_json=args.json, wait=not args.no_wait)
    if args.command == "search":
        return commands.search(settings, args.images, args.model, args.k, args.max_faces, args.json, args.limit)
    if args.command == "eval":
        if args.open_set:
            return commands.evaluate_open_set(settings, args.gallery, args.model, args.limit, args.out, args.seed)
        return commands.evaluate(settings, args.gallery, args.model, args.pairs or [], args.limit, args.out)
    if args.command == "people":
        return commands.people(settings, args)
    if args.command == "demo":
        from engine.tools.demo import run_demo

        return run_demo(settings)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
