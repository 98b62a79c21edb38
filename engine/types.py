"""Typed outputs of the engine. Lists are empty, never None, when nothing was found."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class DetectedFace:
    """A face in an image, in original-image pixel coordinates."""

    box: tuple[int, int, int, int]  # x, y, width, height
    confidence: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, mouth left, mouth right (x, y)

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


@dataclass(frozen=True)
class Match:
    rank: int
    name: str
    path: str
    similarity: float  # cosine similarity, 1 = identical
    distance: float  # Euclidean distance between L2-normalised features


@dataclass(frozen=True)
class Identity:
    """The open-set answer for one face: who it is, or None when the person is not in the gallery.

    `score` is the person-level score the decision thresholds (see engine/search/identity.py); for
    an unknown face it is the best candidate's score, which stayed below the threshold.
    """

    name: str | None
    score: float

    def to_dict(self) -> dict:
        return {"name": self.name, "score": round(self.score, 4)}


@dataclass(frozen=True)
class PersonRef:
    """A person of the people registry (engine/people*.py): its id, and its name once named by hand."""

    id: int
    name: str | None

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class PhotoMatch:
    """A gallery photo the query's person appears in (photos layout): its best-matching face."""

    path: str  # absolute path of the gallery photo
    box: tuple[int, int, int, int]  # that face in the photo
    similarity: float  # cosine similarity of that face to the query face
    person: PersonRef | None = None  # the face's person in the registry, when one is wired in

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "box": list(self.box),
            "similarity": round(self.similarity, 4),
            "person": None if self.person is None else self.person.to_dict(),
        }


@dataclass(frozen=True)
class FaceResult:
    """One searched face (for VGG16: the whole image) and its matches, best first.

    People layout: `matches` (the k closest gallery faces) and `identity`. Photos layout: `photos`, every
    gallery photo the person appears in, best first (at most the limit asked for; `photos_total` counts them
    all), and `person`, the registry's person of the best photos (None: found nowhere, or no registry).
    """

    box: tuple[int, int, int, int]
    confidence: float
    matches: list[Match]
    identity: Identity = field(default_factory=lambda: Identity(None, 0.0))
    photos: list[PhotoMatch] | None = None  # None in the people layout
    photos_total: int = 0
    person: PersonRef | None = None
    # the query face's vector as the store compares it (opt-outs compare it with their templates); never serialised
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        data = {
            "box": list(self.box),
            "confidence": round(self.confidence, 4),
            "matches": [
                {
                    "rank": m.rank,
                    "name": m.name,
                    "path": m.path,
                    "similarity": round(m.similarity, 4),
                    "distance": round(m.distance, 4),
                }
                for m in self.matches
            ],
        }
        if self.photos is None:  # the people layout: exactly as before photos existed
            data["identity"] = self.identity.to_dict()
            return data
        data["photos"] = [photo.to_dict() for photo in self.photos]
        data["photos_total"] = self.photos_total
        data["person"] = None if self.person is None else self.person.to_dict()
        return data


@dataclass(frozen=True)
class SearchResult:
    image: str
    model: str
    faces: list[FaceResult]
    ms: dict[str, float] = field(default_factory=dict)  # detect / embed / search

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "model": self.model,
            "faces": [face.to_dict() for face in self.faces],
            "ms": {key: round(value, 1) for key, value in self.ms.items()},
        }


@dataclass(frozen=True)
class IndexProgress:
    done: int
    total: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if self.done == 0:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)


@dataclass
class IndexReport:
    model: str
    gallery: str
    images: int = 0  # image files in the gallery
    added: int = 0
    updated: int = 0
    removed: int = 0
    moved: int = 0  # files that moved to another path or person folder: vectors kept, not re-embedded
    unchanged: int = 0
    # skipped and no_face describe the whole gallery after this run; added/updated/removed this run's changes.
    skipped: int = 0  # unreadable files or not images
    no_face: int = 0
    faces_indexed: int = 0  # rows in the index after the run
    embedded_images: int = 0  # images processed this run
    seconds: float = 0.0
    device: str = ""  # where it was embedded ("CPU (2 cores), ...", "GPU (...)", "Ray cluster local")
    pipeline: str = ""  # where the time went: decode / detect / embed / waiting
    rebuilt: bool = False  # the store held another model's, settings', gallery's or layout's vectors and was emptied
    rebuilt_reason: str = ""  # why, in words
    stopped: bool = False  # asked to stop before the end: what was embedded is committed, the rest waits
    waiting: int = 0  # changed files left for a later run (a watched gallery: still being written, or past its batch)
    skipped_files: list[str] = field(default_factory=list)
    read_errors: list[str] = field(default_factory=list)  # this run's files that could not be read (logged once)

    @property
    def images_per_second(self) -> float:
        return self.embedded_images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["images_per_second"] = round(self.images_per_second, 2)
        return data


@dataclass(frozen=True)
class IndexInfo:
    model: str
    count: int  # faces searchable now
    dim: int
    gallery: str
    store: str  # which store holds it ("local DATA_DIR/index/facenet", "milvus http://...")
    version: str  # changes with every write
