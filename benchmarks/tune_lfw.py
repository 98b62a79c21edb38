"""Which crop choices move FaceNet's rank-1 on LFW: alignment, margin, flipped-image averaging.

Detects once, then embeds the same faces under each variant and scores leave-one-out
identification (same protocol as `python -m engine eval`). Needs ../shared/data/lfw.
Usage: python benchmarks/tune_lfw.py [--variant deepfunneled|original_150px] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from engine.core import Engine  # noqa: E402
from engine.detect import crop_face  # noqa: E402
from engine.evaluate import retrieval_metrics  # noqa: E402
from engine.search import l2_normalize  # noqa: E402
from engine.images import list_gallery_images, person_name, read_image  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="deepfunneled")
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--min-face-size", type=int, default=32)
    parser.add_argument("--margins", default="0.1,0.2,0.3", help="comma-separated crop margins to try")
    parser.add_argument("--align", default="false,true", help="alignment settings to try")
    args = parser.parse_args()
    gallery = REPO.parent / "shared" / "data" / "lfw" / args.variant
    if not gallery.is_dir():
        print(f"{gallery} not found: this benchmark needs ../shared")
        return 0
    settings = EngineSettings(min_face_size=args.min_face_size)
    engine = Engine(settings)
    engine.load("facenet")
    paths = list_gallery_images(gallery)[: args.limit]
    relative = [p.relative_to(gallery).as_posix() for p in paths]
    started = time.perf_counter()
    images = [read_image(p, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels) for p in paths]
    faces = []
    for i in range(0, len(images), 16):
        faces.extend(engine.detector.detect(images[i : i + 16]))
    found = [i for i, f in enumerate(faces) if f]
    print(f"{args.variant}: {len(paths)} images, faces in {len(found)}, detection {time.perf_counter() - started:.0f} s")
    images_of = {}
    for image in relative:
        images_of.setdefault(person_name(Path(image)), []).append(image)
    queries = [(img, person) for person, imgs in images_of.items() if len(imgs) >= 2 for img in imgs]
    row_images = [relative[i] for i in found]
    row_people = [person_name(Path(relative[i])) for i in found]
    for align in [value.strip() == "true" for value in args.align.split(",")]:
        for margin in [float(value) for value in args.margins.split(",")]:
            crops = np.stack([crop_face(images[i], faces[i][0], size=160, margin=margin, align=align) for i in found])
            plain = engine.facenet.embed(crops)
            flipped = engine.facenet.embed(crops[:, :, ::-1, :].copy())
            for flip in (False, True):
                features = l2_normalize(plain + flipped) if flip else plain
                metrics, _ = retrieval_metrics(features, row_people, row_images, queries)
                print(
                    f"align={align!s:5} margin={margin:.2f} flip={flip!s:5} rank1={metrics['rank1']:.4f} "
                    f"hit5={metrics['hit5']:.4f} map10={metrics['map10']:.4f} queries={metrics['queries']}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
