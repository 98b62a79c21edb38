"""Indexing throughput against worker processes and Ray, on LFW (deep-funneled, people A-L; needs ../shared).

Each run indexes the same images from scratch with `Engine.build_index` (hash, decode, detect, embed,
atomic write) into its own temporary folder, models already loaded in this process:

* `workers=N`: decoding and detection in N spawned worker processes (0: in-process, a prefetch thread);
* `ray-local`: `INDEX_RAY=local`, a local Ray cluster whose actors detect and embed (start-up included).

Printed per run: whole-run images/s, then where the time went (decode and detect summed over workers,
embedding in this process, time waiting for workers, time to the first chunk), and the device.
The optional `--notebook` run times the original notebooks' loop (one image, one face at a time).

Usage: python benchmarks/bench_index.py [--limit 1508] [--runs 0,1,2,ray] [--notebook] [--notebook-limit N]
"""

from __future__ import annotations

import argparse
import os
import resource
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
from engine.images import list_gallery_images  # noqa: E402
from engine.models.facenet_keras import build_facenet  # noqa: E402
from engine.runtime.device import cpu_cores  # noqa: E402
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


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker processes; not Ray's actors)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def index_run(engine: Engine, gallery: Path, paths: list[Path], label: str, tmp: Path):
    cpu_before, load_before = cpu_seconds(), os.getloadavg()[0]
    index_dir = Path(tempfile.mkdtemp(prefix=label.replace("=", "-") + "-", dir=tmp))  # from scratch every run
    report = engine.build_index("facenet", gallery, index_dir=index_dir, paths=paths)
    cpu = cpu_seconds() - cpu_before
    cpu_note = "" if label.startswith("ray") else f", {cpu / max(1, report.embedded_images) * 1000:.0f} ms CPU/image"
    print(
        f"{label:10s}: {report.embedded_images} images in {report.seconds:6.1f} s = {report.images_per_second:5.1f} images/s "
        f"({report.faces_indexed} faces, {report.no_face} without a face{cpu_note}; "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {cpu_cores()} cores)",
        flush=True,
    )
    print(f"{'':10s}  {report.device}; {report.pipeline}", flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=1508, help="first N images of LFW A-L (0: all 8,292)")
    parser.add_argument("--runs", default="0,1,2,ray", help="comma-separated: worker counts and/or 'ray'")
    parser.add_argument("--notebook", action="store_true", help="also time the notebooks' one-at-a-time loop")
    parser.add_argument("--notebook-limit", type=int, default=None, help="time the slow baseline on fewer images")
    args = parser.parse_args()
    gallery = REPO.parent / "shared" / "data" / "lfw" / "deepfunneled"
    if not gallery.is_dir():
        print(f"{gallery} not found: this benchmark needs ../shared")
        return 0
    paths = list_gallery_images(gallery)
    paths = paths[: args.limit] if args.limit else paths
    print(f"{len(paths)} LFW images, {cpu_cores()} cores", flush=True)
    reports = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = EngineSettings(data_dir=tmp)
        engine = Engine(settings)
        started = time.perf_counter()
        engine.load("facenet")
        print(f"models loaded in {time.perf_counter() - started:.1f} s; device: {engine.device.describe()}", flush=True)
        for run in args.runs.split(","):
            if run == "ray":
                ray_engine = Engine(settings.model_copy(update={"index_ray": "local"}))
                report = index_run(ray_engine, gallery, paths, "ray-local", tmp)
            else:
                engine.settings = settings.model_copy(update={"index_workers": int(run)})
                report = index_run(engine, gallery, paths, f"workers={run}", tmp)
            reports.setdefault(run, report)  # a repeated run is printed, the first one compared
    base = reports.get("0")
    if base is not None:
        for run, report in reports.items():
            if run != "0":
                print(
                    f"{run:>9s} vs workers=0: {report.images_per_second / base.images_per_second:.2f}x images/s, "
                    f"{report.seconds / base.seconds:.2f}x time"
                )
    if args.notebook:
        baseline_paths = paths[: args.notebook_limit] if args.notebook_limit else paths
        seconds, faces = notebook_index(baseline_paths, settings.facenet_weights)
        theirs = len(baseline_paths) / seconds
        print(f"notebook  : {len(baseline_paths)} images in {seconds:.1f} s = {theirs:.1f} images/s ({faces} faces)")
        if base is not None:
            print(f"speed-up of workers=0 over the notebook loop: {base.images_per_second / theirs:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
