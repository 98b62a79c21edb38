"""Gallery edits: add photos of a person (face-checked), list people, remove, rename/merge.

Plain engine code (no Telegram). Every edit writes files under the gallery folder, then makes
searches see it by calling `Engine.build_index` for each model that has an index (an incremental
build: only new/changed files are embedded).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from engine.backends import MODEL_NAMES
from engine.core import Engine
from engine.errors import BadInputError
from engine.images import IMAGE_SUFFIXES
from engine.types import IndexReport

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 64
CROP_MARGIN = 0.8  # context kept around the chosen face when a photo shows several
_NAME = re.compile(r"[^\W\d_][\w'.\- ]*", re.UNICODE)


class NoFaceError(BadInputError):
    """A photo offered for the gallery shows no face."""


class PersonNameError(BadInputError):
    """A person's name that cannot be a gallery folder (path separators, `..`, odd characters)."""


class PersonNotFoundError(BadInputError):
    """No folder in the gallery for this person."""


@dataclass(frozen=True)
class Person:
    name: str
    folder: str
    photos: int


@dataclass(frozen=True)
class AddedPhoto:
    number: int  # position in the request, from 1
    file: str  # gallery-relative path
    faces: int  # faces found; >1: the largest was kept (the saved photo is cropped around it)
    duplicate: bool = False  # the same picture was already in the gallery


@dataclass(frozen=True)
class RefusedPhoto:
    number: int
    reason: str


@dataclass
class AddResult:
    person: Person
    added: list[AddedPhoto] = field(default_factory=list)
    refused: list[RefusedPhoto] = field(default_factory=list)
    reports: list[IndexReport] = field(default_factory=list)


@dataclass
class EditResult:
    """A remove or rename: `person` is the result (the removed one, or the renamed/merged one)."""

    person: Person
    photos: int  # photos removed or moved
    merged: bool = False
    reports: list[IndexReport] = field(default_factory=list)


def check_name(name: str) -> str:
    """The name with single spaces, or PersonNameError. Folder = name with spaces as `_`."""
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise PersonNameError("a person's name is needed, e.g. Firstname Lastname")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise PersonNameError(f"a name may have at most {MAX_NAME_LENGTH} characters")
    if "/" in cleaned or "\\" in cleaned or ".." in cleaned or "_" in cleaned or not _NAME.fullmatch(cleaned):
        raise PersonNameError(
            f"{cleaned!r} can't be a name: use letters, spaces, apostrophes, dots and hyphens, starting with a letter"
        )
    return cleaned


def folder_of(name: str) -> str:
    return check_name(name).replace(" ", "_")


