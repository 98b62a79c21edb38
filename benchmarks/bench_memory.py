"""Peak memory of an engine process that indexes camera photos (photos layout) and then embeds: where it goes.

Runs the work in a child process (so its ru_maxrss is its own) and prints resident and peak memory after each
phase: models loaded, each photo decoded, its faces found and cropped, FaceNet loaded, the faces embedded.
Photos: issue 21's camera photos (bench_photos_detect.py --camera: 6000x4000, 12 LFW photos pasted on each).
Usage: python benchmarks/bench_memory.py [--photos 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def child(folder: Path) -> int:
    """The engine's work, in a process of its own: composing the photos (in the parent) is not counted."""
    import psutil

    from engine.backends import BACKENDS
    from engine.images import read_image
    from engine.runtime.onnx import limit_heap_retention
    from engine.settings import EngineSettings

    process = psutil.Process()
    peak = [0]

    def sample() -> None:  # ru_maxrss would count the parent's memory at the fork
        while True:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()

    def report(phase: str) -> None:
        rss = process.memory_info().rss
        peak[0] = max(peak[0], rss)
        print(f"{phase:32s} resident {rss / 2**20:7.1f} MB, peak {peak[0] / 2**20:7.1f} MB (sampled)", flush=True)

    paths = sorted(folder.glob("*.jpg"))
    settings = EngineSettings(gallery_layout="photos")
    limit_heap_retention(settings.heap_mmap_threshold_mb)  # as the bot and `engine index` run (0 in the env: glibc's)
    backend = BACKENDS["facenet"](settings)
    report("started")
    backend.load_regions()
    report("MTCNN loaded")
    regions = []
    for number, path in enumerate(paths):
        image = read_image(path, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        report(f"photo {number} decoded")
        regions += backend.gallery_regions([image])[0]
        del image
        report(f"photo {number}: faces cropped")
    backend.load()
    report("FaceNet loaded")
    backend.embed(regions, query=False)
    report(f"{len(regions)} faces embedded")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child))
    from benchmarks.bench_photos_detect import LFW, camera_photos

    if not LFW.is_dir():
        print(f"needs LFW in {LFW}")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        camera_photos(Path(folder), args.photos)
        return subprocess.run([sys.executable, __file__, "--child", folder], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
