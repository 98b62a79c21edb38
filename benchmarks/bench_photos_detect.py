"""How large must gallery photos be for detection in the photos layout? Faces found and seconds per photo.

Event photos are 12-24 Mpx with faces of 60-150 px; the people layout scales photos to DETECT_MAX_SIDE (640)
first, where such faces shrink below MTCNN's reach. This composes large photos from sample-gallery faces
(every face pasted at a known size and place, over a blurred background) and detects them at several
PHOTOS_DETECT_MAX_SIDE values, printing faces found / pasted, false detections and seconds per photo.
Needs only the sample gallery and the weights (`python -m engine models fetch`).

--camera N: N camera photos as issue 21 measures them instead: 6000x4000 JPEGs, each with 12 whole LFW photos of
150-375 px pasted on (people G-L; their backgrounds carry some more faces), indexed as the photos layout does
(decode, detect at PHOTOS_DETECT_MAX_SIDE, crop every face); prints seconds a photo per stage and faces found.
Needs ../shared/data/lfw.
Usage: python benchmarks/bench_photos_detect.py [--sides 640,1280,1600,2048,2560] [--photos 2]
       python benchmarks/bench_photos_detect.py --camera 20
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np
from PIL import Image

from engine.backends import BACKENDS
from engine.images import list_gallery_images, person_name, read_image
from engine.models.mtcnn import FaceDetector
from engine.runtime.onnx import limit_heap_retention
from engine.settings import EngineSettings
from tests.support.compose import background, overlap, paste_faces

LFW = REPO.parent / "shared" / "data" / "lfw" / "deepfunneled"
SIZES = (60, 75, 90, 105, 120, 150)  # face sizes pasted, in pixels of the photo (the longer side of the box)


def source_faces(detector: FaceDetector, gallery: Path, limit: int = 60) -> list[tuple[str, np.ndarray, tuple]]:
    """(person, photo, face box) of sample photos with one clear face at least 90 px tall."""
    chosen = []
    for path in list_gallery_images(gallery):
        image = read_image(path, max_bytes=50_000_000, max_pixels=50_000_000)
        faces = detector.detect([image])[0]
        if len(faces) == 1 and faces[0].confidence >= 0.99 and faces[0].box[3] >= 90:
            chosen.append((person_name(path), image, faces[0].box))
        if len(chosen) >= limit:
            break
    return chosen


def composed(sources, size: tuple[int, int], faces: int, seed: int):
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(sources), faces, replace=False)
    canvas = background(sources[int(picks[0])][1], size, seed)
    wanted = [(sources[i][0], sources[i][1], sources[i][2], SIZES[n % len(SIZES)]) for n, i in enumerate(picks)]
    placed = paste_faces(canvas, wanted, seed)
    return np.asarray(canvas), placed


def camera_photos(folder: Path, count: int) -> list[Path]:
    """`count` 6000x4000 JPEGs with 12 whole LFW photos (G-L) of 150-375 px each, on a 4x3 grid with jitter."""
    people = sorted(path for path in LFW.iterdir() if path.is_dir() and path.name[0] in "GHIJKL")
    rng = random.Random(0)
    paths = []
    for number in range(count):
        picks = [rng.choice(sorted(rng.choice(people).glob("*.jpg"))) for _ in range(12)]
        canvas = background(read_image(picks[0], max_bytes=10**8, max_pixels=10**8), (6000, 4000), number)
        for position, photo in enumerate(picks):
            side = rng.randint(150, 375)
            pasted = Image.open(photo).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
            column, row = position % 4, position // 4
            canvas.paste(
                pasted, (column * 1500 + rng.randint(0, 1500 - side), row * 1333 + rng.randint(0, 1333 - side))
            )
        paths.append(folder / f"IMG_{number:04d}.jpg")
        canvas.save(paths[-1], quality=92)
    return paths


def camera(count: int) -> int:
    """Index-path cost of camera photos: decode, detection (at PHOTOS_DETECT_MAX_SIDE) and crops, per photo."""
    if not LFW.is_dir():
        print(f"needs LFW in {LFW}")
        return 0
    settings = EngineSettings(gallery_layout="photos")
    limit_heap_retention(settings.heap_mmap_threshold_mb)  # as the bot and `engine index` run (0 in the env: glibc's)
    backend = BACKENDS["facenet"](settings)
    backend.load_regions()
    with tempfile.TemporaryDirectory() as folder:
        paths = camera_photos(Path(folder), count)
        backend.gallery_regions([read_image(paths[0], max_bytes=10**8, max_pixels=10**8)])  # warm-up
        decode = detect = crop = 0.0
        faces = 0
        for path in paths:
            started = time.perf_counter()
            image = read_image(path, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
            decoded = time.perf_counter()
            found = backend.photos_detector.detect([image])[0]
            detected = time.perf_counter()
            regions = [backend.crop(image, face) for face in found]
            decode, detect, crop = (
                decode + decoded - started,
                detect + detected - decoded,
                crop + time.perf_counter() - detected,
            )
            faces += len(regions)
    total = decode + detect + crop
    print(
        f"{count} photos of 6000x4000 ({backend.runtime}): {total / count:.2f} s/photo (decode {decode / count:.2f}, "
        f"detect {detect / count:.2f}, crops {crop / count:.2f}), {faces} faces found"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sides", default="640,1280,1600,2048,2560")
    parser.add_argument("--photos", type=int, default=2, help="composed photos per photo size")
    parser.add_argument("--faces", type=int, default=24)
    parser.add_argument("--camera", type=int, default=0, help="issue 21's camera photos instead: how many")
    args = parser.parse_args()
    if args.camera:
        return camera(args.camera)
    settings = EngineSettings()
    gallery = settings.resolved_gallery()
    if not gallery.is_dir() or not settings.facenet_weights.is_file():
        print("needs the sample gallery and the weights: python -m engine models fetch")
        return 0
    base = FaceDetector(
        max_side=settings.detect_max_side,
        min_face_size=20,
        confidence=settings.face_confidence,
        fallback_confidence=settings.face_fallback_confidence,
        retry_padding=settings.face_retry_padding,
    )
    sources = source_faces(base, gallery)
    print(f"{len(sources)} source faces; {args.faces} faces a photo, sizes {SIZES} px, {args.photos} photos per size")
    for size in ((4000, 3000), (6000, 4000)):
        photos = [composed(sources, size, args.faces, seed) for seed in range(args.photos)]
        for side in (int(s) for s in args.sides.split(",")):
            detector = base.sharing(max_side=side, min_face_size=settings.photos_min_face_size)
            detector.detect([photos[0][0]])  # warm-up at this size (graph tracing)
            found, pasted, false, seconds = 0, 0, 0, 0.0
            missed_sizes: list[int] = []
            for image, placed in photos:
                started = time.perf_counter()
                faces = detector.detect([image])[0]
                seconds += time.perf_counter() - started
                matched = set()
                for face in faces:
                    best = max(range(len(placed)), key=lambda i: overlap(face.box, placed[i].box))
                    if overlap(face.box, placed[best].box) >= 0.3:
                        matched.add(best)
                    else:
                        false += 1
                found += len(matched)
                pasted += len(placed)
                missed_sizes += [max(placed[i].box[2:]) for i in range(len(placed)) if i not in matched]
            print(
                f"{size[0]}x{size[1]} at max side {side:5d}: found {found}/{pasted}, false {false}, "
                f"{seconds / len(photos):.2f} s/photo; missed face sizes {sorted(missed_sizes)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
