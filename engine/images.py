"""Image decoding with Pillow: bytes or a path in, an RGB uint8 array out, or a BadImageError."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import BadImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # the only Pillow plugins uploads reach (JPEG opens MPO)
BAND_ROWS = 256  # rows of a large photo handed from Pillow to numpy at once


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "image") -> np.ndarray:
    """Decode `data` into an (H, W, 3) uint8 RGB array with EXIF orientation applied.

    Truncated files, non-images and images over `max_pixels` (decompression bombs)
    raise BadImageError instead of a Pillow exception or a huge allocation.
    """
    if not data:
        raise BadImageError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise BadImageError(f"{name}: the file is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    with image_errors(name, max_pixels), Image.open(io.BytesIO(data), formats=PHOTO_FORMATS) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise BadImageError(
                f"{name}: {width}x{height} pixels is over the limit of {max_pixels / 1e6:.0f} megapixels"
            )
        if getattr(image, "is_animated", False):
            image.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            rgb = upright_rgb(image)
            rgb.load()
        array = _pixels(rgb)
        del rgb  # Pillow's copy goes before the caller's next allocation
    if array.ndim != 3 or min(array.shape[:2]) < 8:
        raise BadImageError(f"{name}: the image is too small ({array.shape[1]}x{array.shape[0]})")
    return array


def upright_rgb(image: Image.Image) -> Image.Image:
    """`image` turned as its EXIF orientation says, in place, and in RGB: no copy of a photo that is already RGB
    (each copy of a 24 Mpx photo is 96 MB and ~0.08 s)."""
    ImageOps.exif_transpose(image, in_place=True)
    return image if image.mode == "RGB" else image.convert("RGB")


def _pixels(rgb: Image.Image) -> np.ndarray:
    """A loaded RGB image as an (H, W, 3) uint8 array. A large photo goes over in bands of rows: numpy's whole-image
    conversion goes through Pillow's tobytes, which holds the pixels twice more (its chunks and their join: 72 MB
    beside Pillow's own 48 MB for a 12 Mpx photo)."""
    width, height = rgb.size
    if height <= 2 * BAND_ROWS:
        return np.asarray(rgb, dtype=np.uint8)
    array = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, BAND_ROWS):
        array[top : top + BAND_ROWS] = np.asarray(rgb.crop((0, top, width, min(height, top + BAND_ROWS))))
    return array


@contextmanager
def image_errors(name: str, max_pixels: int | None = None) -> Iterator[None]:
    """Pillow's ways of failing on a file that is no usable image (unknown format, corrupt or truncated data, a
    decompression bomb, a file that cannot be read), raised in the block as one BadImageError naming `name`."""
    try:
        yield
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow refuses before we see the size when it is over twice its own limit.
        limit = f"the limit of {max_pixels / 1e6:.0f} megapixels" if max_pixels else "Pillow's limit of pixels"
        raise BadImageError(f"{name}: the image is over {limit} ({error})") from error
    except UnidentifiedImageError as error:
        raise BadImageError(f"{name}: not a readable image ({error.__class__.__name__})") from error
    except OSError as error:
        if error.errno is not None:  # the file system's error (gone, no permission), not the data's
            raise BadImageError(f"{name}: cannot read ({error.strerror or error})") from error
        raise BadImageError(f"{name}: the image is corrupt or truncated ({error})") from error
    except (ValueError, SyntaxError) as error:  # corrupt data
        raise BadImageError(f"{name}: the image is corrupt or truncated ({error})") from error


@contextmanager
def open_image(path: str | Path, name: str | None = None) -> Iterator[Image.Image]:
    """A gallery file opened with Pillow for drawing (thumbnails, marked photos, face tiles), in the formats the
    gallery indexes only (PHOTO_FORMATS). A file that is gone, unreadable, of another format, corrupt or a
    decompression bomb raises BadImageError, also when Pillow fails on it inside the block (decoding is lazy)."""
    with image_errors(str(path) if name is None else name), Image.open(path, formats=PHOTO_FORMATS) as image:
        yield image


@contextmanager
def open_reduced(path: str | Path, size: tuple[int, int]) -> Iterator[tuple[Image.Image, float]]:
    """A gallery file (open_image) upright in RGB, a JPEG decoded at 1/2, 1/4 or 1/8 of its size when that is still
    at least `size`, with the scale of its pixels to the file's (a stored box times it is a box of the image). Use
    the image inside the block: it is closed with the file."""
    with open_image(path) as opened:
        width = opened.size[0]
        opened.draft("RGB", size)  # JPEG only
        scale = opened.size[0] / width
        yield upright_rgb(opened), scale


def read_image(path: Path, *, max_bytes: int, max_pixels: int, name: str | None = None) -> np.ndarray:
    """Read and decode one file; unreadable files raise BadImageError naming `name` (default: the path)."""
    name = str(path) if name is None else name
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BadImageError(f"{name}: cannot read ({error.strerror or error})") from error
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, name=name)


def list_gallery_images(gallery: Path, layout: str = "people") -> list[Path]:
    """The gallery's image files, sorted. Names starting with a dot (files or folders) are never listed.

    `people`: one level below `gallery` (one folder per person); `photos`: at any depth.
    """
    gallery = Path(gallery)
    if layout == "people":
        candidates: Iterator[Path] = (path for path in gallery.glob("*/*") if not path.parent.name.startswith("."))
    elif layout == "photos":
        candidates = _walk(gallery)
    else:
        raise ValueError(f"unknown gallery layout {layout!r}")
    return sorted(
        path
        for path in candidates
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def _walk(root: Path) -> Iterator[Path]:
    """Every file under `root`, dot-folders pruned (symbolic links to folders are not followed)."""
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            yield Path(folder) / name


def person_name(path: Path, layout: str = "people") -> str:
    """The person a gallery photo shows: its folder name with `_` as space (people layout); "" in the photos layout,
    where names come only from people named by hand."""
    return path.parent.name.replace("_", " ") if layout == "people" else ""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
