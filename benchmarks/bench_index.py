"""Indexing throughput on LFW-1508 (first 1,508 deep-funneled images), side by side:

* engine: `Engine.build_index` from scratch (hash, decode, batched MTCNN, batched FaceNet, atomic write);
* notebook: the original notebooks' approach on the same weights — MTCNN one image at a time,
  one Keras `predict` call per face, then sklearn `NearestNeighbors`.

Both start with models loaded (load time printed separately). Needs ../shared.
Usage: python benchmarks/bench_index.py [--limit 1508] [--notebook-limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from engine.core import Engine  # noqa: E402
from engine.facenet import build_facenet  # noqa: E402
from engine.images import list_gallery_images  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402


def notebook_index(paths: list[Path], weights: Path) -> tuple[float, int]:
    """The notebooks' loop, kept as they wrote it (per image, per face), timed without model loading."""
    from mtcnn import MTCNN
    from sklearn.neighbors import NearestNeighbors

    detector = MTCNN()
    model = build_facenet(weights)
    model.predict(np.zeros((1, 160, 160, 3), np.float32), verbose=0)
    detector.detect_faces(np.zeros((64, 64, 3), np.uint8))
    started = time.perf_counter()
    embeddings = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        results = detector.detect_faces(pixels)
        if not results:
            continue
        x1, y1, width, height = results[0]["box"]
        x1, y1 = abs(x1), abs(y1)
        face = Image.fromarray(pixels[y1 : y1 + height, x1 : x1 + width]).resize((160, 160))
        face = np.asarray(face, np.float32)
        face = (face - face.mean()) / face.std()
        embeddings.append(model.predict(face[None], verbose=0)[0])
    NearestNeighbors(n_neighbors=5).fit(np.array(embeddings))
    return time.perf_counter() - started, len(embeddings)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=1508)
    parser.add_argument("--notebook-limit", type=int, default=None, help="time the slow baseline on fewer images")
    args = parser.parse_args()
    gallery = REPO.parent / "shared" / "data" / "lfw" / "deepfunneled"
    if not gallery.is_dir():
        print(f"{gallery} not found: this benchmark needs ../shared")
        return 0
    paths = list_gallery_images(gallery)[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        settings = EngineSettings(data_dir=Path(tmp))
        engine = Engine(settings)
        started = time.perf_counter()
        engine.load("facenet")
        print(f"engine: models loaded in {time.perf_counter() - started:.1f} s")
        report = engine.build_index("facenet", gallery, index_dir=Path(tmp) / "index", paths=paths)
    ours = report.images_per_second
    print(
        f"engine  : {report.embedded_images} images in {report.seconds:.1f} s = {ours:.1f} images/s "
        f"({report.faces_indexed} faces, {report.no_face} without a face)"
    )
    baseline_paths = paths[: args.notebook_limit] if args.notebook_limit else paths
    seconds, faces = notebook_index(baseline_paths, settings.facenet_weights)
    theirs = len(baseline_paths) / seconds
    print(f"notebook: {len(baseline_paths)} images in {seconds:.1f} s = {theirs:.1f} images/s ({faces} faces)")
    print(f"speed-up: {ours / theirs:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
