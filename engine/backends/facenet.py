"""FaceNet backend: MTCNN faces, aligned crops, 128-d embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.backends.base import ModelBackend, Region
from engine.detect import FaceDetector, face_crop
from engine.types import DetectedFace

FACENET_DIM = 128
FACENET_INPUT_SIZE = 160


class FaceNetBackend(ModelBackend):
    name = "facenet"
    dim = FACENET_DIM

    def __init__(self, settings):
        super().__init__(settings)
        self.detector = FaceDetector(
            max_side=settings.detect_max_side,
            min_face_size=settings.min_face_size,
            confidence=settings.face_confidence,
            fallback_confidence=settings.face_fallback_confidence,
            retry_padding=settings.face_retry_padding,
            batch_size=settings.detect_batch_size,
        )
        self._network = None
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
    def network(self):
        """The FaceNet network wrapper, created on first use (importing Keras takes seconds)."""
        if self._network is None:
            from engine.facenet import FaceNetEmbedder

            s = self.settings
            self._network = FaceNetEmbedder(s.facenet_weights, batch_size=s.embed_batch_size, xla=s.xla)
        return self._network

    @network.setter
    def network(self, network) -> None:
        self._network = network

    def weights_path(self) -> Path:
        return self.settings.facenet_weights

    def problem(self) -> str | None:
        if not self.weights_path().is_file():
            return f"FaceNet weights missing ({self.weights_path()}); fetch them with: python -m engine models fetch"
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
        box = tuple(int(v) for v in face.box)
        return Region(pixels=pixels, box=box, confidence=float(face.confidence), landmarks=face.landmarks)

    def gallery_regions(self, images: list[np.ndarray]) -> list[list[Region]]:
        if self.settings.gallery_layout == "photos":  # every face, found at the photos layout's scale
            self.detector.load()
            found = self.photos_detector.detect(images) if images else []
            return [[self.crop(image, face) for face in faces] for image, faces in zip(images, found)]
        chosen = slice(None) if self.settings.index_all_faces else slice(0, 1)
        return [[self.crop(image, face) for face in faces[chosen]] for image, faces in zip(images, self.find_faces(images))]

    def query_regions(self, images: list[np.ndarray], max_faces: int | None) -> list[list[Region]]:
        return [[self.crop(image, face) for face in faces[:max_faces]] for image, faces in zip(images, self.find_faces(images))]

    def embed(self, regions: list[Region], *, query: bool) -> np.ndarray:
        if not regions:
            return np.zeros((0, self.dim), np.float32)
        flip = self.settings.flip_queries if query else self.settings.flip_gallery
        return self.network.embed(np.stack([region.pixels for region in regions]), flip=flip)
