"""Gallery edits: add photos of a person (face-checked), list people, remove, rename/merge.

Plain engine code (no Telegram). Every edit writes files under the gallery folder, then makes
searches see it by calling `Engine.build_index` for each model that has an index (an incremental
build: only new/changed files are embedded).

Crash safety: a change of case only (`X` to `x`) takes two folder renames, through a hidden
`.renaming~<new folder>` (case-insensitive filesystems cannot rename `X` to `x` directly). A
crash between the two leaves the person in that hidden folder, which no listing or index sees;
every edit (and `Gallery.recover`, which the bot and `python -m engine index` call when they
start) first finishes such renames under the edit lock, and undoes the leftovers of older
versions (`.<old folder>.renaming`, which did not record the new name). A merge moves the photos
out of the same hidden folder (named for the person merged into), and a removal goes through a
hidden `.removing~<folder>` deleted last, so either finishes after a crash too. See `recover` for
what other edits can leave behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock, Timeout
from PIL import Image

from engine.backends import FACE_MODELS, MODEL_NAMES
from engine.errors import BadInputError, EngineError, FaceNamedError
from engine.images import IMAGE_SUFFIXES, list_gallery_images
from engine.types import IndexReport, PersonRef

if TYPE_CHECKING:  # the engine is handed in: indexing never imports engine.core at run time
    from engine.core import Engine

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 64
MAX_NAME_BYTES = 128  # a folder name is at most 255 bytes on common filesystems; names stay well under
CROP_MARGIN = 0.8  # context kept around the chosen face when a photo shows several
# a name once its combining marks are set aside (`_marks_set_aside`): a letter first, then letters, digits,
# apostrophes, dots, hyphens and spaces
_NAME = re.compile(r"[^\W\d_][\w'.\- ]*", re.UNICODE)
RENAMING = ".renaming~"  # a folder mid-way through a case-only rename or a merge: `.renaming~<new folder>`
REMOVING = ".removing~"  # a person's folder mid-way through its removal: `.removing~<folder>`
_OLD_RENAMING = re.compile(r"\.(?P<folder>.+)\.renaming")  # older versions' `.<old folder>.renaming`
PEOPLE_MODEL = FACE_MODELS[0]  # the photos layout's persons (named by `add_photos`) are this model's registry


class NoFaceError(BadInputError):
    """A photo offered for the gallery shows no face."""


class PersonNameError(BadInputError):
    """A person's name that cannot be a gallery folder (path separators, `..`, odd characters)."""


class PersonNotFoundError(BadInputError):
    """No folder in the gallery for this person."""


class PhotosLayoutError(BadInputError):
    """A folder edit (`remove`, `rename`) asked of a photos-layout gallery, where folders are not persons: refused."""


@dataclass(frozen=True)
class PersonFolder:
    """A person of the people layout as the gallery holds them: their folder and its photo count (not the people
    registry's `engine.people.Person`, a clustered person of indexed faces)."""

    name: str
    folder: str
    photos: int


@dataclass(frozen=True)
class AddedPhoto:
    number: int  # position in the request, from 1
    file: str  # gallery-relative path
    faces: int  # faces found; >1: the largest was kept (the saved photo is cropped around it)
    duplicate: bool = False  # the same picture was already in the gallery
    # the photos layout: the person its (largest) face belongs to now, named as asked; None: not named, and why
    person: PersonRef | None = None
    not_named: str | None = None
    owner: PersonRef | None = None  # not named because the face is already this other named person's


@dataclass(frozen=True)
class RefusedPhoto:
    number: int
    reason: str


@dataclass(frozen=True)
class NamedPerson:
    """The photos layout: the person of the people registry called by the name `add_photos` was given."""

    id: int
    name: str
    photos: int  # gallery photos the person appears in (the added ones and every other)


@dataclass
class AddResult:
    person: PersonFolder  # the folder the photos were saved in
    added: list[AddedPhoto] = field(default_factory=list)
    refused: list[RefusedPhoto] = field(default_factory=list)
    reports: list[IndexReport] = field(default_factory=list)
    named: NamedPerson | None = None  # the photos layout: the person called by that name after the add


