"""LFW development data for the accuracy benchmarks, with detections and embeddings cached.

Detection runs once per photo kind (every face MTCNN finds at confidence >= 0.5, with its
landmarks) and is kept in DATA_DIR/cache/; each crop variant is embedded once (plain, and
mirrored when asked) from those detections and cached too, so trying a setting costs only its embedding.
Usage (fills the caches): python benchmarks/lfw_cache.py [--kinds deepfunneled,original_150px] [--variants ...]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from engine.images import list_gallery_images, person_name, read_image  # noqa: E402
from engine.models.align import face_crop
from engine.models.mtcnn import FaceDetector  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402
from engine.types import DetectedFace  # noqa: E402

LFW = REPO.parent / "shared" / "data" / "lfw"
KINDS = ("deepfunneled", "original_150px")
CACHE_CONFIDENCE = 0.5  # detections are cached down to this; the engine's own threshold is applied on reading
# Crop variants: (margin, how the crop is made). "rotate" is the engine's eye-level rotation, "none" a plain
# box crop, "template" the five-point similarity transform to the canonical face template.
VARIANTS = {
    "rotate-0.1": (0.1, "rotate"),
    "none-0.1": (0.1, "none"),
    "template-0.1": (0.1, "template"),
    "template-0.2": (0.2, "template"),
}


def lfw_root() -> Path | None:
    return LFW if (LFW / "deepfunneled").is_dir() else None


def cache_dir() -> Path:
    path = EngineSettings().data_dir / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Detections:
    kind: str
    images: list[str]  # relative paths, sorted
    people: list[str]
    faces: list[list[DetectedFace]]  # per image, most prominent first, confidence >= CACHE_CONFIDENCE

    def main_face(self, i: int, confidence: float = 0.9, fallback: float = 1.0) -> DetectedFace | None:
        """The most prominent face at `confidence`; else, as the engine does, the most confident from `fallback` on."""
        for face in self.faces[i]:
            if face.confidence >= confidence:
                return face
        weak = [face for face in self.faces[i] if face.confidence >= fallback]
        return max(weak, key=lambda face: face.confidence) if weak else None


class _Unpickler(pickle.Unpickler):
    """Caches written when this file ran as a script name the class `__main__.Detections`."""

    def find_class(self, module, name):
        if name == "Detections":
            return Detections
        return super().find_class(module, name)


def load_detections(kind: str, *, min_face_size: int = 20, verbose: bool = True) -> Detections:
    """Every image of `kind` with its faces; detected once and cached."""
    path = cache_dir() / f"lfw-{kind}-detections-min{min_face_size}.pkl"
    if path.is_file():
        with path.open("rb") as file:
            return _Unpickler(file).load()
    gallery = LFW / kind
    paths = list_gallery_images(gallery)
    settings = EngineSettings()
    detector = FaceDetector(
        max_side=settings.detect_max_side, min_face_size=min_face_size, confidence=CACHE_CONFIDENCE, batch_size=16
    )
    detector.load()
    faces: list[list[DetectedFace]] = []
    started = time.perf_counter()
    for start in range(0, len(paths), 64):
        images = [read_image(p, max_bytes=10**8, max_pixels=10**8) for p in paths[start : start + 64]]
        faces.extend(detector.detect(images))
        if verbose and start % 1024 == 0:
            print(
                f"  {kind}: detected {start + len(images)}/{len(paths)} in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    relative = [p.relative_to(gallery).as_posix() for p in paths]
    detections = Detections(kind=kind, images=relative, people=[person_name(Path(r)) for r in relative], faces=faces)
    with path.open("wb") as file:
        pickle.dump(detections, file)
    if verbose:
        print(f"{kind}: {len(paths)} images detected in {time.perf_counter() - started:.0f} s", flush=True)
    return detections


def make_embedder():
    """FaceNet for the accuracy benchmarks: large batches, no XLA (it compiles per batch size)."""
    from engine.models.facenet_keras import FaceNetEmbedder

    return FaceNetEmbedder(EngineSettings().facenet_weights, batch_size=64, xla=False)


def make_crop(image: np.ndarray, face: DetectedFace, variant: str) -> np.ndarray:
    margin, alignment = VARIANTS[variant]
    return face_crop(image, face, size=160, margin=margin, alignment=alignment)


def load_embeddings(
    detections: Detections,
    variant: str,
    embedder,
    *,
    confidence: float = 0.9,
    mirrored: bool = False,
    verbose: bool = True,
    fallback: float = 1.0,
    padding: float = 0.0,
):
    """(plain, mirrored) L2-normalised embeddings of each image's main face, NaN rows where none; cached.

    The mirrored ones (for flip-averaged queries, as search makes them) double the work: only with
    `mirrored`, else whatever the cache holds (None when it holds none). With `fallback` below
    `confidence`, photos without a face at `confidence` get their most confident face from `fallback` on
    (the engine's FACE_FALLBACK_CONFIDENCE); with `padding`, those photos are first detected again as the
    engine's last, padded pass does (FACE_RETRY_PADDING). Only those few are embedded on top of the cached arrays.
    """
    paths = {
        side: cache_dir() / f"lfw-{detections.kind}-{variant}-c{confidence}-{side}.npy"
        for side in ("plain", "mirrored")
    }
    wanted = ["plain", "mirrored"] if mirrored else ["plain"]
    missing = [side for side in wanted if not paths[side].is_file()]
    if missing:
        _embed(detections, variant, embedder, confidence, missing, paths, verbose)
    plain, flipped = (np.load(paths[side]) if paths[side].is_file() else None for side in ("plain", "mirrored"))
    if fallback < confidence or padding > 0:
        plain, flipped = _without_face(detections, variant, embedder, confidence, fallback, padding, plain, flipped)
    return plain, flipped


def _without_face(detections, variant, embedder, confidence, fallback, padding, plain, flipped):
    """Fill the rows of photos with no face at `confidence` as the engine does: the padded pass, then the fallback
    face (cached per fallback and padding); rows where neither finds a face stay NaN."""
    suffix = f"-p{padding}" if padding > 0 else ""
    path = cache_dir() / f"lfw-{detections.kind}-{variant}-c{confidence}-faceless-f{fallback}{suffix}.npz"
    without = [i for i in range(len(detections.images)) if detections.main_face(i, confidence) is None]
    if path.is_file():
        cached = np.load(path)
        rows, extra_plain, extra_flipped = cached["rows"].tolist(), cached["plain"], cached["mirrored"]
    else:
        embedder = embedder if embedder is not None else make_embedder()
        detector = None
        if padding > 0:
            detector = FaceDetector(
                max_side=EngineSettings().detect_max_side, min_face_size=20, confidence=confidence,
                fallback_confidence=fallback, retry_padding=padding,
            )  # fmt: skip
            detector.load()
        gallery = LFW / detections.kind
        rows, crops = [], []
        for i in without:
            image = read_image(gallery / detections.images[i], max_bytes=10**8, max_pixels=10**8)
            if detector is not None:
                faces = detector.detect([image])[0]
                face = faces[0] if faces else None
            else:
                face = detections.main_face(i, confidence, fallback)
            if face is not None:
                rows.append(i)
                crops.append(make_crop(image, face, variant))
        extra_plain = extra_flipped = np.zeros((0, 128), np.float32)
        if crops:
            batch = np.stack(crops)
            extra_plain, extra_flipped = embedder.embed(batch), embedder.embed(batch[:, :, ::-1, :].copy())
        np.savez(path, rows=np.array(rows, dtype=np.int64), plain=extra_plain, mirrored=extra_flipped)
    plain = plain.copy()
    plain[rows] = extra_plain
    if flipped is not None:
        flipped = flipped.copy()
        flipped[rows] = extra_flipped
    return plain, flipped


def query_vectors(plain: np.ndarray, mirrored: np.ndarray | None) -> np.ndarray:
    """Queries as search makes them (flip-averaged) when the mirrored embeddings are cached, else plain."""
    if mirrored is None:
        return plain
    from engine.search.vectors import l2_normalize

    return l2_normalize(plain + mirrored)


def _embed(detections, variant, embedder, confidence, sides, paths, verbose) -> None:
    gallery = LFW / detections.kind
    n = len(detections.images)
    out = {side: np.full((n, 128), np.nan, np.float32) for side in sides}
    started = time.perf_counter()
    for start in range(0, n, 256):
        rows, crops = [], []
        for i in range(start, min(n, start + 256)):
            face = detections.main_face(i, confidence)
            if face is None:
                continue
            image = read_image(gallery / detections.images[i], max_bytes=10**8, max_pixels=10**8)
            rows.append(i)
            crops.append(make_crop(image, face, variant))
        if crops:
            batch = np.stack(crops)
            if "plain" in out:
                out["plain"][rows] = embedder.embed(batch)
            if "mirrored" in out:
                out["mirrored"][rows] = embedder.embed(batch[:, :, ::-1, :].copy())
        if verbose and start % 2048 == 0:
            print(
                f"  {detections.kind} {variant} {sides}: {start}/{n} in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    for side, array in out.items():
        np.save(paths[side], array)
    if verbose:
        print(
            f"{detections.kind} {variant} {sides}: {n} images embedded in {time.perf_counter() - started:.0f} s",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--variants", default="", help="comma-separated crop variants to embed (default: none)")
    parser.add_argument("--mirrored", action="store_true", help="also embed mirrored crops (flip-averaged queries)")
    args = parser.parse_args()
    if lfw_root() is None:
        print(f"{LFW} not found: the LFW benchmarks need ../shared")
        return 0
    kinds = [k for k in args.kinds.split(",") if k]
    detections = {kind: load_detections(kind) for kind in kinds}
    variants = [v for v in args.variants.split(",") if v]
    if variants:
        # one variant at a time over the kinds given, in the order given
        embedder = make_embedder()
        for variant in variants:
            for kind in kinds:
                load_embeddings(detections[kind], variant, embedder, mirrored=args.mirrored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
