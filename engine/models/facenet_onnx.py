"""FaceNet on ONNX Runtime, with FaceNet's own processing: prewhitening, flip-averaging and L2 normalisation.

Both runtimes embed through `embed_crops` (engine/models/facenet_keras.py runs the Keras network through it), so
the pre-processing FaceNet was trained with lives here, once. Never imports TensorFlow or Keras.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.runtime.onnx import FACENET_GRAPH, SessionConfig, open_session
from engine.search.vectors import l2_normalize

FACENET_INPUT_SIZE = 160
FACENET_DIM = 128


def prewhiten(faces: np.ndarray) -> np.ndarray:
    """Per-image standardisation, as FaceNet was trained with; float32 throughout (the networks' input type: a
    float64 floor here made the whole batch float64, converted again before every run)."""
    faces = faces.astype(np.float32)
    axes = (1, 2, 3)
    mean = faces.mean(axis=axes, keepdims=True)
    std = faces.std(axis=axes, keepdims=True)
    std_adjusted = np.maximum(std, np.float32(1.0 / np.sqrt(faces[0].size)))
    return (faces - mean) / std_adjusted


def embed_crops(
    forward: Callable[[np.ndarray], np.ndarray], faces: np.ndarray, *, batch_size: int, flip: bool
) -> np.ndarray:
    """(N, 160, 160, 3) uint8 crops → (N, 128) L2-normalised through `forward` (prewhitened float batches).

    With `flip`, each embedding is averaged with that of the mirrored crop (twice the work). Both runtimes
    embed through this function: only `forward` differs.
    """
    if len(faces) == 0:
        return np.zeros((0, FACENET_DIM), np.float32)
    batch = prewhiten(faces)
    if flip:
        batch = np.concatenate([batch, batch[:, :, ::-1, :]])
    outputs = [forward(batch[start : start + batch_size]) for start in range(0, len(batch), batch_size)]
    features = np.concatenate(outputs)
    if flip:
        features = l2_normalize(features[: len(faces)]) + l2_normalize(features[len(faces) :])
    return l2_normalize(features)


class OnnxFaceNet:
    """FaceNet on ONNX Runtime: the session is created once (idempotent `load()`), then batches of crops embed."""

    name = "facenet"
    dim = FACENET_DIM
    input_size = FACENET_INPUT_SIZE

    def __init__(self, models_dir: Path, config: SessionConfig, batch_size: int = 32):
        self.models_dir = Path(models_dir)
        self.config = config
        self.batch_size = batch_size
        self._session: Any = None  # an onnxruntime.InferenceSession once loaded
        self._lock = threading.Lock()

    def load(self) -> None:
        """The session, created once. No run ahead: ONNX Runtime plans and pre-packs the weights when the session is
        created, so a first run takes what later ones take (measured); a zero batch would only add one more run,
        a whole query's embedding, to every start."""
        with self._lock:
            if self._session is None:
                self._session = open_session(self.models_dir, FACENET_GRAPH, self.config, gpu=True, arena=False)
                self._input = self._session.get_inputs()[0].name

    @property
    def providers(self) -> list[str]:
        self.load()
        return list(self._session.get_providers())

    def warm_up(self, sizes: tuple[int, ...]) -> None:
        """Nothing beyond `load()`: ONNX Runtime compiles nothing per batch size (Keras' XLA does), and running the
        sizes ahead would only hold memory a one-face query never needs."""
        self.load()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def embed(self, faces: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """(N, 160, 160, 3) uint8 crops → (N, 128) float32, L2-normalised. N may be 0."""
        if len(faces):
            self.load()
        return embed_crops(self._forward, faces, batch_size=self.batch_size, flip=flip)
