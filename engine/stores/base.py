"""The vector store seam: what the index builder writes and the searcher reads.

Two backends implement `VectorStore` (chosen by `VECTOR_STORE_URI`, see `engine.stores.open_store`):
the local store (FAISS segments + SQLite rows under DATA_DIR, no server) and Milvus
(Milvus Lite at a `*.db` path, or a Milvus server at an http(s) URI).

A store holds one model's gallery: one vector per indexed face, its `FaceRow`, and a
`FileRecord` for every gallery file seen (faces may be 0, or an error), so the builder
can tell what changed. Vectors are stored as given (the builder L2-normalises and
projects them first); similarity is the inner product.

Writers change a store only through `apply()`, one atomic, durable step: a reader sees
the state before it or after it, never in between. Writers in several processes are
serialised by the store itself (a cross-process lock for the local store).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Landmarks = tuple[tuple[float, float], ...]  # five (x, y) points in the photo: eyes, nose, mouth corners


def landmarks_to_json(landmarks: Landmarks) -> str:
    """How both stores keep a face's landmarks: a JSON list of [x, y] points."""
    return json.dumps([list(point) for point in landmarks])


def landmarks_from_json(text: str) -> Landmarks:
    return tuple(tuple(point) for point in json.loads(text))


def face_fields(row: FaceRow) -> dict:
    """A face row as both stores keep its columns: box split, landmarks as JSON (None when not kept)."""
    x, y, w, h = row.box
    landmarks = None if row.landmarks is None else landmarks_to_json(row.landmarks)
    return {"path": row.path, "name": row.name, "x": x, "y": y, "w": w, "h": h,
            "confidence": row.confidence, "landmarks": landmarks}  # fmt: skip


@dataclass(frozen=True)
class FaceRow:
    """One indexed face: the gallery file (path relative to the gallery root), the person, the face box.

    `(path, box)` identifies a face. `name` is the folder's person in the people layout and "" in the photos
    layout. `confidence` (MTCNN's) and `landmarks` are None for rows written before they were kept.
    """

    path: str
    name: str
    box: tuple[int, int, int, int]  # x, y, width, height in the gallery photo
    confidence: float | None = None
    landmarks: Landmarks | None = None

    @property
    def key(self) -> tuple[str, tuple[int, int, int, int]]:
        x, y, w, h = self.box
        return (self.path, (x, y, w, h))


def landmarks_tuple(points: np.ndarray | None) -> Landmarks | None:
    """(5, 2) points as a hashable tuple, rounded to 0.1 px; None stays None."""
    if points is None:
        return None
    return tuple((round(float(x), 1), round(float(y), 1)) for x, y in points)


@dataclass(frozen=True)
class FileRecord:
    """What the builder knew about one gallery file when it last looked at it."""

    path: str  # relative to the gallery root, POSIX separators
    size: int
    mtime_ns: int
    sha256: str
    faces: int  # faces indexed from it (0: no face found, or an error)
    error: str | None = None  # why it could not be read (remembered so it is not retried until it changes)


@dataclass(frozen=True)
class StoreHeader:
    """Identity of the pipeline that made a store's vectors: a store made by another one is refused or rebuilt."""

    model: str
    dim: int
    fingerprint: str  # hash of weights checksum + settings that change the vectors
    gallery: str  # absolute gallery root the paths are relative to
    layout: str = "people"  # GALLERY_LAYOUT it was built in (stores written before layouts existed: people)


@dataclass(frozen=True)
class Hit:
    similarity: float  # inner product of unit vectors: cosine similarity, 1 = identical
    row: FaceRow
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)  # the stored vector, when asked for


@dataclass
class Changes:
    """One atomic write: drop every row and record of `remove_paths`, apply `moves`, then add
    `rows`/`vectors` and `records`.

    A file that changed is re-added by naming it in `remove_paths` and adding its new rows.
    `meta` sets small named blobs kept with the store (for example a PCA projection).
    """

    remove_paths: set[str] = field(default_factory=set)
    rows: list[FaceRow] = field(default_factory=list)
    vectors: np.ndarray | None = None  # (len(rows), dim) float32, L2-normalised
    records: list[FileRecord] = field(default_factory=list)
    meta: dict[str, bytes] = field(default_factory=dict)
    # old path -> (new path, new person name): the file was moved or renamed in the gallery; its rows
    # and record follow it with their vectors unchanged (no re-embedding).
    moves: dict[str, tuple[str, str]] = field(default_factory=dict)
    # records to update without touching the file's rows: its content is unchanged (same sha256), only
    # its size/mtime were seen anew (a copied or touched gallery is not re-embedded). Applied last.
    touched: list[FileRecord] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.remove_paths or self.rows or self.records or self.meta or self.moves or self.touched)


class VectorStore(Protocol):
    """One model's gallery index. Implementations: `LocalStore`, `MilvusStore`."""

    @property
    def header(self) -> StoreHeader | None:
        """Whose vectors the store holds; None: nothing was ever written."""

    def initialise(self, header: StoreHeader) -> None:
        """Make the store empty and owned by `header` (a store of another pipeline is dropped: a rebuild)."""

    def writer(self, timeout: float | None = None) -> AbstractContextManager[VectorStore]:
        """Hold the store's writer lock across several apply() calls (a whole index run).

        Another holder: wait, or after `timeout` seconds raise IndexBusyError (None: wait as long as it
        takes). The local store's lock is cross-process; Milvus' serialises writers of this process only.
        """

    def apply(self, changes: Changes) -> None:
        """Apply one change set atomically and durably (see `Changes`)."""

    def search(self, queries: np.ndarray, k: int, *, with_vectors: bool = False) -> list[list[Hit]]:
        """The k best hits per query (fewer when the store holds fewer), best first; `with_vectors`: each hit
        carries its stored vector (query expansion)."""

    def files(self) -> dict[str, FileRecord]:
        """Every gallery file the store knows, by relative path."""

    def people(self) -> dict[str, int]:
        """Person name -> number of gallery files with an indexed face."""

    def get_meta(self, key: str) -> bytes | None: ...

    @property
    def count(self) -> int:
        """Faces (vectors) searchable now."""

    @property
    def version(self) -> str:
        """Changes with every apply(); equal versions mean equal contents."""

    def refresh(self) -> bool:
        """Pick up what other processes wrote since this object last looked; True if something changed.

        Searches running meanwhile keep answering from the state they started with.
        """

    def close(self) -> None: ...

    def purge_removed(self) -> None:
        """Make the vectors of removed rows gone from storage, not only from searches (a person removed from the
        gallery: their face vectors must not stay on disk). Takes the writer lock; may rewrite the whole index."""

    def face_vectors(
        self, paths: Iterable[str] | None = None, chunk: int = 20_000
    ) -> Iterator[tuple[list[FaceRow], np.ndarray]]:
        """The rows of the faces of the gallery files `paths` (None: every face) with their stored vectors,
        as (rows, (len(rows), dim) float32 array) chunks of at most `chunk` rows (people clustering reads them)."""