@dataclass(frozen=True)
class RecoveredRename:
    """A rename a crash interrupted, put right by the next edit (or `Gallery.recover`)."""

    leftover: str  # the hidden folder that held the person's photos
    person: PersonFolder  # where they are now
    finished: bool  # True: renamed to the new name; False: an older version's leftover, back under the old name
    merged: bool = False  # a folder of that name existed meanwhile: the photos were moved into it


@dataclass
class EditResult:
    """A remove or rename: `person` is the result (the removed one, or the renamed/merged one)."""

    person: PersonFolder
    photos: int  # photos removed or moved
    merged: bool = False
    reports: list[IndexReport] = field(default_factory=list)
    emptied: bool = False  # a removal of the last person: no photo is left, the indexes are empty


def check_name(name: str) -> str:
    """The name NFKC-normalised (look-alike forms of one name are one person) with single spaces, or
    PersonNameError. Folder = name with spaces as `_`."""
    cleaned = " ".join(unicodedata.normalize("NFKC", str(name)).split())
    if not cleaned:
        raise PersonNameError("a person's name is needed, e.g. Firstname Lastname")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise PersonNameError(f"a name may have at most {MAX_NAME_LENGTH} characters")
    if len(cleaned.encode()) > MAX_NAME_BYTES:
        raise PersonNameError(
            f"a name may take at most {MAX_NAME_BYTES} bytes (UTF-8); that one takes {len(cleaned.encode())}"
        )
    base = _marks_set_aside(cleaned)
    path_like = "/" in cleaned or "\\" in cleaned or ".." in cleaned or "_" in cleaned
    if path_like or base is None or not _NAME.fullmatch(base):
        raise PersonNameError(
            f"{cleaned!r} can't be a name: use letters (with their accents and marks), spaces, apostrophes, dots "
            "and hyphens, starting with a letter"
        )
    return cleaned


def _marks_set_aside(text: str) -> str | None:
    """`text` without its combining marks (Unicode category M: Devanagari vowel signs and viramas, Thai tone marks,
    accents NFKC leaves uncomposed), each of which must sit on a letter (or on another mark on one); None where one
    does not (a mark first, or on a space, a digit or punctuation)."""
    kept: list[str] = []
    for char in text:
        if not unicodedata.category(char).startswith("M"):
            kept.append(char)
        elif not kept or not kept[-1].isalpha():
            return None
    return "".join(kept)


def folder_of(name: str) -> str:
    return check_name(name).replace(" ", "_")


