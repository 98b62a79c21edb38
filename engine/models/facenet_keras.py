"""FaceNet (Inception-ResNet v1, Keras 2.1 `facenet_keras.h5`) rebuilt for Keras 3.

The h5 stores its Lambda layers as Python 3.6 bytecode, which Keras 3 cannot load.
We rebuild the graph from the h5's JSON config, replace each Lambda with `ScaleSum`
(`a + b * scale`, which is all those lambdas do), and copy the weights in by layer name.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from engine.errors import ModelUnavailableError
from engine.models.facenet_onnx import FACENET_DIM, FACENET_INPUT_SIZE, embed_crops, prewhiten
from engine.runtime.quiet import import_quietly

import_quietly("tensorflow")  # Keras 3 imports TensorFlow: without its C++ start-up lines
import keras  # noqa: E402

__all__ = ["FACENET_DIM", "FACENET_INPUT_SIZE", "FaceNetEmbedder", "build_facenet", "prewhiten"]

XLA_MAX_BATCH = 8  # query-sized batches (up to four faces with their mirror images)


class ScaleSum(keras.layers.Layer):
    """Residual scaling of Inception-ResNet: `inputs[0] + inputs[1] * scale`."""

    def __init__(self, scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs: Any) -> Any:
        shortcut, residual = inputs
        return shortcut + residual * self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


def _make_layer(class_name: str, config: dict) -> keras.layers.Layer:
    """One Keras 3 layer from a Keras 2.1 layer config (only the kinds FaceNet uses)."""
    name = config["name"]
    if class_name == "Conv2D":
        return keras.layers.Conv2D(
            filters=config["filters"],
            kernel_size=tuple(config["kernel_size"]),
            strides=tuple(config["strides"]),
            padding=config["padding"],
            activation=config["activation"],
            use_bias=config["use_bias"],
            name=name,
        )
    if class_name == "BatchNormalization":
        return keras.layers.BatchNormalization(
            axis=config["axis"],
            momentum=config["momentum"],
            epsilon=config["epsilon"],
            center=config["center"],
            scale=config["scale"],
            name=name,
        )
    if class_name == "Activation":
        return keras.layers.Activation(config["activation"], name=name)
    if class_name == "MaxPooling2D":
        return keras.layers.MaxPooling2D(
            pool_size=tuple(config["pool_size"]), strides=tuple(config["strides"]), padding=config["padding"], name=name
        )
    if class_name == "Concatenate":
        return keras.layers.Concatenate(axis=config["axis"], name=name)
    if class_name == "Lambda":
        return ScaleSum(scale=config["arguments"]["scale"], name=name)
    if class_name == "GlobalAveragePooling2D":
        return keras.layers.GlobalAveragePooling2D(name=name)
    if class_name == "Dropout":
        return keras.layers.Dropout(config["rate"], name=name)
    if class_name == "Dense":
        return keras.layers.Dense(
            units=config["units"], activation=config["activation"], use_bias=config["use_bias"], name=name
        )
    raise ModelUnavailableError(f"facenet_keras.h5 holds an unexpected layer type {class_name!r}")


def build_facenet(weights_path: Path) -> keras.Model:
    """Rebuild the network from the h5's JSON config and load its weights by layer name."""
    if not weights_path.is_file():
        raise ModelUnavailableError(
            f"FaceNet weights not found at {weights_path}. Fetch them with: python -m engine models fetch"
        )
    with h5py.File(weights_path, "r") as h5:
        model_config = json.loads(h5.attrs["model_config"])["config"]
        tensors: dict[str, keras.KerasTensor] = {}
        layers: dict[str, keras.layers.Layer] = {}
        for spec in model_config["layers"]:
            name, class_name, config = spec["name"], spec["class_name"], spec["config"]
            if class_name == "InputLayer":
                tensors[name] = keras.Input(shape=tuple(config["batch_input_shape"][1:]), name=name)
                continue
            inbound = [tensors[node[0]] for node in spec["inbound_nodes"][0]]
            layer = _make_layer(class_name, config)
            tensors[name] = layer(inbound if len(inbound) > 1 else inbound[0])
            layers[name] = layer
        inputs = [tensors[name] for name, _, _ in model_config["input_layers"]]
        outputs = [tensors[name] for name, _, _ in model_config["output_layers"]]
        model = keras.Model(inputs=inputs[0], outputs=outputs[0], name="facenet")

        weights_group = h5["model_weights"]
        missing = []
        for name, layer in layers.items():
            if not layer.weights:
                continue
            if name not in weights_group:
                missing.append(name)
                continue
            group = weights_group[name]
            arrays = [np.asarray(group[weight_name]) for weight_name in group.attrs["weight_names"]]
            if len(arrays) != len(layer.weights) or any(
                a.shape != tuple(w.shape) for a, w in zip(arrays, layer.weights)
            ):
                missing.append(name)
                continue
            layer.set_weights(arrays)
        if missing:
            raise ModelUnavailableError(
                f"{weights_path} does not match the FaceNet architecture: no weights for {missing[:5]}"
            )
    return model


