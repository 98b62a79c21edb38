"""Shared constants and image builders for the engine tests (no mocks: real photos, real bytes)."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "models"
FACENET_WEIGHTS = MODELS_DIR / "facenet_keras.h5"
SAMPLE_GALLERY = REPO_ROOT / "data" / "sample-gallery"
SAMPLE_PEOPLE = ("Ben_Afflek", "Elton_John", "Jerry_Seinfeld", "Madonna", "Mindy_Kaling")
SAMPLE_PHOTOS = 118
FETCH_HINT = "run `python -m engine models fetch` (make test does) to get the FaceNet weights and the sample gallery"

# Photos of the sample gallery with one clear, large, frontal face (MTCNN finds it).
BEN = "Ben_Afflek/httpafilesbiographycomimageuploadcfillcssrgbdprgfacehqwMTENDgMDUODczNDcNTcjpg.jpg"
ELTON = "Elton_John/httpmediapopsugarassetscomfilescbffewltonjpg.jpg"
JERRY = "Jerry_Seinfeld/httpafilesbiographycomimageuploadcfillcssrgbdprgfacehqwMTIwNjANjMMDINzIxNjcjpg.jpg"
MADONNA = "Madonna/httpimagegaladevcmseamadonnaprivatdetektivsquaretopsquarejpgv.jpg"
MINDY = "Mindy_Kaling/httpafilesbiographycomimageuploadcfillcssrgbdprgfacehqwMTIOTcwODQNTUzNjQMzcjpg.jpg"
# Photos of the sample gallery where MTCNN finds no face unless the photo is framed (FACE_RETRY_PADDING):
# a close-up that fills the frame with tinted glasses, and a face at the top edge behind sunglasses.
CLOSE_UP = "Elton_John/httpafilesbiographycomimageuploadcfillcssrgbdprgfacehqwMTEODAOTcxNjcMjczMjkzjpg.jpg"
AT_THE_EDGE = "Elton_John/httpsuploadwikimediaorgwikipediacommonsthumbEltonJohninsjpgpxEltonJohninsjpg.jpg"
CLEAR_FACES = {
    "Ben Afflek": BEN, "Elton John": ELTON, "Jerry Seinfeld": JERRY, "Madonna": MADONNA, "Mindy Kaling": MINDY,
}  # fmt: skip


def sample(relative: str) -> Path:
    return SAMPLE_GALLERY / relative


def person_of(relative: str) -> str:
    return relative.split("/", 1)[0].replace("_", " ")


def copy_photos(gallery: Path, relatives: list[str]) -> list[Path]:
    """Copy sample photos into `gallery`, keeping the <Person>/<file> layout."""
    copied = []
    for relative in relatives:
        target = gallery / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample(relative), target)
        copied.append(target)
    return copied


def copy_enrolled(gallery: Path, people: tuple[str, ...]) -> list[str]:
    """Copy every sample photo of `people` except their clear-face photos (kept back as queries): an open-set gallery."""
    held_out = set(CLEAR_FACES.values())
    enrolled = [
        f"{person}/{photo.name}"
        for person in people
        for photo in sorted((SAMPLE_GALLERY / person).glob("*.jpg"))
        if f"{person}/{photo.name}" not in held_out
    ]
    copy_photos(gallery, enrolled)
    return enrolled


# Vectors computed in other processes, batch shapes or runtimes differ in their last float32 bits (the CPU's
# kernels take other code paths), so they are compared by what matters: their direction.
SAME_VECTOR_COSINE = 0.99999


def assert_same_vectors(
    got: np.ndarray, want: np.ndarray, min_cosine: float = SAME_VECTOR_COSINE, what: str = ""
) -> None:
    """Each row of `got` points where the same row of `want` does: cosine similarity >= `min_cosine`."""
    got, want = np.atleast_2d(np.asarray(got, np.float64)), np.atleast_2d(np.asarray(want, np.float64))
    assert got.shape == want.shape, (what, got.shape, want.shape)
    cosine = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert np.all(cosine >= min_cosine), (what, cosine.min())


def first_photos(person: str, count: int) -> list[str]:
    """The first `count` photos (sorted) of a sample-gallery person, as relative paths."""
    return [f"{person}/{p.name}" for p in sorted((SAMPLE_GALLERY / person).glob("*.jpg"))[:count]]


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient_image(width: int = 320, height: int = 240) -> np.ndarray:
    """A smooth colour gradient: a valid photo with no face in it."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    red = np.broadcast_to(x, (height, width))
    green = np.broadcast_to(y, (height, width))
    blue = (red + green) / 2
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def side_by_side(left: Path, right: Path) -> Image.Image:
    """Two photos pasted next to each other on one canvas (both scaled to the same height)."""
    a = Image.open(left).convert("RGB")
    b = Image.open(right).convert("RGB")
    height = max(a.height, b.height)
    a = a.resize((round(a.width * height / a.height), height))
    b = b.resize((round(b.width * height / b.height), height))
    canvas = Image.new("RGB", (a.width + b.width, height), (128, 128, 128))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    return canvas


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width`×`height` pixels but carries one tiny IDAT: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def bad_image_files() -> dict[str, bytes]:
    """Files a gallery or an upload may hold that are not usable images (name → bytes)."""
    photo = sample(BEN).read_bytes()
    rng = np.random.default_rng(7)
    return {
        "truncated.jpg": photo[: len(photo) // 2],
        "random.jpg": b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "text.jpg": b"this is a text file, renamed to .jpg\n" * 20,
        "empty.jpg": b"",
        "bomb-header.png": png_header_only(30_000, 30_000),  # 900 megapixels declared
    }


def fresh_env(**settings: str) -> dict[str, str]:
    """The environment of a fresh engine process: this one's without any engine setting, then `settings`
    (DATA_DIR=..., MODELS_DIR=...), the repository on PYTHONPATH and TensorFlow's C++ log quiet."""
    from engine.settings import EngineSettings

    env = {k: v for k, v in os.environ.items() if k.lower() not in EngineSettings.model_fields}
    env.update(
        settings,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return env


def run_people_cli(engine, *args: str) -> subprocess.CompletedProcess:
    """`python -m engine people ARGS` in a real process on `engine`'s photos-layout gallery and data."""
    env = fresh_env(
        DATA_DIR=str(engine.settings.data_dir), MODELS_DIR=str(FACENET_WEIGHTS.parent),
        GALLERY_DIR=str(engine.settings.gallery_dir), GALLERY_LAYOUT="photos",
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "engine", "people", *args],
        cwd=engine.settings.data_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