class Gallery:
    """Edits of one gallery folder. Thread-safe, and process-safe through a lock file in DATA_DIR."""

    def __init__(self, engine: Engine, root: Path | None = None):
        self.engine = engine
        self.root = Path(root or engine.settings.resolved_gallery()).resolve()
        self._lock = threading.Lock()
        self._file_lock = FileLock(str(engine.settings.data_dir / "gallery-edit.lock"))
        # present from an edit's first change on disk until its index run ends: left by a crash in between
        self._unindexed = engine.settings.data_dir / "gallery-unindexed"
        # the photos layout's /add: the name and the added files, from before its index run until they are named
        self._unnamed = engine.settings.data_dir / "gallery-unnamed.json"

    # ---- reading ---------------------------------------------------------------------------

    def people(self, prefix: str = "") -> list[PersonFolder]:
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
                people.append(PersonFolder(name=name, folder=folder.name, photos=_count_photos(folder)))
        return people

    def find(self, name: str) -> PersonFolder | None:
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
        return PersonFolder(name=path.name.replace("_", " "), folder=path.name, photos=_count_photos(path))

    # ---- edits -----------------------------------------------------------------------------

    def add_photos(self, name: str, photos: Iterable[bytes]) -> AddResult:
        """Check each photo (one face: used; several: the largest, cropped around it; none: refused),
        save it as JPEG in GALLERY/<Name_With_Underscores>/ and index incrementally.

        `photos` may be any iterable (a generator downloading each when asked): they are taken one at a time,
        each decoded, checked and saved before the next is taken, so at most one decoded photo is held. Nothing
        usable (or an error from `photos` or the engine part-way): nothing of this add is left in the gallery.

        The photos layout (where that folder names nobody): then each saved photo's largest indexed face is said
        to be `name`'s in the people registry (`PeopleRegistry.name_face`): its person is named, or it joins the
        person of that name; a face that is already another named person's stays theirs (`AddedPhoto.not_named`
        says so, the photo stays indexed)."""
        folder = folder_of(name)
        existing = self.find(name)
        if existing is not None:
            folder = existing.folder
        self.engine.load_face_finder()
        result = AddResult(person=PersonFolder(name=folder.replace("_", " "), folder=folder, photos=0))
        with self._edit():
            target = self.root / folder
            errors = self._save_photos(photos, target, result)
            if not result.added:  # nothing usable: a typed refusal, nothing written
                if not errors:
                    raise BadInputError("no photo to add")
                raise type(errors[0])("; ".join(str(error) for error in errors))
            naming = self.engine.settings.gallery_layout == "photos"
            if naming:  # a crash from here until they are named: the next edit or `recover` names them
                pending = {"name": name, "files": [added.file for added in result.added]}
                _write_whole(self._unnamed, json.dumps(pending).encode())
            result.reports = self._reindex()
            if naming:
                self._name_faces(name, result)
                self._unnamed.unlink(missing_ok=True)
            result.person = PersonFolder(name=result.person.name, folder=folder, photos=_count_photos(target))
        return result

    def _save_photos(self, photos: Iterable[bytes], target: Path, result: AddResult) -> list[BadInputError]:
        """`add_photos`' loop (edit lock held): each photo taken, checked and saved into `target` (made with the
        first) before the next is taken; `result.added` and `result.refused` filled, the refusals' errors returned.
        An exception part-way takes back what this loop wrote (and the folder and the unindexed mark it made)."""
        errors: list[BadInputError] = []
        written: list[Path] = []
        made_folder = marked = False
        try:
            for number, data in enumerate(photos, start=1):
                try:
                    jpeg, face_count = self._checked_jpeg(data, number)
                except BadInputError as error:
                    errors.append(error)
                    result.refused.append(RefusedPhoto(number, str(error)))
                    continue
                if not result.added:  # the first usable photo: the gallery is about to change
                    marked = not self._unindexed.exists()
                    self._changing()
                    made_folder = not target.is_dir()
                    target.mkdir(parents=True, exist_ok=True)
                path = target / f"tg_{hashlib.sha256(jpeg).hexdigest()[:20]}.jpg"
                duplicate = path.exists()
                if not duplicate:
                    _write_whole(path, jpeg)
                    written.append(path)
                result.added.append(AddedPhoto(number, path.relative_to(self.root).as_posix(), face_count, duplicate))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            if made_folder and not any(target.iterdir()):
                target.rmdir()
            if marked:
                self._unindexed.unlink(missing_ok=True)
            raise
        return errors

    def _checked_jpeg(self, data: bytes, number: int) -> tuple[bytes, int]:
        """One offered photo as the JPEG to save (cropped around its largest face when it shows several) and its
        number of faces, or BadInputError (unreadable, no face). Its decoded pixels are let go on return."""
        image = self.engine.decode(data, name=f"photo {number}")
        faces = self.engine.find_faces(image)
        if not faces:
            raise NoFaceError(f"photo {number}: no face found")
        if len(faces) > 1:
            image = _crop_around(image, max(faces, key=lambda face: face.area).box)
        return _jpeg(image), len(faces)

    def remove(self, name: str) -> EditResult:
        """Delete the person's folder and their index entries.

        The folder first becomes a hidden `.removing~<folder>` (gone from listings and index runs at once), then the
        index forgets its faces, the stores' files drop their vectors, and the photos are deleted last: a crash
        anywhere on the way leaves that hidden folder, and the next edit (or `recover`) finishes the removal. The
        last person's removal empties the indexes (`EditResult.emptied`).

        The photos layout has no person folders (a folder there is an event's, its photos may lie in subfolders, and
        persons are found by clustering): refused with PhotosLayoutError, nothing touched."""
        self._refuse_in_photos_layout("remove")
        with self._edit():
            person = self._existing(name)
            self._changing()
            hidden = self.root / f"{REMOVING}{person.folder}"
            shutil.rmtree(hidden, ignore_errors=True)  # an older removal's that could not be finished: redone here
            (self.root / person.folder).rename(hidden)
            reports = self._reindex()
            self._purge_removed()
            shutil.rmtree(hidden)
            emptied = not list_gallery_images(self.root, self.engine.settings.gallery_layout)
            return EditResult(person=person, photos=person.photos, reports=reports, emptied=emptied)

    def rename(self, old: str, new: str) -> EditResult:
        """Rename a person; when `new` already exists, move the photos into that folder (a merge). The photos layout:
        refused (PhotosLayoutError), as `remove` is."""
        self._refuse_in_photos_layout("rename")
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
                self._changing()
                # through the hidden rename folder named for the target: after a crash mid-move, the next edit
                # (or `recover`) moves the rest, as for an interrupted rename into a name that exists
                hidden = self.root / f"{RENAMING}{target_person.folder}"
                source.rename(hidden)
                _move_photos(hidden, target)
                merged = PersonFolder(target_person.name, target_person.folder, _count_photos(target))
                return EditResult(person=merged, photos=person.photos, merged=True, reports=self._reindex())
            self._changing()
            if person.folder.casefold() == new_folder.casefold():  # case-only change on any filesystem
                # through a hidden name that holds the new one: after a crash here, the next edit finishes it
                intermediate = self.root / f"{RENAMING}{new_folder}"
                source.rename(intermediate)
                source = intermediate
            source.rename(self.root / new_folder)
            renamed = PersonFolder(new_folder.replace("_", " "), new_folder, person.photos)
            return EditResult(person=renamed, photos=person.photos, reports=self._reindex())

    def recover(self, timeout: float | None = None) -> list[RecoveredRename]:
        """Put right what a crash left mid-edit, then reindex if anything changed. Every edit does this first;
        call it when a process starts so that searches and listings see those people before the next edit.

        What it puts right: a case-only rename interrupted between its two folder renames (finished; an
        older version's leftover is undone), and an edit whose changes reached the disk but not the index
        (DATA_DIR/gallery-unindexed, set before an edit's first change and cleared by its index run: the
        changes are indexed), and a photos-layout add interrupted after its index run but before its faces were
        named (DATA_DIR/gallery-unnamed.json: they are named as the add asked), a merge interrupted mid-move (the
        rest of the photos moved) and a removal interrupted anywhere (its faces out of the indexes and the stores'
        files, its photos deleted). What it need not: an interrupted add leaves a hidden `.tg_*.jpg.tmp` file,
        never listed nor indexed. `timeout`: seconds to wait for the edit lock (None: as long as it takes); when another
        edit holds it past that, nothing is done here (that edit does it first) and the answer is [].
        """
        try:
            with self._edit(timeout) as recovered:
                return recovered
        except Timeout:
            return []

    # ---- helpers ---------------------------------------------------------------------------

    def _name_faces(self, name: str, result: AddResult) -> None:
        """The photos layout, after the index run: name the person of each added photo's largest face (edit lock
        held). Without an index there is no face to name: the photos stay unnamed until indexed and named by hand."""
        if self.engine.index_info(PEOPLE_MODEL) is None:
            reason = "the gallery has no index yet: index it, then name the person by hand"
            result.added = [replace(added, not_named=reason) for added in result.added]
            return
        registry = self.engine.people(PEOPLE_MODEL)
        store = self.engine.searcher(PEOPLE_MODEL).store
        rows = [row for part, _ in store.face_vectors(sorted({a.file for a in result.added})) for row in part]
        named: PersonRef | None = None
        for index, added in enumerate(result.added):
            faces = [row for row in rows if row.path == added.file]
            if not faces:
                reason = "no face of it was indexed (too small in the photo?)"
                result.added[index] = replace(added, not_named=reason)
                continue
            largest = max(faces, key=lambda row: (row.box[2] * row.box[3], row.box))
            try:
                done = registry.name_face(added.file, largest.box, name)
            except BadInputError as error:  # FaceNamedError: another person's face; the photo stays indexed anyway
                owner = error.owner if isinstance(error, FaceNamedError) else None
                result.added[index] = replace(added, not_named=str(error), owner=owner)
                continue
            named = done.person
            result.added[index] = replace(added, person=done.person)
        if named is not None:
            person = registry.get(named.id)
            result.named = NamedPerson(person.id, person.name or named.name or name, person.photos)

    def _refuse_in_photos_layout(self, edit: str) -> None:
        if self.engine.settings.gallery_layout == "photos":
            raise PhotosLayoutError(
                f"the photos layout has no person folders to {edit} (a folder holds event photos, and persons are "
                "found in them by clustering): nothing was changed. Hide a person (never shown or named), name or "
                "rename one, or merge two instead: `python -m engine people hide|name|merge` (the bot: /hide, /name, "
                "/merge)"
            )

    def _existing(self, name: str) -> PersonFolder:
        person = self.find(name)
        if person is None:
            raise PersonNotFoundError(f"nobody called {check_name(name)} in the gallery")
        return person

    @contextmanager
    def _edit(self, timeout: float | None = None) -> Iterator[list[RecoveredRename]]:
        """The edit lock (this process's threads, then other processes through DATA_DIR/gallery-edit.lock), with
        interrupted renames finished first (and reindexed). Not held within `timeout` seconds: filelock.Timeout."""
        wait = -1 if timeout is None else timeout
        if not self._lock.acquire(timeout=wait):
            raise Timeout(self._file_lock.lock_file)
        try:
            with self._file_lock.acquire(timeout=wait):
                recovered = self._finish_interrupted_renames()
                removals = self._interrupted_removals()
                if (recovered or removals or self._unindexed.exists()) and self._reindex_leftovers() and removals:
                    self._finish_removals(removals)
                if self._unnamed.exists():
                    self._name_leftovers()
                yield recovered
        finally:
            self._lock.release()

    def _finish_interrupted_renames(self) -> list[RecoveredRename]:
        """Hidden rename folders (see the module docstring) back to visible person folders. Edit lock held."""
        if not self.root.is_dir():
            return []
        recovered = []
        for leftover in sorted(self.root.iterdir()):
            interrupted = _interrupted_rename(leftover.name)
            if interrupted is None or not leftover.is_dir():
                continue
            folder, finished = interrupted.folder, interrupted.finished
            existing = self.find(folder.replace("_", " "))  # a person of that name (any case) meanwhile: merged into
            merged = existing is not None
            if existing is not None:
                folder = existing.folder
                _move_photos(leftover, self.root / folder)
            else:
                leftover.rename(self.root / folder)
            person = PersonFolder(folder.replace("_", " "), folder, _count_photos(self.root / folder))
            log.warning(
                "a rename was interrupted (a crash?): %s, found in the hidden folder %s, %s",
                person.name,
                leftover.name,
                ("now has its new name" if finished else "has its old name back") + (" (merged)" if merged else ""),
            )
            recovered.append(RecoveredRename(leftover.name, person, finished, merged))
        return recovered

    def _interrupted_removals(self) -> list[Path]:
        """Hidden `.removing~` folders (see `remove`) that a crash left."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(REMOVING) and p.is_dir())

    def _finish_removals(self, leftovers: list[Path]) -> None:
        """After the index run that forgot their faces: the vectors out of the stores' files, then the folders
        deleted (edit lock held). A purge that cannot run yet is logged; the folders wait for the next edit."""
        people = ", ".join(p.name.removeprefix(REMOVING).replace("_", " ") for p in leftovers)
        log.warning("a removal was interrupted (a crash?): finishing it for %s", people)
        try:
            self._purge_removed()
        except EngineError as error:
            log.error("cannot finish the interrupted removal of %s yet: %s", people, error)
            return
        for leftover in leftovers:
            shutil.rmtree(leftover)

    def _reindex(self) -> list[IndexReport]:
        """Make searches see the change: an incremental build for each model with an index. An edit that left no
        photo (the last person removed) empties the indexes: no build refuses the emptied gallery."""
        reports = []
        for model in MODEL_NAMES:
            if self.engine.index_info(model) is not None:
                reports.append(self.engine.build_index(model, self.root, allow_empty=True))
        self._unindexed.unlink(missing_ok=True)
        return reports

    def _purge_removed(self) -> None:
        """After a removal: the removed faces' vectors gone from the stores' files too, not only from searches."""
        for model in MODEL_NAMES:
            if self.engine.index_info(model) is not None:
                self.engine.searcher(model).store.purge_removed()

    def _changing(self) -> None:
        """Mark the gallery as changed on disk and not yet indexed (edit lock held): an edit calls it before its
        first change, `_reindex` clears it; a crash in between leaves it for the next edit or `recover`."""
        self._unindexed.parent.mkdir(parents=True, exist_ok=True)
        self._unindexed.touch()

    def _name_leftovers(self) -> None:
        """Name the faces of a photos-layout /add that a crash stopped before they were named (edit lock held;
        its photos indexed by `_reindex_leftovers` just before). The outcome is logged; the marker goes."""
        try:
            pending = json.loads(self._unnamed.read_text())
            name, files = pending["name"], [str(file) for file in pending["files"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("cannot read %s (%s): the faces of an interrupted /add stay unnamed", self._unnamed, error)
            self._unnamed.unlink(missing_ok=True)
            return
        result = AddResult(person=PersonFolder(name=name, folder=folder_of(name), photos=0))
        result.added = [AddedPhoto(number, file, 1) for number, file in enumerate(files, start=1)]
        try:
            self._name_faces(name, result)
        except EngineError as error:
            log.error("cannot name the faces of an interrupted /add of %s yet: %s", name, error)
            return
        named = [added.file for added in result.added if added.person is not None]
        log.warning(
            "an /add of %s was interrupted before its faces were named (a crash?): %d of %d photos named now%s",
            name, len(named), len(files),
            "".join(f"; {added.file}: {added.not_named}" for added in result.added if added.not_named),
        )  # fmt: skip
        self._unnamed.unlink(missing_ok=True)

    def _reindex_leftovers(self) -> bool:
        """Index what a crashed edit changed on disk (edit lock held); True when done. A build that cannot run (an
        index busy with a long run, a store that does not answer) is logged and left for later: the edit at hand goes on."""
        log.warning("a gallery edit was interrupted (a crash?): indexing its changes now")
        try:
            self._reindex()
        except EngineError as error:
            log.error("cannot index the changes an interrupted edit left yet: %s", error)
            return False
        return True


@dataclass(frozen=True)
class _Interrupted:
    folder: str  # the person folder the hidden one becomes
    finished: bool  # whether that is the new name (else: an older version's leftover, under the old name)


def _interrupted_rename(name: str) -> _Interrupted | None:
    """What a hidden rename folder of that name goes back to; None: not one (or not a valid person folder)."""
    if name.startswith(RENAMING):
        found = _Interrupted(name.removeprefix(RENAMING), finished=True)
    elif (old := _OLD_RENAMING.fullmatch(name)) is not None:
        found = _Interrupted(old["folder"], finished=False)
    else:
        return None
    try:
        valid = folder_of(found.folder.replace("_", " ")) == found.folder
    except PersonNameError:
        valid = False
    return found if valid else None


def _move_photos(source: Path, target: Path) -> None:
    """Every file of `source` into `target` (a name taken there gets -1, -2, ...), then `source` removed."""
    for path in sorted(source.iterdir()):
        destination = target / path.name
        counter = 1
        while destination.exists():
            destination = target / f"{path.stem}-{counter}{path.suffix}"
            counter += 1
        path.rename(destination)
    source.rmdir()


def _count_photos(folder: Path) -> int:
    """A person folder's photos as the people layout indexes them (`list_gallery_images`: its own image files, not
    its subfolders', hidden ones never), so counts match what searches find."""
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


def _write_whole(path: Path, data: bytes) -> None:
    """Written whole or not at all: a hidden temporary file (never listed nor indexed) renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