class FaceNetEmbedder:
    """Loads the network once (idempotent `load()`), then embeds batches of 160×160 face crops."""

    name = "facenet"
    dim = FACENET_DIM
    input_size = FACENET_INPUT_SIZE

    def __init__(self, weights_path: Path, batch_size: int = 32, xla: bool = True):
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.xla = xla
        self._model: keras.Model | None = None
        self._xla_sizes: set[int] = set()
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                import tensorflow as tf

                model = build_facenet(self.weights_path)

                # One graph for any batch size (Keras' predict() retraces per shape), and, for the
                # small batches of a query, an XLA-compiled one: ~1.5x faster there, but slower than
                # the plain graph on indexing batches, and it compiles (~2 s) once per batch size, so
                # small batches are padded to powers of two and only warmed-up sizes use it.
                @tf.autograph.experimental.do_not_convert
                def forward(x: np.ndarray) -> Any:
                    return model(x, training=False)

                signature = [tf.TensorSpec([None, FACENET_INPUT_SIZE, FACENET_INPUT_SIZE, 3], tf.float32)]
                self._predict = tf.function(forward, input_signature=signature)
                self._predict_small = tf.function(forward, input_signature=signature, jit_compile=True)
                self._model = model
                self._compile((1, 2))  # a query face, and a query face with its mirror image

    def warm_up(self, sizes: tuple[int, ...]) -> None:
        """Compile the batch sizes a long-running service will meet, so no user waits for it."""
        self.load()
        self._compile(sizes)

    def _compile(self, sizes: tuple[int, ...]) -> None:
        for size in sizes:
            zeros = np.zeros((size, FACENET_INPUT_SIZE, FACENET_INPUT_SIZE, 3), np.float32)
            if self.xla and size <= XLA_MAX_BATCH:
                self._predict_small(zeros)
                self._xla_sizes.add(size)
            else:
                self._predict(zeros)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on at most `batch_size` prewhitened crops.

        Batches that pad to an already compiled XLA size take the XLA graph; all others the
        plain one, so no request ever waits for a compilation.
        """
        count = len(batch)
        padded_size = 1 << (count - 1).bit_length()
        if padded_size not in self._xla_sizes:
            return np.asarray(self._predict(batch))
        if padded_size > count:
            batch = np.concatenate([batch, np.zeros((padded_size - count, *batch.shape[1:]), batch.dtype)])
        return np.asarray(self._predict_small(batch))[:count]

    def embed(self, faces: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """(N, 160, 160, 3) uint8 crops → (N, 128) float32, L2-normalised. N may be 0.

        With `flip`, each embedding is averaged with that of the mirrored crop (twice the work).
        """
        if len(faces):
            self.load()
        return embed_crops(self._forward, faces, batch_size=self.batch_size, flip=flip)
