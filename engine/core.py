"""The engine: models loaded once, indexes built incrementally, searches from bytes or arrays."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.detect import FaceDetector, crop_face
from engine.errors import BadInputError, GalleryError, IndexUnavailableError, ModelUnavailableError
from engine.facenet import FACENET_INPUT_SIZE, FaceNetEmbedder
from engine.images import decode_image, list_gallery_images, person_name
from engine.search import Projection, VectorSearch, similarity_to_distance
from engine.settings import MODEL_NAMES, EngineSettings
from engine.store import StoredIndex, file_sha256, load_index, new_manifest, write_index
from engine.types import DetectedFace, FaceResult, IndexInfo, IndexProgress, IndexReport, Match, SearchResult
from engine.vgg16 import VGG16Embedder

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IndexProgress], None]


@dataclass
class LoadedIndex:
    """A stored index made ready for queries."""

    stored: StoredIndex
    search: VectorSearch
    projection: Projection | None
    gallery: Path

    @property
    def count(self) -> int:
        return self.search.count


class Engine:
    """Face search over a gallery. Thread-safe: searches may run while an index is rebuilt."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.detector = FaceDetector(
            max_side=settings.detect_max_side,
            min_face_size=settings.min_face_size,
            confidence=settings.face_confidence,
            batch_size=settings.detect_batch_size,
        )
        self.facenet = FaceNetEmbedder(settings.facenet_weights, batch_size=settings.embed_batch_size, xla=settings.xla)
        self.vgg16 = VGG16Embedder(settings.vgg16_weights, random_weights=settings.vgg16_random_weights)
        self._indexes: dict[str, LoadedIndex] = {}
        self._weights_sha: dict[str, str] = {}
        self._build_lock = threading.Lock()

    # ---- models -------------------------------------------------------------------------

    @staticmethod
    def check_model(model: str) -> str:
        if model not in MODEL_NAMES:
            raise BadInputError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_NAMES)}")
        return model

    def model_problem(self, model: str) -> str | None:
        """None when `model` can be used, else a message saying how to get its weights."""
        self.check_model(model)
        if model == "facenet" and not self.settings.facenet_weights.is_file():
            return f"FaceNet weights missing ({self.settings.facenet_weights}); fetch them with: python -m engine models fetch"
        if model == "vgg16" and not self.vgg16.available():
            return (
                f"VGG16 weights missing ({self.settings.vgg16_weights}); fetch them (553 MB, needs internet access) "
                "with: python -m engine models fetch vgg16"
            )
        return None

    def load(self, model: str) -> None:
        """Load the model's networks and its index (if one was built). Idempotent."""
        self.load_networks(model)
        if model not in self._indexes:
            loaded = self._load_index(model, self.settings.index_dir(model))
            if loaded is not None:
                self._indexes[model] = loaded

    def load_networks(self, model: str) -> None:
        """Load the model's networks once (and the detector for FaceNet)."""
        problem = self.model_problem(model)
        if problem:
            raise ModelUnavailableError(problem)
        if model == "facenet":
            self.detector.load()
            self.facenet.load()
        else:
            self.vgg16.load()

    def warm_up(self, model: str) -> None:
        """Load `model` and compile the batch sizes of photos with up to four faces (a service's start)."""
        self.load(model)
        if model == "facenet":
            self.facenet.warm_up((4, 8))

    def weights_checksum(self, model: str) -> str:
        if model not in self._weights_sha:
            if model == "vgg16" and self.settings.vgg16_random_weights:
                self._weights_sha[model] = "random-weights"
            else:
                path = self.settings.facenet_weights if model == "facenet" else self.settings.vgg16_weights
                self._weights_sha[model] = file_sha256(path)
        return self._weights_sha[model]

    def pipeline_params(self, model: str) -> dict:
        """Settings that change the features: an index built with others is rebuilt, not mixed."""
        if model == "vgg16":
            return {"pca_components": self.settings.vgg16_pca_components}
        s = self.settings
        return {
            "detect_max_side": s.detect_max_side,
            "min_face_size": s.min_face_size,
            "face_confidence": s.face_confidence,
            "face_margin": s.face_margin,
            "align_faces": s.align_faces,
            "flip_gallery": s.flip_gallery,
            "index_all_faces": s.index_all_faces,
        }

    # ---- indexes ------------------------------------------------------------------------

    def _load_index(self, model: str, index_dir: Path) -> LoadedIndex | None:
        stored = load_index(index_dir)
        if stored is None:
            return None
        if stored.manifest.get("weights_sha256") != self.weights_checksum(model):
            raise IndexUnavailableError(
                f"the {model} index in {index_dir} was built with other weights; "
                f"rebuild it with: python -m engine index --model {model}"
            )
        return self._prepare(stored)

    def _prepare(self, stored: StoredIndex) -> LoadedIndex:
        projection = Projection(stored.pca["mean"], stored.pca["components"]) if stored.pca else None
        features = projection.apply(stored.features) if projection else stored.features
        ann_index = None
        if stored.ann_path is not None:
            import faiss

            ann_index = faiss.read_index(str(stored.ann_path))
            ann_index.hnsw.efSearch = self.settings.hnsw_ef_search
        search = VectorSearch(features, ann_index=ann_index)
        return LoadedIndex(stored=stored, search=search, projection=projection, gallery=Path(stored.manifest["gallery"]))

    def open_index(self, model: str, index_dir: Path) -> LoadedIndex:
        """An index kept outside DATA_DIR/index (evaluation galleries), loaded for direct use."""
        loaded = self._load_index(model, index_dir)
        if loaded is None:
            raise IndexUnavailableError(f"no {model} index in {index_dir}")
        return loaded

    def index_info(self, model: str) -> IndexInfo | None:
        loaded = self._indexes.get(model)
        if loaded is None:
            return None
        manifest = loaded.stored.manifest
        return IndexInfo(
            model=model,
            count=loaded.count,
            dim=int(manifest["dim"]),
            built_at=manifest["built_at"],
            gallery=manifest["gallery"],
            ann=loaded.search.ann_index is not None,
        )

    def loaded_index(self, model: str) -> LoadedIndex:
        loaded = self._indexes.get(model)
        if loaded is None:
            raise IndexUnavailableError(f"no {model} index yet; build it with: python -m engine index --model {model}")
        return loaded

    def build_index(
        self,
        model: str,
        gallery: Path | None = None,
        *,
        index_dir: Path | None = None,
        paths: list[Path] | None = None,
        progress: ProgressCallback | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> IndexReport:
        """Incrementally (re)build the index of `gallery`: embed new and changed files, drop deleted ones.

        `paths` restricts the run to some of the gallery's images (evaluation subsets).
        Unreadable files are skipped and counted. The new index replaces the old one
        atomically, on disk and in memory; searches meanwhile use the old one.
        """
        self.load_networks(model)  # not the old index: one built with other weights is rebuilt, not refused
        gallery = Path(gallery or self.settings.resolved_gallery()).resolve()
        if not gallery.is_dir():
            raise GalleryError(f"gallery folder not found: {gallery}")
        paths = list_gallery_images(gallery) if paths is None else paths
        if not paths:
            raise GalleryError(f"no images in {gallery} (expected one folder per person with photos in it)")
        index_dir = index_dir or self.settings.index_dir(model)
        with self._build_lock:
            return self._build(model, gallery, paths, index_dir, progress, before_commit)

    def _build(self, model, gallery, paths, index_dir, progress, before_commit) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport(model=model, gallery=str(gallery), images=len(paths))
        weights_sha = self.weights_checksum(model)
        pipeline = self.pipeline_params(model)
        previous = load_index(index_dir)
        if previous is not None and (
            previous.manifest.get("weights_sha256") != weights_sha
            or previous.manifest.get("pipeline") != pipeline
            or previous.manifest.get("gallery") != str(gallery)
        ):
            log.warning("index in %s was built with other weights, settings or gallery: rebuilding from scratch", index_dir)
            previous = None
        previous_files = previous.files if previous else {}
        previous_rows: dict[str, list[int]] = {}
        if previous:
            for row_number, row in enumerate(previous.rows):
                previous_rows.setdefault(row["path"], []).append(row_number)

        keep_rows: list[int] = []
        files: dict[str, dict] = {}
        todo: list[tuple[str, Path, str]] = []
        for path in paths:
            relative = path.relative_to(gallery).as_posix()
            try:
                sha = file_sha256(path)
            except OSError as error:
                report.skipped += 1
                report.skipped_files.append(f"{relative}: {error.strerror or error}")
                continue
            known = previous_files.get(relative)
            if known is not None and known["sha256"] == sha:
                files[relative] = known
                keep_rows.extend(previous_rows.get(relative, []))
                if known.get("error"):
                    report.skipped += 1
                    report.skipped_files.append(f"{known['error']} (unchanged since last run)")
                    continue
                report.unchanged += 1
                if known["faces"] == 0:
                    report.no_face += 1
                continue
            todo.append((relative, path, sha, "added" if known is None else "updated"))
        report.removed = len(set(previous_files) - {p.relative_to(gallery).as_posix() for p in paths})

        new_rows: list[dict] = []
        new_features: list[np.ndarray] = []
        chunk_size = self.settings.detect_batch_size
        chunks = [todo[start : start + chunk_size] for start in range(0, len(todo), chunk_size)]
        # Decoding and detection of the next chunk overlap with embedding of this one.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-prefetch") as prefetch:
            pending = prefetch.submit(self._prepare_chunk, model, chunks[0]) if chunks else None
            for number, chunk in enumerate(chunks):
                prepared = pending.result()
                if number + 1 < len(chunks):
                    pending = prefetch.submit(self._prepare_chunk, model, chunks[number + 1])
                rows, features = self._embed_chunk(model, prepared, files, report)
                new_rows.extend(rows)
                if len(features):
                    new_features.append(features)
                report.embedded_images += len(chunk)
                if progress is not None:
                    done = min((number + 1) * chunk_size, len(todo))
                    progress(IndexProgress(done=done, total=len(todo), elapsed_s=time.perf_counter() - started))

        changed = todo or report.removed or previous is None
        if not changed:
            report.faces_indexed = len(previous.rows)
            report.seconds = time.perf_counter() - started
            return report

        dim = self.facenet.dim if model == "facenet" else self.vgg16.dim
        kept_features = previous.features[keep_rows] if previous and keep_rows else np.zeros((0, dim), np.float32)
        features = np.concatenate([kept_features, *new_features]) if new_features else kept_features
        rows = [previous.rows[i] for i in keep_rows] + new_rows if previous else new_rows
        report.faces_indexed = len(rows)

        pca = None
        search_features = features
        if model == "vgg16" and self.settings.vgg16_pca_components > 0 and len(features) > 2:
            projection = Projection.fit(features, self.settings.vgg16_pca_components)
            if projection is not None:
                pca = {"mean": projection.mean, "components": projection.components}
                search_features = projection.apply(features)
        manifest = new_manifest(
            model=model, weights_sha256=weights_sha, pipeline=pipeline, dim=int(search_features.shape[1]),
            count=len(rows), gallery=gallery,
        )  # fmt: skip
        stored = StoredIndex(manifest=manifest, features=features, rows=rows, files=files, pca=pca)
        search = VectorSearch.build(
            search_features,
            use_ann=len(rows) >= self.settings.ann_threshold,
            hnsw_m=self.settings.hnsw_m,
            ef_search=self.settings.hnsw_ef_search,
        )
        version = write_index(index_dir, stored, ann_index=search.ann_index, before_commit=before_commit)
        stored.directory = version
        loaded = LoadedIndex(stored=stored, search=search, projection=Projection(**pca) if pca else None, gallery=gallery)
        if index_dir == self.settings.index_dir(model):
            self._indexes[model] = loaded  # one reference swap: running searches keep the old object
        report.seconds = time.perf_counter() - started
        return report

    def _prepare_chunk(self, model: str, chunk) -> list[tuple]:
        """Decode, detect and crop one chunk: (relative path, sha, change, error or None, [(crop or image, box)])."""
        decoded, images = [], []
        for relative, path, sha, change in chunk:
            try:
                images.append(self._read(path, name=relative))
                decoded.append((relative, sha, change, None))
            except BadInputError as error:
                decoded.append((relative, sha, change, str(error)))
        if model == "vgg16":
            faces_per_image = [[(image, (0, 0, image.shape[1], image.shape[0]))] for image in images]
        else:
            faces_per_image = []
            for image, faces in zip(images, self.detector.detect(images) if images else []):
                chosen = faces if self.settings.index_all_faces else faces[:1]
                faces_per_image.append([(self._crop(image, face), face.box) for face in chosen])
        prepared, position = [], 0
        for relative, sha, change, error in decoded:
            if error is None:
                prepared.append((relative, sha, change, None, faces_per_image[position]))
                position += 1
            else:
                prepared.append((relative, sha, change, error, []))
        return prepared

    def _embed_chunk(self, model: str, prepared, files: dict, report: IndexReport) -> tuple[list[dict], np.ndarray]:
        rows: list[dict] = []
        inputs: list[np.ndarray] = []
        for relative, sha, change, error, faces in prepared:
            if error is not None:
                # Remembered with its checksum, so an unchanged broken file is not retried every run.
                files[relative] = {"sha256": sha, "faces": 0, "error": error}
                report.skipped += 1
                report.skipped_files.append(error)  # the message starts with the file's gallery path
                continue
            files[relative] = {"sha256": sha, "faces": len(faces)}
            setattr(report, change, getattr(report, change) + 1)
            if not faces:
                report.no_face += 1
            for pixels, box in faces:
                inputs.append(pixels)
                rows.append(_row(relative, sha, box))
        if model == "vgg16":
            return rows, self.vgg16.embed_images(inputs)
        if not inputs:
            return rows, np.zeros((0, self.facenet.dim), np.float32)
        return rows, self.facenet.embed(np.stack(inputs), flip=self.settings.flip_gallery)

    def _query_embeddings(self, model: str, images: list[np.ndarray], faces: list[list[DetectedFace]], loaded: LoadedIndex):
        """Query vectors as search compares them: FaceNet, one per face, flip-averaged if FLIP_QUERIES;
        VGG16, one per whole image, projected by the index's PCA."""
        if model == "vgg16":
            vectors = self.vgg16.embed_images(images)
            return loaded.projection.apply(vectors) if loaded.projection is not None else vectors
        crops = [self._crop(image, face) for image, image_faces in zip(images, faces) for face in image_faces]
        if not crops:
            return np.zeros((0, self.facenet.dim), np.float32)
        return self.facenet.embed(np.stack(crops), flip=self.settings.flip_queries)

    def main_face_vectors(self, model: str, paths: list[Path], loaded: LoadedIndex) -> list[np.ndarray | None]:
        """Each photo's most prominent face as a query vector (None: unreadable or no face). For evaluation."""
        images: list[np.ndarray] = []
        readable: list[int] = []
        for position, path in enumerate(paths):
            try:
                images.append(self._read(path))
                readable.append(position)
            except BadInputError:
                continue
        vectors: list[np.ndarray | None] = [None] * len(paths)
        if not images:
            return vectors
        if model == "vgg16":
            for position, vector in zip(readable, self._query_embeddings(model, images, [], loaded)):
                vectors[position] = vector
            return vectors
        main_faces = [faces[:1] for faces in self.detector.detect(images)]
        embedded = iter(self._query_embeddings(model, images, main_faces, loaded))
        for position, faces in zip(readable, main_faces):
            if faces:
                vectors[position] = next(embedded)
        return vectors

    def _read(self, path: Path, name: str | None = None) -> np.ndarray:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise BadInputError(f"{name or path}: cannot read ({error.strerror or error})") from error
        return self.decode(data, name=name or path.name)

    def _crop(self, image: np.ndarray, face: DetectedFace) -> np.ndarray:
        return crop_face(
            image, face, size=FACENET_INPUT_SIZE, margin=self.settings.face_margin, align=self.settings.align_faces
        )

    # ---- search -------------------------------------------------------------------------

    def check_k(self, k: int) -> int:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.settings.max_k:
            raise BadInputError(f"k must be a whole number from 1 to {self.settings.max_k}, not {k!r}")
        return k

    def search_bytes(
        self, data: bytes, *, model: str = "facenet", k: int | None = None, max_faces: int | None = None, name: str = "photo"
    ) -> SearchResult:
        """Decode an uploaded photo and search it (see `search_image`)."""
        return self.search_image(self.decode(data, name=name), model=model, k=k, max_faces=max_faces, name=name)

    def decode(self, data: bytes, name: str = "photo") -> np.ndarray:
        """An uploaded photo as an upright RGB array, within the size and pixel limits (else BadImageError)."""
        s = self.settings
        return decode_image(data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, name=name)

    def search_path(self, path: Path, **kwargs) -> SearchResult:
        return self.search_image(self._read(Path(path)), name=str(path), **kwargs)

    def search_image(
        self, image: np.ndarray, *, model: str = "facenet", k: int | None = None, max_faces: int | None = None, name: str = "photo"
    ) -> SearchResult:
        """Search every face of `image` (FaceNet) or the whole image (VGG16). No face: `faces` is empty."""
        self.check_model(model)
        k = self.check_k(self.settings.default_k if k is None else k)
        self.load(model)
        loaded = self.loaded_index(model)
        ms: dict[str, float] = {}
        started = time.perf_counter()
        if model == "facenet":
            faces = self.detector.detect([image])[0][:max_faces]
            boxes = [(face.box, face.confidence) for face in faces]
            ms["detect"] = (time.perf_counter() - started) * 1000
        else:  # VGG16 searches the whole image: no detection
            faces = []
            boxes = [((0, 0, image.shape[1], image.shape[0]), 1.0)]
            ms["detect"] = 0.0
        started = time.perf_counter()
        queries = self._query_embeddings(model, [image], [faces], loaded)
        ms["embed"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        similarities, indices = loaded.search.search(queries, k)
        results = []
        for (box, confidence), face_similarities, face_indices in zip(boxes, similarities, indices):
            matches = []
            for rank, (similarity, row_number) in enumerate(zip(face_similarities, face_indices), start=1):
                if row_number < 0:  # FAISS pads with -1 when it finds fewer than k
                    continue
                row = loaded.stored.rows[row_number]
                matches.append(
                    Match(
                        rank=rank,
                        name=row["name"],
                        path=str(loaded.gallery / row["path"]),
                        similarity=float(similarity),
                        distance=float(similarity_to_distance(similarity)),
                    )
                )
            results.append(FaceResult(box=tuple(int(v) for v in box), confidence=float(confidence), matches=matches))
        ms["search"] = (time.perf_counter() - started) * 1000
        return SearchResult(image=name, model=model, faces=results, ms=ms)

    def find_faces(self, image: np.ndarray) -> list[DetectedFace]:
        """The faces MTCNN finds in `image`, largest/most prominent first (loads the detector)."""
        return self.detector.detect([image])[0]


def _row(relative: str, sha: str, box) -> dict:
    return {
        "path": relative,
        "name": person_name(Path(relative)),
        "box": [int(v) for v in box],
        "sha256": sha,
    }
