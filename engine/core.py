"""The engine facade that the bot and the command line use: backends, stores, builder and searcher.

Thread-safe: searches may run while an index is built, in this process or another one;
`refresh()` picks up what other processes wrote.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends import FACE_MODELS, ModelBackend, check_model, create_backends
from engine.backends.facenet import FaceNetBackend
from engine.errors import BadInputError, IndexUnavailableError
from engine.images import decode_image, read_image
from engine.indexing.builder import IndexBuilder, ProgressCallback, ReadyCheck
from engine.people import ClusterParams, PeopleRegistry, SyncReport
from engine.runtime.device import DeviceInfo, probe_device
from engine.search.searcher import PersonOf, Searcher
from engine.settings import EngineSettings
from engine.stores import open_store
from engine.stores.base import FaceRow, VectorStore
from engine.types import DetectedFace, IndexInfo, IndexReport, PersonRef, SearchResult

log = logging.getLogger(__name__)


class Engine:
    """Face search over a gallery: each model's networks are loaded once and its store opened once."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.backends: dict[str, ModelBackend] = create_backends(settings)
        self._device: DeviceInfo | None = None
        self._searchers: dict[str, Searcher] = {}
        self._registries: dict[str, PeopleRegistry] = {}
        self._lock = threading.Lock()
        # one build at a time per model in this process (the store's lock serialises processes)
        self._build_locks = {model: threading.Lock() for model in self.backends}

    # ---- models -------------------------------------------------------------------------
    @staticmethod
    def check_model(model: str) -> str:
        return check_model(model)

    def backend(self, model: str) -> ModelBackend:
        return self.backends[check_model(model)]

    def _facenet(self) -> FaceNetBackend:
        """The FaceNet backend: it also finds the faces and sets the embedding device for every model."""
        backend = self.backends[FaceNetBackend.name]
        if not isinstance(backend, FaceNetBackend):
            raise TypeError(f"backends[{FaceNetBackend.name!r}] is a {type(backend).__name__}, not a FaceNetBackend")
        return backend

    @property
    def device(self) -> DeviceInfo:
        """The embedding device (a GPU, or the CPU with a clear log line why), probed once before TensorFlow runs."""
        if self._device is None:
            runtime = self._facenet().runtime
            self._device = probe_device(self.settings.device, self.settings.embed_batch_size, runtime=runtime)
            self._facenet().network.batch_size = self._device.embed_batch_size
        return self._device

    def model_problem(self, model: str) -> str | None:
        """None when `model` can be used, else a message saying how to get its weights."""
        return self.backend(model).problem()

    def load_networks(self, model: str) -> None:
        self.device  # noqa: B018 (probed before the first TensorFlow op)
        self.backend(model).require()

    def load(self, model: str) -> None:
        """Load the model's networks and open its store. Idempotent."""
        self.load_networks(model)
        self.searcher(model)

    def warm_up(self, model: str) -> None:
        """A service's start: networks loaded and compiled for query-sized batches, store opened."""
        self.device  # noqa: B018
        self.backend(model).warm_up()
        self.searcher(model)

    def pipeline_params(self, model: str) -> dict:
        return self.backend(model).pipeline_params()

    def load_face_finder(self) -> None:
        """What `find_faces` needs (MTCNN, on the FaceNet backend's runtime), loaded. Idempotent."""
        self.load_networks(FaceNetBackend.name)

    def find_faces(self, image: np.ndarray) -> list[DetectedFace]:
        """The faces in one photo, most prominent (largest, most central) first."""
        return self._facenet().find_faces([image])[0]

    # ---- stores -------------------------------------------------------------------------
    def open_store(self, model: str, index_dir: Path | None = None) -> VectorStore:
        """The model's store (VECTOR_STORE_URI), or a separate one for `index_dir` (evaluation indexes):
        that folder with the local store, a collection named after it with Milvus."""
        check_model(model)
        s = self.settings
        collection = None
        if index_dir is not None:
            tag = hashlib.sha1(str(Path(index_dir).resolve()).encode()).hexdigest()[:10]
            collection = f"eval_{tag}_{model}"
        return open_store(
            s.vector_store_uri, data_dir=s.data_dir, model=model, local_root=index_dir, collection=collection,
            ann_threshold=s.ann_threshold, hnsw_m=s.hnsw_m, ef_search=s.hnsw_ef_search,
        )  # fmt: skip

    def searcher(self, model: str) -> Searcher:
        with self._lock:
            if model not in self._searchers:
                # the photos layout names each photo's face by its person in the people registry
                person_of = self._person_of(model) if self.backend(model).embeds_faces else None
                self._searchers[model] = Searcher(self.backend(model), self.open_store(model), person_of)
            return self._searchers[model]

    def refresh(self) -> list[str]:
        """Pick up index versions written by other processes; the models whose index changed."""
        changed = []
        for model, searcher in list(self._searchers.items()):
            if searcher.store.refresh():
                changed.append(model)
        return changed

    def builder(self, model: str) -> IndexBuilder:
        """An index builder for `model` on this engine's device (Ray actors probe their own)."""
        return IndexBuilder(self.backend(model), self.settings, None if self.settings.index_ray else self.device)

    def index_info(self, model: str) -> IndexInfo | None:
        """The model's index as searches see it; None when there is none usable (missing, or other weights)."""
        searcher = self.searcher(model)
        try:
            searcher.check_store()
        except IndexUnavailableError:
            return None
        header = searcher.store.header
        if header is None:  # check_store refuses a store without one
            return None
        return IndexInfo(
            model=model,
            count=searcher.store.count,
            dim=header.dim,
            gallery=header.gallery,
            store=str(searcher.store),
            version=searcher.store.version,
        )

    def build_index(
        self,
        model: str,
        gallery: Path | None = None,
        *,
        index_dir: Path | None = None,
        paths: list[Path] | None = None,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_wait: Callable[[str], None] | None = None,
        allow_empty: bool = False,
        ready: ReadyCheck | None = None,
        limit: int | None = None,
    ) -> IndexReport:
        """Bring the model's index up to date with `gallery` (default GALLERY_DIR): see IndexBuilder.build
        (`allow_empty`: a gallery without images empties the index instead of being refused; `ready`: changed files
        it answers False for are left for a later run, a watched gallery's files still being written; `limit`: at most
        this many files read, the rest left for a later run).

        `index_dir` builds a separate local index there (evaluation galleries); `paths`
        restricts the run to some of the gallery's images.
        """
        store = self.open_store(model, index_dir) if index_dir is not None else self.searcher(model).store
        builder = self.builder(model)
        try:
            with self._build_locks[model]:
                report = builder.build(
                    store,
                    Path(gallery or self.settings.resolved_gallery()),
                    paths,
                    progress=progress,
                    should_stop=should_stop,
                    on_wait=on_wait,
                    allow_empty=allow_empty,
                    ready=ready,
                    limit=limit,
                )
                if index_dir is None and self.backend(model).embeds_faces:
                    self.people(model).sync(store)  # the gallery's persons follow its faces
                return report
        finally:
            if index_dir is not None:
                store.close()

    # ---- search -------------------------------------------------------------------------
    def check_k(self, k: int) -> int:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.settings.max_k:
            raise BadInputError(f"k must be a whole number from 1 to {self.settings.max_k}, not {k!r}")
        return k

    def decode(self, data: bytes, name: str = "photo") -> np.ndarray:
        """An uploaded photo as an upright RGB array, within the size and pixel limits (else BadImageError)."""
        s = self.settings
        return decode_image(data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, name=name)

    def read(self, path: Path) -> np.ndarray:
        """A photo file as an upright RGB array, within the same limits as `decode`."""
        s = self.settings
        return read_image(Path(path), max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)

    def search_bytes(
        self, data: bytes, *, model: str = "facenet", k: int | None = None, max_faces: int | None = None,
        name: str = "photo", limit: int | None = None,
    ) -> SearchResult:  # fmt: skip
        """Decode an uploaded photo and search it (see `search_image`)."""
        image = self.decode(data, name=name)
        return self.search_image(image, model=model, k=k, max_faces=max_faces, name=name, limit=limit)

    def search_path(self, path: Path, **kwargs: Any) -> SearchResult:
        return self.search_image(self.read(path), name=str(path), **kwargs)

    def search_image(
        self, image: np.ndarray, *, model: str = "facenet", k: int | None = None, max_faces: int | None = None,
        name: str = "photo", limit: int | None = None,
    ) -> SearchResult:  # fmt: skip
        """Search every face of `image` (FaceNet) or the whole image (VGG16). No face: `faces` is empty.

        Photos layout: each face also gets every gallery photo its person appears in, best first (at most
        `limit`; `photos_total` says how many there are)."""
        k = self.check_k(self.settings.default_k if k is None else k)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise BadInputError(f"the photo limit must be a whole number of at least 1, not {limit!r}")
        self.load_networks(model)
        return self.searcher(model).search_image(image, k=k, max_faces=max_faces, name=name, limit=limit)

    # ---- people ---------------------------------------------------------------------------
    def people(self, model: str = "facenet") -> PeopleRegistry:
        """The persons of the model's gallery (DATA_DIR/people/<model>.sqlite), kept in step by build_index."""
        if check_model(model) not in FACE_MODELS:
            raise BadInputError(
                f"persons are made of faces: {model} indexes whole images (use {' or '.join(FACE_MODELS)})"
            )
        with self._lock:
            if model not in self._registries:
                s = self.settings
                self._registries[model] = PeopleRegistry(
                    s.data_dir / "people" / f"{model}.sqlite",
                    names=s.people_names,
                    params=ClusterParams(
                        s.cluster_threshold, s.cluster_min_faces, s.cluster_neighbours, s.cluster_regroup_growth
                    ),
                )
            return self._registries[model]

    def _person_of(self, model: str) -> PersonOf:
        def person_of(rows: Sequence[FaceRow]) -> list[PersonRef | None]:
            return self.people(model).person_of(rows)

        return person_of

    def sync_people(self, model: str = "facenet") -> SyncReport:
        """Bring the model's persons up to date with its store (a no-op when nothing was written since the last sync)."""
        registry = self.people(model)
        return registry.sync(self.searcher(model).store)

    def recluster_people(self, model: str = "facenet") -> SyncReport:
        """Group the model's faces into persons again from scratch (named persons kept)."""
        registry = self.people(model)
        searcher = self.searcher(model)
        searcher.check_store()
        return registry.recluster(searcher.store)

    def close(self) -> None:
        for searcher in self._searchers.values():
            searcher.store.close()
        self._searchers.clear()
        for registry in self._registries.values():
            registry.close()
        self._registries.clear()
