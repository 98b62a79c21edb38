"""The searcher: query photo -> regions -> vectors -> store hits -> typed matches."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import IndexUnavailableError
from engine.search.appearances import AppearanceParams, appearances, best_per_photo
from engine.search.identity import identify
from engine.search.vectors import similarity_to_distance
from engine.stores.base import FaceRow, Hit, StoreHeader, VectorStore
from engine.types import FaceResult, Match, PersonRef, PhotoMatch, SearchResult

if TYPE_CHECKING:  # the backend is handed in: search never imports the backends (which use its vector helpers)
    from engine.backends.base import ModelBackend, Region

PersonOf = Callable[[Sequence[FaceRow]], list[PersonRef | None]]  # gallery faces -> their persons, in order

PROJECTION_KEY = "projection"


class Searcher:
    """Searches one model's store. Holds the store's projection (VGG16's PCA) per store version.

    `person_of` (optional) maps a gallery face to its person in the people registry; without it, the photos
    layout's answers carry no person.
    """

    def __init__(self, backend: ModelBackend, store: VectorStore, person_of: PersonOf | None = None):
        self.backend = backend
        self.store = store
        self.person_of = person_of
        self._projection: tuple[str, bytes | None] | None = None

    def _header(self) -> StoreHeader:
        """The store's header; a store never written to has none (check_store refuses it)."""
        header = self.store.header
        if header is None:
            model = self.backend.name
            raise IndexUnavailableError(f"no {model} index yet; build it with: python -m engine index --model {model}")
        return header

    def check_store(self) -> None:
        """Refuse a store that is empty or holds another pipeline's vectors."""
        header = self.store.header
        model = self.backend.name
        if header is None:
            raise IndexUnavailableError(f"no {model} index yet; build it with: python -m engine index --model {model}")
        layout = self.backend.settings.gallery_layout
        if header.layout != layout:
            raise IndexUnavailableError(
                f"the {model} index was built in the {header.layout} layout but GALLERY_LAYOUT is {layout}: search with "
                f"GALLERY_LAYOUT={header.layout} (or --layout {header.layout}), or rebuild it with: "
                f"python -m engine index --model {model} --layout {layout}"
            )
        if header.model != model or header.fingerprint != self.backend.fingerprint():
            raise IndexUnavailableError(
                f"the {model} index was built with other weights or settings; rebuild it with: python -m engine index --model {model}"
            )

    def projection(self) -> bytes | None:
        version = self.store.version
        if self._projection is None or self._projection[0] != version:
            self._projection = (version, self.store.get_meta(PROJECTION_KEY))
        return self._projection[1]

    def query_vectors(self, images: list[np.ndarray], max_faces: int | None) -> tuple[list[list[Region]], np.ndarray]:
        """(regions per image, their vectors as the store compares them)."""
        regions = self.backend.query_regions(images, max_faces)
        flat = [region for image_regions in regions for region in image_regions]
        vectors = self.backend.embed(flat, query=True)
        return regions, self.backend.project(vectors, self.projection()) if len(flat) else vectors

    def appearance_params(self) -> AppearanceParams:
        return AppearanceParams()

    def photos_for(self, vector: np.ndarray, *, params: AppearanceParams | None = None) -> list[PhotoMatch]:
        """Every gallery photo the face `vector` (as the store compares it) appears in, best first (photos layout)."""
        found = best_per_photo(appearances(self.store, vector, params or self.appearance_params()))
        gallery = Path(self._header().gallery)
        rows = [a.hit.row for a in found]
        persons = self.person_of(rows) if self.person_of is not None and rows else [None] * len(rows)
        return [
            PhotoMatch(str(gallery / a.hit.row.path), a.hit.row.box, a.similarity, person)
            for a, person in zip(found, persons)
        ]

    def search_image(
        self, image: np.ndarray, *, k: int, max_faces: int | None, name: str, limit: int | None = None
    ) -> SearchResult:
        """Search every face of `image` (or the whole image, for whole-image models). No face: `faces` is empty.

        Photos layout: each face also gets every photo it appears in (at most `limit`, best first)."""
        self.check_store()
        ms: dict[str, float] = {}
        started = time.perf_counter()
        regions = self.backend.query_regions([image], max_faces)[0]
        ms["detect"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        vectors = self.backend.embed(regions, query=True)
        if len(regions):
            vectors = self.backend.project(vectors, self.projection())
        ms["embed"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        # the open-set decision looks at more neighbours than the k matches shown (engine/search/identity.py)
        params = self.backend.identity_params()
        hits = self.store.search(vectors, max(k, params.neighbours)) if len(regions) else []
        header = self._header()
        gallery = Path(header.gallery)
        if header.layout == "photos":
            faces = [
                self._photos_result(region, vector, face_hits[:k], gallery, limit)
                for region, vector, face_hits in zip(regions, vectors, hits)
            ]
        else:
            faces = [
                FaceResult(
                    box=region.box,
                    confidence=region.confidence,
                    matches=to_matches(face_hits[:k], gallery),
                    identity=identify(
                        [hit.row.name for hit in face_hits], [hit.similarity for hit in face_hits], params
                    ),
                    vector=vector,
                )
                for region, vector, face_hits in zip(regions, vectors, hits)
            ]
        ms["search"] = (time.perf_counter() - started) * 1000
        return SearchResult(image=name, model=self.backend.name, faces=faces, ms=ms)

    def _photos_result(
        self, region: Region, vector: np.ndarray, nearest: list[Hit], gallery: Path, limit: int | None
    ) -> FaceResult:
        photos = self.photos_for(vector)
        people = Counter(photo.person for photo in photos if photo.person is not None)
        return FaceResult(
            box=region.box,
            confidence=region.confidence,
            matches=to_matches(nearest, gallery),
            photos=photos[:limit] if limit is not None else photos,
            photos_total=len(photos),
            person=people.most_common(1)[0][0] if people else None,
            vector=vector,
        )


def to_matches(hits: list[Hit], gallery: Path) -> list[Match]:
    return [
        Match(
            rank=rank,
            name=hit.row.name,
            path=str(gallery / hit.row.path),
            similarity=float(hit.similarity),
            distance=float(similarity_to_distance(hit.similarity)),
        )
        for rank, hit in enumerate(hits, start=1)
    ]
