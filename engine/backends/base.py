"""What every model backend provides: its weights check, loading, the regions it embeds and how.

The index builder and the searcher only talk to this interface; the differences between
FaceNet (faces found by MTCNN, 128-d) and VGG16 (the whole image, 4096-d, PCA) live in the
backend modules and nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.errors import ModelUnavailableError
from engine.images import file_sha256
from engine.search.identity import IdentityParams
from engine.settings import EngineSettings


@dataclass(frozen=True)
class Region:
    """What a backend embeds from a photo: a face crop (FaceNet) or the whole image (VGG16)."""

    pixels: np.ndarray  # uint8 RGB, ready for `embed`
    box: tuple[int, int, int, int]  # x, y, width, height in the photo
    confidence: float
    landmarks: np.ndarray | None = None  # (5, 2) in the photo (faces); None for whole images


class ModelBackend(ABC):
    """One embedding model. `load()` is idempotent; everything that needs the networks calls it.

    The class attributes say what the model is; the registry (engine/backends/__init__.py) lists the classes,
    and everything that names or describes models (the command line, the bot's texts) reads them from there.
    """

    name: ClassVar[str]  # the model's name in settings, commands, store headers and index folders
    description: ClassVar[str]  # what it compares, in a few words for users
    embeds_faces: ClassVar[bool]  # its stored rows are faces (persons can be made of them), not whole images
    default_identity: ClassVar[IdentityParams]  # its open-set settings (OPEN_SET_THRESHOLD overrides the threshold)

    @property
    def dim(self) -> int:
        """Length of the stored vectors (after the projection, if any)."""
        raise NotImplementedError

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self._weights_sha: str | None = None
        self._fingerprint: str | None = None
        self._sha_lock = threading.Lock()

    @property
    def runtime(self) -> str:
        """What runs this backend's networks: "keras" (TensorFlow) or "onnx" (ONNX Runtime; ENGINE_RUNTIME)."""
        return "keras"

    # ---- weights ------------------------------------------------------------------------
    @abstractmethod
    def problem(self) -> str | None:
        """None when the model can be used, else a message saying how to get its weights."""

    @abstractmethod
    def load(self) -> None:
        """Load the networks once (raise ModelUnavailableError when the weights are missing)."""

    def load_regions(self) -> None:  # noqa: B027 (a hook: nothing to load by default, backends may override)
        """Load only what `gallery_regions` needs (a detection worker process holds no embedding network)."""

    def require(self) -> None:
        problem = self.problem()
        if problem:
            raise ModelUnavailableError(problem)
        self.load()

    def warm_up(self) -> None:
        """A long-running service's start: load and compile what a query needs."""
        self.require()

    @abstractmethod
    def weights_path(self) -> Path: ...

    def model_files(self) -> list[Path]:
        """The files `load` reads (what a Ray node without MODELS_DIR is sent); those that exist."""
        path = Path(self.weights_path())
        return [path] if path.is_file() else []

    def weights_sha256(self) -> str:
        with self._sha_lock:
            if self._weights_sha is None:
                self._weights_sha = file_sha256(self.weights_path())
            return self._weights_sha

    # ---- what changes the vectors -------------------------------------------------------
    @abstractmethod
    def pipeline_params(self) -> dict:
        """Settings that change the stored vectors: a store built with others is rebuilt, never mixed."""

    def fingerprint(self) -> str:
        """Weights checksum and vector-changing settings in one hash (computed once: every search checks it)."""
        if self._fingerprint is None:
            described = {
                "model": self.name,
                "weights_sha256": self.weights_sha256(),
                "pipeline": self.pipeline_params(),
            }
            self._fingerprint = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
        return self._fingerprint

    # ---- regions and vectors ------------------------------------------------------------
    @abstractmethod
    def gallery_regions(self, images: list[np.ndarray]) -> list[list[Region]]:
        """Per gallery photo, the regions to index (empty: no face)."""

    @abstractmethod
    def query_regions(self, images: list[np.ndarray], max_faces: int | None) -> list[list[Region]]:
        """Per query photo, the regions to search, most prominent first."""

    @abstractmethod
    def embed(self, regions: list[Region], *, query: bool) -> np.ndarray:
        """(len(regions), raw dim) float32, L2-normalised; query embeddings may differ (e.g. mirror averaging)."""

    # ---- open-set decision ----------------------------------------------------------------
    def identity_params(self) -> IdentityParams:
        """The model's open-set settings (`default_identity`); OPEN_SET_THRESHOLD overrides the threshold."""
        params = self.default_identity
        if self.settings.open_set_threshold is not None:
            params = dataclasses.replace(params, threshold=self.settings.open_set_threshold)
        return params

    # ---- optional projection (VGG16's PCA), kept with the store ----------------------------
    def fit_projection(self, vectors: np.ndarray) -> bytes | None:
        """A projection fitted on the first vectors a store gets, serialised; None: this model has none."""
        return None

    def project(self, vectors: np.ndarray, projection: bytes | None) -> np.ndarray:
        return vectors
