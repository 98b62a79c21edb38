"""`make run` without a Telegram token: the engine at work on the sample gallery."""

from __future__ import annotations

from engine.commands import print_report, progress_bar
from engine.core import Engine
from engine.evaluate import run_evaluation
from engine.images import list_gallery_images
from engine.settings import EngineSettings


def run_demo(settings: EngineSettings) -> int:
    """Index the gallery, search one photo per person, and report leave-one-out accuracy."""
    engine = Engine(settings)
    gallery = settings.resolved_gallery()
    print(f"Indexing {gallery} with FaceNet (incremental: only new or changed photos are embedded) ...")
    print_report(engine.build_index("facenet", gallery, progress=progress_bar("indexing")))

    first_per_person = {}
    for path in list_gallery_images(gallery):
        first_per_person.setdefault(path.parent.name, path)
    print("\nSearching one photo of each person (its own copy in the gallery left out):")
    for path in first_per_person.values():
        result = engine.search_path(path, model="facenet", k=4)
        if not result.faces:
            print(f"  {path.parent.name:16s} → no face found in {path.name[:40]}")
            continue
        others = [m for m in result.faces[0].matches if m.path != str(path.resolve())][:3]
        names = ", ".join(f"{m.name} ({m.similarity:.2f})" for m in others)
        print(f"  {path.parent.name:16s} → {names}   [{sum(result.ms.values()):.0f} ms]")

    report = run_evaluation(
        engine, gallery, model="facenet", pairs_files=[], limit=None, out_dir=None, index_dir=settings.index_dir("facenet")
    )
    print(
        f"\nLeave-one-out on {report['images']} photos of {report['people']} people: rank-1 {report['rank1']:.3f}, "
        f"hit@5 {report['hit5']:.3f}, mAP@10 {report['map10']:.3f}"
    )
    print(f"Contact sheet: {report['files']['contact_sheet']}\nReport:        {report['files']['json']}")
    print("\nSet BOT_TOKEN (see README) and run `make run` again to start the Telegram bot.")
    return 0
