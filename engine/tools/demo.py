"""`make run` without a Telegram token: the engine at work on the sample gallery."""

from __future__ import annotations

from pathlib import Path

from engine.core import Engine
from engine.images import list_gallery_images
from engine.settings import EngineSettings
from engine.tools.commands import print_report, progress_bar
from engine.tools.evaluate import run_evaluation


def run_demo(settings: EngineSettings) -> int:
    """Index the gallery, search one photo per person, and report leave-one-out accuracy."""
    engine = Engine(settings)
    gallery = settings.resolved_gallery()
    print(f"Indexing {gallery} with FaceNet (incremental: only new or changed photos are embedded) ...")
    print_report(engine.build_index("facenet", gallery, progress=progress_bar("indexing")))

    photos_per_person: dict[str, list[Path]] = {}
    for path in list_gallery_images(gallery):
        photos_per_person.setdefault(path.parent.name, []).append(path)
    print("\nSearching one photo of each person (its own copy in the gallery left out):")
    for person, paths in photos_per_person.items():
        print(f"  {person:16s} → {_first_answer(engine, paths)}")

    report = run_evaluation(
        engine,
        gallery,
        model="facenet",
        pairs_files=[],
        limit=None,
        out_dir=None,
        index_dir=settings.index_dir("facenet"),
    )
    print(
        f"\nLeave-one-out on {report['images']} photos of {report['people']} people: rank-1 {report['rank1']:.3f}, "
        f"hit@5 {report['hit5']:.3f}, mAP@10 {report['map10']:.3f}"
    )
    print(f"Contact sheet: {report['files']['contact_sheet']}\nReport:        {report['files']['json']}")
    print("\nSet BOT_TOKEN (see README) and run `make run` again to start the Telegram bot.")
    return 0


def _first_answer(engine: Engine, paths: list[Path]) -> str:
    """The nearest other photos for the person's first photo with a face (a sample photo may show none)."""
    for skipped, path in enumerate(paths):
        result = engine.search_path(path, model="facenet", k=4)
        if not result.faces:
            continue
        others = [m for m in result.faces[0].matches if m.path != str(path.resolve())][:3]
        names = ", ".join(f"{m.name} ({m.similarity:.2f})" for m in others)
        note = f"; {skipped} earlier photo(s) without a face" if skipped else ""
        return f"{names}   [{path.name[:24]}, {sum(result.ms.values()):.0f} ms{note}]"
    return "no face found in any photo"