class Gallery:
    """Edits of one gallery folder. Thread-safe, and process-safe through a lock file in DATA_DIR."""

    def __init__(self, engine: Engine, root: Path | None = None):
        self.engine = engine
        self.root = Path(root or engine.settings.resolved_gallery()).resolve()
        self._lock = threading.Lock()
        self._file_lock = FileLock(str(engine.settings.data_dir / "gallery-edit.lock"))

    # ---- reading ---------------------------------------------------------------------------

    def people(self, prefix: str = "") -> list[Person]:
        """People whose name starts with `prefix` (case-insensitive), sorted by name, with photo counts."""
        if not self.root.is_dir():
            return []
        wanted = " ".join(prefix.split()).casefold()
        people = []
        for folder in sorted(self.root.iterdir(), key=lambda p: p.name.casefold()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            name = folder.name.replace("_", " ")
            if name.casefold().startswith(wanted):
                people.append(Person(name=name, folder=folder.name, photos=_count_photos(folder)))
        return people

    def find(self, name: str) -> Person | None:
        """The person of that name (exact folder first, then case-insensitive)."""
        folder = folder_of(name)
        path = self.root / folder
        if not path.is_dir():
            matches = (
                [p for p in self.root.iterdir() if p.is_dir() and p.name.casefold() == folder.casefold()]
                if self.root.is_dir()
                else []
            )
            if len(matches) != 1:
                return None
            path = matches[0]
        return Person(name=path.name.replace("_", " "), folder=path.name, photos=_count_photos(path))

    # ---- edits -----------------------------------------------------------------------------

    def add_photos(self, name: str, photos: list[bytes]) -> AddResult:
        """Check each photo (one face: used; several: the largest, cropped around it; none: refused),
        save it as JPEG in GALLERY/<Name_With_Underscores>/ and index incrementally."""
        folder = folder_of(name)
        if not photos:
            raise BadInputError("no photo to add")
        existing = self.find(name)
        if existing is not None:
            folder = existing.folder
        self.engine.load_networks("facenet")
        accepted: list[tuple[int, np.ndarray, int]] = []
        refused: list[RefusedPhoto] = []
        errors: list[BadInputError] = []
        for number, data in enumerate(photos, start=1):
            try:
                image = self.engine.decode(data, name=f"photo {number}")
                faces = self.engine.find_faces(image)
                if not faces:
                    raise NoFaceError(f"photo {number}: no face found")
            except BadInputError as error:
                errors.append(error)
                refused.append(RefusedPhoto(number, str(error)))
                continue
            if len(faces) > 1:
                image = _crop_around(image, max(faces, key=lambda face: face.area).box)
            accepted.append((number, image, len(faces)))
        if not accepted:  # nothing usable: a typed refusal, nothing written
            raise type(errors[0])("; ".join(str(error) for error in errors))
        result = AddResult(person=Person(name=folder.replace("_", " "), folder=folder, photos=0), refused=refused)
        with self._edit():
            target = self.root / folder
            if accepted:
                target.mkdir(parents=True, exist_ok=True)
            for number, image, face_count in accepted:
                data = _jpeg(image)
                path = target / f"tg_{hashlib.sha256(data).hexdigest()[:20]}.jpg"
                duplicate = path.exists()
                if not duplicate:
                    temporary = path.with_name(f".{path.name}.tmp")
                    temporary.write_bytes(data)
                    temporary.replace(path)
                result.added.append(AddedPhoto(number, path.relative_to(self.root).as_posix(), face_count, duplicate))
            if accepted:
                result.reports = self._reindex()
            result.person = Person(name=result.person.name, folder=folder, photos=_count_photos(target))
        return result

    def remove(self, name: str) -> EditResult:
        """Delete the person's folder and their index entries."""
        with self._edit():
            person = self._existing(name)
            shutil.rmtree(self.root / person.folder)
            return EditResult(person=person, photos=person.photos, reports=self._reindex())

    def rename(self, old: str, new: str) -> EditResult:
        """Rename a person; when `new` already exists, move the photos into that folder (a merge)."""
        new_folder = folder_of(new)
        with self._edit():
            person = self._existing(old)
            source = self.root / person.folder
            target_person = self.find(new)
            if target_person is not None and target_person.folder == person.folder:
                if new_folder == person.folder:
                    raise BadInputError(f"{person.name} is already called that")
                target_person = None  # a change of case only
            if target_person is not None:  # merge
                target = self.root / target_person.folder
                for path in sorted(source.iterdir()):
                    destination = target / path.name
                    counter = 1
                    while destination.exists():
                        destination = target / f"{path.stem}-{counter}{path.suffix}"
                        counter += 1
                    path.rename(destination)
                source.rmdir()
                merged = Person(target_person.name, target_person.folder, _count_photos(target))
                return EditResult(person=merged, photos=person.photos, merged=True, reports=self._reindex())
            if person.folder.casefold() == new_folder.casefold():  # case-only change on any filesystem
                intermediate = source.with_name(f".{source.name}.renaming")
                source.rename(intermediate)
                source = intermediate
            source.rename(self.root / new_folder)
            renamed = Person(new_folder.replace("_", " "), new_folder, person.photos)
            return EditResult(person=renamed, photos=person.photos, reports=self._reindex())

    # ---- helpers ---------------------------------------------------------------------------

    def _existing(self, name: str) -> Person:
        person = self.find(name)
        if person is None:
            raise PersonNotFoundError(f"nobody called {check_name(name)} in the gallery")
        return person

    def _edit(self):
        return _Both(self._lock, self._file_lock)

    def _reindex(self) -> list[IndexReport]:
        """Make searches see the change: an incremental build for each model with an index."""
        reports = []
        for model in MODEL_NAMES:
            if self.engine.index_info(model) is not None:
                reports.append(self.engine.build_index(model, self.root))
        return reports


class _Both:
    def __init__(self, *locks):
        self.locks = locks

    def __enter__(self):
        for lock in self.locks:
            lock.acquire()
        return self

    def __exit__(self, *exc):
        for lock in reversed(self.locks):
            lock.release()


def _count_photos(folder: Path) -> int:
    return sum(
        1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _crop_around(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    pad_x, pad_y = round(w * CROP_MARGIN), round(h * CROP_MARGIN)
    height, width = image.shape[:2]
    return image[max(0, y - pad_y) : min(height, y + h + pad_y), max(0, x - pad_x) : min(width, x + w + pad_x)].copy()


def _jpeg(image: np.ndarray) -> bytes:
    """Re-encoded upright pixels: no EXIF (location, camera) from the sender's file is kept."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
