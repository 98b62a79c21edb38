"""Composite group photos from single-face photos: test galleries and the event benchmark (no new data needed).

`paste_faces` places face crops (a face's box widened by a context margin) on a canvas at chosen face
sizes, over a background made from a heavily blurred photo (no face survives the blur); it returns
where each face went, so a detected face can be matched back to the person pasted there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

CONTEXT = 0.9  # share of the face box added on each side of a pasted crop (hair, shoulders)


@dataclass(frozen=True)
class Pasted:
    label: str  # who (a person's name, or any tag)
    box: tuple[int, int, int, int]  # the face's box on the canvas (x, y, w, h), from the source face's box


def background(photo: np.ndarray, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A canvas of `size` (width, height) from a blurred, stretched photo plus a little noise: no face in it."""
    width, height = size
    small = Image.fromarray(photo).resize((max(8, width // 40), max(8, height // 40)), Image.Resampling.BILINEAR)
    blurred = small.filter(ImageFilter.GaussianBlur(3)).resize((width, height), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(blurred, np.float32) + noise, 0, 255).astype(np.uint8))


def face_crop_for_paste(
    photo: np.ndarray, box: tuple[int, int, int, int], face_size: int
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The face with context, scaled so its box's longer side is `face_size`; and the face's box inside the crop."""
    x, y, w, h = box
    pad_x, pad_y = round(w * CONTEXT), round(h * CONTEXT)
    height, width = photo.shape[:2]
    left, top = max(0, x - pad_x), max(0, y - pad_y)
    right, bottom = min(width, x + w + pad_x), min(height, y + h + pad_y)
    crop = Image.fromarray(photo[top:bottom, left:right])
    scale = face_size / max(w, h)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    face = (round((x - left) * scale), round((y - top) * scale), round(w * scale), round(h * scale))
    return crop.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC), face


def paste_faces(
    canvas: Image.Image, faces: list[tuple[str, np.ndarray, tuple[int, int, int, int], int]], seed: int = 0
) -> list[Pasted]:
    """Paste each (label, photo, face box, face size) on `canvas` (in place) on a grid with jitter, without overlap
    of the faces' crops. Returns where each face is."""
    rng = np.random.default_rng(seed)
    count = len(faces)
    columns = int(np.ceil(np.sqrt(count * canvas.width / canvas.height)))
    rows = int(np.ceil(count / columns))
    cell_w, cell_h = canvas.width // columns, canvas.height // rows
    placed = []
    for number, (label, photo, box, size) in enumerate(faces):
        crop, face = face_crop_for_paste(photo, box, size)
        if crop.width > cell_w or crop.height > cell_h:  # keep crops inside their cell
            factor = min(cell_w / crop.width, cell_h / crop.height)
            crop, face = face_crop_for_paste(photo, box, max(12, int(size * factor)))
        column, row = number % columns, number // columns
        x0 = column * cell_w + int(rng.integers(0, max(1, cell_w - crop.width + 1)))
        y0 = row * cell_h + int(rng.integers(0, max(1, cell_h - crop.height + 1)))
        canvas.paste(crop, (x0, y0))
        placed.append(Pasted(label, (x0 + face[0], y0 + face[1], face[2], face[3])))
    return placed


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0
