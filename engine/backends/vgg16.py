"""VGG16 backend: the whole image, fc2 features (4096-d), PCA fitted on the gallery, cosine search."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np

from engine.backends.base import ModelBackend, Region
from engine.models.vgg16 import VGG16_DIM, VGG16Embedder
from engine.runtime.onnx import CONVERT_INSTALL_HINT
from engine.search.identity import IdentityParams
from engine.search.vectors import Projection
from engine.settings import EngineSettings


class VGG16Backend(ModelBackend):
    name = "vgg16"
    description = "compares whole images, no face detection"
    embeds_faces = False
    # VGG16 compares whole images, not faces: its threshold is the plain similarity level the bot used before,
    # not calibrated (no development run with its weights).
    default_identity = IdentityParams(threshold=0.5, neighbours=10)

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.network = VGG16Embedder(settings.vgg16_weights, random_weights=settings.vgg16_random_weights)

    @property
    def dim(self) -> int:
        components = self.settings.vgg16_pca_components
        return components if components > 0 else VGG16_DIM

    def weights_path(self) -> Path:
        return self.settings.vgg16_weights

    def weights_sha256(self) -> str:
        return "random-weights" if self.settings.vgg16_random_weights else super().weights_sha256()

    def problem(self) -> str | None:
        if not self.network.available():
            return (
                f"VGG16 weights missing ({self.weights_path()}); fetch them (553 MB, needs internet access) "
                "with: python -m engine models fetch vgg16"
            )
        if importlib.util.find_spec("tensorflow") is None:  # found, not imported
            return f"VGG16 runs on TensorFlow, which this install lacks: {CONVERT_INSTALL_HINT}"
        return None

    def load(self) -> None:
        self.network.load()

    def pipeline_params(self) -> dict:
        return {"pca_components": self.settings.vgg16_pca_components}

    @staticmethod
    def _whole(image: np.ndarray) -> list[Region]:
        return [Region(pixels=image, box=(0, 0, int(image.shape[1]), int(image.shape[0])), confidence=1.0)]

    def gallery_regions(self, images: list[np.ndarray]) -> list[list[Region]]:
        return [self._whole(image) for image in images]

    def query_regions(self, images: list[np.ndarray], max_faces: int | None) -> list[list[Region]]:
        return [self._whole(image) for image in images]

    def embed(self, regions: list[Region], *, query: bool) -> np.ndarray:
        return self.network.embed_images([region.pixels for region in regions])

    def fit_projection(self, vectors: np.ndarray) -> bytes | None:
        """PCA to VGG16_PCA_COMPONENTS, fitted once, on the vectors of a store's first write.

        A gallery with fewer photos than components gets zero-padded components, so the
        stored dimension stays what the settings say.
        """
        components = self.settings.vgg16_pca_components
        if components <= 0:
            return None
        projection = Projection.fit(vectors, components)
        if projection is None:  # too few photos to fit anything: the identity on the first components
            projection = Projection(np.zeros(VGG16_DIM, np.float32), np.eye(components, VGG16_DIM, dtype=np.float32))
        padded = np.zeros((components, VGG16_DIM), np.float32)
        padded[: len(projection.components)] = projection.components
        buffer = io.BytesIO()
        np.savez(buffer, mean=projection.mean, components=padded)
        return buffer.getvalue()

    def project(self, vectors: np.ndarray, projection: bytes | None) -> np.ndarray:
        if projection is None:
            return vectors
        arrays = np.load(io.BytesIO(projection))
        return Projection(arrays["mean"], arrays["components"]).apply(vectors)
