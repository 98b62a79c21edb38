"""Aligned face crops: the square crop around a detected face that the embedder sees (rotated, or mapped by its
five landmarks onto FACE_TEMPLATE), shared by every face model."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from engine.types import DetectedFace


def crop_face(image: np.ndarray, face: DetectedFace, *, size: int, margin: float, align: bool) -> np.ndarray:
    """A square `size`×`size` crop around the face with `margin`, rotated so the eyes are level if `align`."""
    x, y, w, h = face.box
    side = max(w, h) * (1.0 + margin)
    center_x, center_y = x + w / 2, y + h / 2
    angle = 0.0
    if align:
        (left_x, left_y), (right_x, right_y) = face.landmarks[0], face.landmarks[1]
        angle = math.atan2(right_y - left_y, right_x - left_x)
    step = side / size
    cos, sin = math.cos(angle) * step, math.sin(angle) * step
    half = size / 2
    # Output pixel (u, v) samples the source at centre + R(angle) · ((u, v) − half) · step.
    coefficients = (
        cos, -sin, center_x - cos * half + sin * half,
        sin, cos, center_y - sin * half - cos * half,
    )  # fmt: skip
    return affine_crop(image, size, coefficients)


def affine_crop(image: np.ndarray, size: int, coefficients: tuple[float, ...]) -> np.ndarray:
    """Pillow's bilinear AFFINE transform of `image` to `size`×`size` (output pixel → source pixel `coefficients`),
    made on only the part of the photo it reads: handing Pillow a whole 24 Mpx photo copied it (96 MB, ~30 ms) for
    each face. The part is the sampled area plus 3 pixels, cut only at the photo's own edges, so the pixels are
    the same as from the whole photo."""
    a, b, c, d, e, f = coefficients
    corners = [(u, v) for u in (0, size) for v in (0, size)]
    xs = [a * u + b * v + c for u, v in corners]
    ys = [d * u + e * v + f for u, v in corners]
    height, width = image.shape[:2]
    left, top = max(0, math.floor(min(xs)) - 3), max(0, math.floor(min(ys)) - 3)
    right, bottom = min(width, math.ceil(max(xs)) + 3), min(height, math.ceil(max(ys)) + 3)
    if right - left < 2 or bottom - top < 2:  # (nearly) all outside the photo: Pillow's own edge handling
        left, top, right, bottom = 0, 0, width, height
    part = Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))
    shifted = (a, b, c - left, d, e, f - top)
    crop = part.transform((size, size), Image.Transform.AFFINE, shifted, resample=Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.uint8)


# Where MTCNN's five landmarks sit, on average, in a square box crop (the crop FaceNet was trained on):
# offsets from the box centre as a share of the box side: the mean over the LFW development photos
# (deep-funneled, 8,285 faces), made left-right symmetric.
# `template_crop` maps each face's landmarks onto these by a similarity transform (rotation, scale and
# shift), so every face has the same eye/nose/mouth layout whatever its pose in the photo.
FACE_TEMPLATE = np.array(
    [
        [-0.1674, -0.1173],  # left eye
        [0.1674, -0.1173],  # right eye
        [0.0, 0.0799],  # nose
        [-0.1482, 0.2523],  # mouth left
        [0.1482, 0.2523],  # mouth right
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares (p, q, tx, ty) with target ≈ [[p, -q], [q, p]] · source + (tx, ty)."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target):
        rows.append((x, -y, 1.0, 0.0))
        values.append(u)
        rows.append((y, x, 0.0, 1.0))
        values.append(v)
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(values), rcond=None)
    p, q, tx, ty = (float(value) for value in solution)
    return p, q, tx, ty


def template_crop(image: np.ndarray, face: DetectedFace, *, size: int, margin: float) -> np.ndarray:
    """A `size`×`size` crop where the five landmarks land on `FACE_TEMPLATE` (scaled for `margin`)."""
    target = size / 2 + FACE_TEMPLATE * (size / (1.0 + margin))
    # The transform maps output pixels to source pixels, which is what Pillow's AFFINE takes.
    p, q, tx, ty = similarity_transform(target, face.landmarks.astype(np.float64))
    return affine_crop(image, size, (p, -q, tx, q, p, ty))


def face_crop(image: np.ndarray, face: DetectedFace, *, size: int, margin: float, alignment: str) -> np.ndarray:
    """The crop the embedder sees: "template" (five-point similarity transform), "rotate" (eyes level) or "none"."""
    if alignment == "template":
        return template_crop(image, face, size=size, margin=margin)
    return crop_face(image, face, size=size, margin=margin, align=alignment == "rotate")
