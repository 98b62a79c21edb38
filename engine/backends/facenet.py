"""FaceNet backend: MTCNN faces, aligned crops, 128-d embeddings; on ONNX Runtime or on TensorFlow (ENGINE_RUNTIME).

Under the onnx runtime nothing here imports TensorFlow or Keras: FaceNet and MTCNN's networks run from the
graphs `models fetch` converted and checked (engine/runtime/onnx.py, engine/models/mtcnn_onnx.py).

Fingerprint rule: the index fingerprint names the Keras weights (facenet_keras.h5's sha256) under both
runtimes, so an index built on one runtime is searched on the other. The ONNX graphs count as those
weights because `models fetch` accepts a graph only when its vectors agree with Keras' within cosine
0.99999 on real face crops and MTCNN's boxes within a pixel (the tolerance every vector comparison
in the project uses), and the graph is opened only when its sha256 matches the manifest that names
the h5 it came from. Graphs of other weights name another h5: another fingerprint, a refused index.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.backends.base import ModelBackend, Region
from engine.errors import ModelUnavailableError
from engine.models.align import face_crop
from engine.models.facenet_onnx import FACENET_DIM, FACENET_INPUT_SIZE, OnnxFaceNet
from engine.models.mtcnn import FaceDetector
from engine.models.mtcnn_onnx import open_mtcnn
from engine.runtime.device import cpu_cores
from engine.runtime.onnx import (
    CONVERT_INSTALL_HINT,
    FACENET_GRAPH,
    FETCH_HINT,
    MANIFEST,
    MTCNN_GRAPHS,
    SessionConfig,
    onnxruntime_module,
    read_manifest,
    resolve_runtime,
    source_sha256,
)
from engine.search.identity import IdentityParams
from engine.settings import EngineSettings
from engine.types import DetectedFace

if TYPE_CHECKING:  # imported when the keras runtime is chosen (it imports Keras)
    from engine.models.facenet_keras import FaceNetEmbedder


class FaceNetBackend(ModelBackend):
    name = "facenet"
    description = "finds faces (MTCNN) and compares them (FaceNet)"
    embeds_faces = True
    # Calibrated on open-set splits of the LFW development people (unaligned original photos, flip-averaged
    # queries, 10 splits per fold; benchmarks/open_set.py): the cohort of the next 20 people at half weight had
    # the best worst-fold trade-off; 0.427 is the threshold that best meets FPIR <= 0.05 and FNIR <= 0.04 on both
    # folds together. There: FPIR 0.048 / FNIR 0.043 (A–F) and FPIR 0.041 / FNIR 0.033 (G–L); with the fallback
    # face added later (FACE_FALLBACK_CONFIDENCE, chosen on rank-1, threshold unchanged) A–F FNIR is 0.038. A higher
    # threshold names fewer strangers and misses more enrolled people (the whole curve: `python -m engine eval
    # --open-set`); OPEN_SET_THRESHOLD overrides it.
    default_identity = IdentityParams(threshold=0.427, neighbours=50, cohort=20, cohort_weight=0.5)
    dim = FACENET_DIM

    def __init__(self, settings: EngineSettings):
        super().__init__(settings)
        self.session_threads = cpu_cores()  # ONNX Runtime's intra-op threads (a worker process: its share)
        self._runtime: str | None = None
        self._detector: FaceDetector | None = None
        self._network: OnnxFaceNet | FaceNetEmbedder | None = None
        self._photos_detector: FaceDetector | None = None

    @property
    def photos_detector(self) -> FaceDetector:
        """Gallery photos in the photos layout: a larger detection scale (small faces in large event photos) and
        PHOTOS_MIN_FACE_SIZE, on the same loaded networks."""
        if self._photos_detector is None:
            s = self.settings
            self._photos_detector = self.detector.sharing(
                max_side=s.photos_detect_max_side, min_face_size=s.photos_min_face_size
            )
        return self._photos_detector

    @property
    def runtime(self) -> str:
        """ "onnx" or "keras" (ENGINE_RUNTIME; "auto" resolved once)."""
        if self._runtime is None:
            self._runtime = resolve_runtime(self.settings.engine_runtime, self.settings.models_dir)
        return self._runtime

    def _session_config(self) -> SessionConfig:
        return SessionConfig(threads=self.session_threads, device=self.settings.device)

    @property
    def detector(self) -> FaceDetector:
        """MTCNN with the detection settings, on this backend's runtime (nothing loaded until used)."""
        if self._detector is None:
            s = self.settings
            open_network = None
            if self.runtime == "onnx":
                open_network = functools.partial(open_mtcnn, s.models_dir, self._session_config())
            self._detector = FaceDetector(
                max_side=s.detect_max_side,
                min_face_size=s.min_face_size,
                confidence=s.face_confidence,
                fallback_confidence=s.face_fallback_confidence,
                retry_padding=s.face_retry_padding,
                batch_size=s.detect_batch_size,
                open_network=open_network,
            )
        return self._detector

    @detector.setter
    def detector(self, detector: FaceDetector) -> None:
        self._detector = detector

    @property
    def network(self) -> OnnxFaceNet | FaceNetEmbedder:
        """The FaceNet network wrapper, created on first use (importing Keras takes seconds)."""
        if self._network is None:
            s = self.settings
            if self.runtime == "onnx":
                self._network = OnnxFaceNet(s.models_dir, self._session_config(), batch_size=s.embed_batch_size)
            else:
                from engine.models.facenet_keras import FaceNetEmbedder

                self._network = FaceNetEmbedder(s.facenet_weights, batch_size=s.embed_batch_size, xla=s.xla)
        return self._network

    @network.setter
    def network(self, network: OnnxFaceNet | FaceNetEmbedder) -> None:
        self._network = network

    def weights_path(self) -> Path:
        return self.settings.facenet_weights

    def weights_sha256(self) -> str:
        """The Keras weights' sha256 under both runtimes (see the fingerprint rule above)."""
        if self.runtime == "onnx":
            with self._sha_lock:
                if self._weights_sha is None:
                    self._weights_sha = source_sha256(self.settings.models_dir, self.weights_path().name)
                return self._weights_sha
        return super().weights_sha256()

    def model_files(self) -> list[Path]:
        """On the onnx runtime the manifest and the four graphs (no Keras file); on keras the .h5."""
        if self.runtime != "onnx":
            return super().model_files()
        names = (MANIFEST, FACENET_GRAPH, *MTCNN_GRAPHS.values())
        return [path for path in (self.settings.models_dir / name for name in names) if path.is_file()]

    def problem(self) -> str | None:
        if self.runtime == "onnx":
            try:
                onnxruntime_module()
                read_manifest(self.settings.models_dir)
            except ModelUnavailableError as error:
                return str(error)
            for filename in (FACENET_GRAPH, *MTCNN_GRAPHS.values()):
                if not (self.settings.models_dir / filename).is_file():
                    return f"ONNX graph {self.settings.models_dir / filename} is missing; {FETCH_HINT}"
            return None
        if not self.weights_path().is_file():
            return f"FaceNet weights missing ({self.weights_path()}); fetch them with: python -m engine models fetch"
        if importlib.util.find_spec("tensorflow") is None:  # found, not imported
            return f"ENGINE_RUNTIME=keras needs TensorFlow, which this install lacks: {CONVERT_INSTALL_HINT}"
        return None

    def load_regions(self) -> None:
        self.detector.load()

    def load(self) -> None:
        self.detector.load()
        self.network.load()

    def warm_up(self) -> None:
        self.require()
        self.network.warm_up((4, 8))  # photos with up to four faces, with their mirror images

    def pipeline_params(self) -> dict:
        s = self.settings
        return {
            "detect_max_side": s.detect_max_side,
            "min_face_size": s.min_face_size,
            "face_confidence": s.face_confidence,
            "face_fallback_confidence": s.face_fallback_confidence,
            "face_retry_padding": s.face_retry_padding,
            "face_margin": s.face_margin,
            "face_alignment": s.face_alignment,
            "flip_gallery": s.flip_gallery,
            "index_all_faces": s.index_all_faces,
            # the photos layout's own detection; absent in the people layout so its stores keep their fingerprint
            **(
                {"photos_detect_max_side": s.photos_detect_max_side, "photos_min_face_size": s.photos_min_face_size}
                if s.gallery_layout == "photos"
                else {}
            ),
        }

    def find_faces(self, images: list[np.ndarray]) -> list[list[DetectedFace]]:
        """Faces per image, most prominent (largest, most central) first."""
        self.detector.load()
        return self.detector.detect(images) if images else []

    def crop(self, image: np.ndarray, face: DetectedFace) -> Region:
        s = self.settings
        pixels = face_crop(image, face, size=FACENET_INPUT_SIZE, margin=s.face_margin, alignment=s.face_alignment)
        x, y, w, h = face.box
        return Region(
            pixels=pixels,
            box=(int(x), int(y), int(w), int(h)),
            confidence=float(face.confidence),
            landmarks=face.landmarks,
        )

    def gallery_regions(self, images: list[np.ndarray]) -> list[list[Region]]:
        if self.settings.gallery_layout == "photos":  # every face, found at the photos layout's scale
            self.detector.load()
            found = self.photos_detector.detect(images) if images else []
            return [[self.crop(image, face) for face in faces] for image, faces in zip(images, found)]
        chosen = slice(None) if self.settings.index_all_faces else slice(0, 1)
        return [
            [self.crop(image, face) for face in faces[chosen]] for image, faces in zip(images, self.find_faces(images))
        ]

    def query_regions(self, images: list[np.ndarray], max_faces: int | None) -> list[list[Region]]:
        return [
            [self.crop(image, face) for face in faces[:max_faces]]
            for image, faces in zip(images, self.find_faces(images))
        ]

    def embed(self, regions: list[Region], *, query: bool) -> np.ndarray:
        if not regions:
            return np.zeros((0, self.dim), np.float32)
        flip = self.settings.flip_queries if query else self.settings.flip_gallery
        return self.network.embed(np.stack([region.pixels for region in regions]), flip=flip)
