"""What the bot shows: captions, summaries, the numbered-boxes photo and downscaled gallery photos."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
from cachetools import LRUCache
from PIL import Image, ImageDraw, ImageFont

from engine import FaceResult, Match
from engine.images import open_reduced

ALBUM_SIZE = 10  # Telegram's limit of photos per media group
TEXT_LIMIT = 4096  # Telegram's longest message
BOX_COLOURS = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55"]


def caption(face_number: int, match: Match, photo_number: int | None = None, *, closest: bool = False) -> str:
    """An album caption; `photo_number` for a photo of an album (several photos answered together);
    `closest` marks the look-alikes shown for a face that is not in the gallery."""
    prefix = f"Photo {photo_number} · " if photo_number is not None else ""
    if closest:
        return f"{prefix}Face {face_number} · closest #{match.rank} {match.name} · {match.similarity:.2f} · not a match"
    return f"{prefix}Face {face_number} · #{match.rank} {match.name} · {match.similarity:.2f}"


def not_in_gallery(face_number: int, face: FaceResult, faces: int) -> str:
    """Said before the closest faces of an unknown face are shown, so nobody takes them for matches."""
    prefix = f"Face {face_number}: " if faces > 1 else ""
    shown = " The photos that follow are the closest faces in the gallery, not matches." if face.matches else ""
    return f"{prefix}not in the gallery — I don't know this person (score {face.identity.score:.2f}).{shown}"


def chunks(items: list, size: int = ALBUM_SIZE) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def split_text(lines: list[str], limit: int = TEXT_LIMIT) -> list[str]:
    """Lines joined into as few messages as Telegram's length limit allows (a longer line is cut)."""
    parts: list[str] = []
    for line in lines:
        line = line if len(line) <= limit else line[: limit - 1] + "…"
        if parts and len(parts[-1]) + 1 + len(line) <= limit:
            parts[-1] += "\n" + line
        else:
            parts.append(line)
    return parts or ["No face to answer."]


def summary(faces: list[FaceResult]) -> str:
    """One line per face: the engine's open-set answer (engine/search/identity.py), the person named with its score."""
    lines = []
    for number, face in enumerate(faces, start=1):
        prefix = f"Face {number}: " if len(faces) > 1 else ""
        name, score = face.identity.name, face.identity.score
        if name is None:
            lines.append(
                f"{prefix}not in the gallery (no confident match, score {score:.2f}); "
                "the photos shown are only the closest faces."
            )
            continue
        count = sum(match.name == name for match in face.matches)
        lines.append(
            f"{prefix}most likely {name} (score {score:.2f}; {count} of the {len(face.matches)} closest faces)"
        )
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
        self.size = size  # 0: nothing kept
        self._items: LRUCache[tuple[str, int, int], bytes] = LRUCache(maxsize=max(size, 1))
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> bytes:
        """The downscaled JPEG; OSError when the file is gone, BadImageError when it is no image of the gallery's
        formats (engine.images.open_image)."""
        stat = Path(path).stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            data = self._items.get(key)
        if data is None:
            data = self._render(Path(path))
            if self.size > 0:
                with self._lock:
                    self._items[key] = data
        return data

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _render(self, path: Path) -> bytes:
        with open_reduced(path, (self.side, self.side)) as (image, _):
            image.thumbnail((self.side, self.side), Image.Resampling.LANCZOS)  # in place: a new, small core
            return to_jpeg(image)
