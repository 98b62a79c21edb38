"""What the bot shows: captions, summaries, the numbered-boxes photo and downscaled gallery photos."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from engine import FaceResult, Match

ALBUM_SIZE = 10  # Telegram's limit of photos per media group
BOX_COLOURS = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55"]


def caption(face_number: int, match: Match, photo_number: int | None = None) -> str:
    """`photo_number` for a photo of an album (several photos answered together)."""
    prefix = f"Photo {photo_number} · " if photo_number is not None else ""
    return f"{prefix}Face {face_number} · #{match.rank} {match.name} · {match.similarity:.2f}"


def chunks(items: list, size: int = ALBUM_SIZE) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def summary(faces: list[FaceResult], threshold: float) -> str:
    """One line per face: the likeliest people (best similarity, how many of the k matches), or no confident match."""
    lines = []
    for number, face in enumerate(faces, start=1):
        prefix = f"Face {number}: " if len(faces) > 1 else ""
        people: dict[str, tuple[float, int]] = {}
        for match in face.matches:
            best, count = people.get(match.name, (-1.0, 0))
            people[match.name] = (max(best, match.similarity), count + 1)
        confident = sorted(
            ((name, best, count) for name, (best, count) in people.items() if best >= threshold),
            key=lambda item: (-item[1], -item[2]),
        )
        if not confident:
            best_any = max((m.similarity for m in face.matches), default=None)
            detail = f" (best similarity {best_any:.2f}, threshold {threshold:.2f})" if best_any is not None else ""
            lines.append(f"{prefix}no confident match{detail} — this person is probably not in the gallery.")
            continue
        k = len(face.matches)
        described = ", ".join(f"{name} ({best:.2f}, {count} of {k})" for name, best, count in confident[:3])
        lines.append(f"{prefix}most likely {described}")
    return "\n".join(lines)


def draw_boxes(pixels: np.ndarray, boxes: list[tuple[int, int, int, int]], max_side: int = 1280) -> bytes:
    """The photo (the engine's decoded RGB array) with a numbered rectangle on each face, as JPEG."""
    image = Image.fromarray(pixels)
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 250))
    font_size = max(14, round(max(image.size) / 22))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for number, (x, y, w, h) in enumerate(boxes, start=1):
        colour = BOX_COLOURS[(number - 1) % len(BOX_COLOURS)]
        x0, y0, x1, y1 = (round(v * scale) for v in (x, y, x + w, y + h))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        label = str(number)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tx, ty = x0, max(0, y0 - (bottom - top) - 2 * width)
        draw.rectangle((tx, ty, tx + right - left + 2 * width, ty + bottom - top + 2 * width), fill=colour)
        draw.text((tx + width - left, ty + width - top), label, fill="white", font=font)
    return to_jpeg(image)


def to_jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


class ThumbnailCache:
    """Gallery photos downscaled to `side` (longest side) as JPEG, kept per path and file version. Thread-safe."""

    def __init__(self, side: int = 512, size: int = 512):
        self.side = side
        self.size = size
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> bytes:
        stat = Path(path).stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = self._render(Path(path))
        with self._lock:
            if self.size:
                self._items[key] = data
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return data

    def _render(self, path: Path) -> bytes:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        image.thumbnail((self.side, self.side), Image.Resampling.LANCZOS)
        return to_jpeg(image)
