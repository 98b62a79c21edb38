"""VGG16 whole-image baseline (as in the original notebooks): ImageNet weights, 4096-d `fc2` features."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import ModelUnavailableError
from engine.search.vectors import l2_normalize

VGG16_INPUT_SIZE = 224
VGG16_DIM = 4096


def _seeded_weights(model: Any, seed: int = 0) -> None:
    """Tests only: the same random weights in every process (He-normal kernels, zero biases), so an index
    built by one process means the same in the next."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel, bias = weights
        fan_in = int(np.prod(kernel.shape[:-1]))
        scale = np.float32(np.sqrt(2.0 / fan_in))
        layer.set_weights([rng.standard_normal(kernel.shape, np.float32) * scale, np.zeros_like(bias)])


class VGG16Embedder:
    """Loads VGG16 once; `embed` takes whole RGB images of any size."""

    name = "vgg16"
    dim = VGG16_DIM

    def __init__(self, weights_path: Path, batch_size: int = 16, random_weights: bool = False):
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.random_weights = random_weights
        self._model = None
        self._lock = threading.Lock()

    def available(self) -> bool:
        return self.random_weights or self.weights_path.is_file()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            if not self.available():
                raise ModelUnavailableError(
                    f"VGG16 weights not found at {self.weights_path}. Fetch them (553 MB, needs internet access) "
                    "with: python -m engine models fetch vgg16"
                )
            from engine.runtime.quiet import import_quietly

            tf = import_quietly("tensorflow")
            import keras

            base = keras.applications.VGG16(weights=None, include_top=True)
            if self.random_weights:
                _seeded_weights(base)
            else:
                base.load_weights(str(self.weights_path))
            model = keras.Model(base.input, base.get_layer("fc2").output)
            self._predict = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec([None, VGG16_INPUT_SIZE, VGG16_INPUT_SIZE, 3], tf.float32)],
            )
            self._predict(np.zeros((1, VGG16_INPUT_SIZE, VGG16_INPUT_SIZE, 3), np.float32))
            self._model = model

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB images → (N, 4096) float32, L2-normalised."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        self.load()
        from keras.applications.vgg16 import preprocess_input

        outputs = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                np.asarray(
                    Image.fromarray(image).resize((VGG16_INPUT_SIZE, VGG16_INPUT_SIZE), Image.Resampling.BILINEAR),
                    np.float32,
                )
                for image in images[start : start + self.batch_size]
            ]
            outputs.append(np.asarray(self._predict(preprocess_input(np.stack(chunk)))))
        return l2_normalize(np.concatenate(outputs))
