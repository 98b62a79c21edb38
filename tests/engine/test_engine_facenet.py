"""FaceNet rebuilt for Keras 3 from the real facenet_keras.h5: shape, weights; normalisation and determinism on both runtimes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from engine.models.facenet_keras import FACENET_DIM, FACENET_INPUT_SIZE, prewhiten
from support.helpers_engine import CLEAR_FACES, FACENET_WEIGHTS, assert_same_vectors, sample


@pytest.fixture(scope="module")
def face_crops(facenet_engine):
    """Aligned 160×160 crops of the main face of five sample photos (one per person)."""
    from engine.images import read_image

    crops = []
    for relative in CLEAR_FACES.values():
        image = read_image(sample(relative), max_bytes=10**8, max_pixels=10**8)
        faces = facenet_engine.backends["facenet"].detector.detect([image])[0]
        assert faces, f"no face found in {relative}"
        crops.append(facenet_engine.backends["facenet"].crop(image, faces[0]).pixels)
    return np.stack(crops)


@pytest.fixture(scope="module", params=["onnx", "keras"])
def network(request, facenet_engine, keras_engine):
    """The FaceNet network of each runtime (the session engine's default is onnx once `models fetch` wrote the graphs)."""
    engine = facenet_engine if request.param == facenet_engine.backends["facenet"].runtime else keras_engine
    assert engine.backends["facenet"].runtime == request.param
    return engine.backends["facenet"].network


def test_model_output_is_128_d_for_160px_input(keras_engine):
    model = keras_engine.backends["facenet"].network._model
    assert model is not None
    assert tuple(model.input_shape) == (None, FACENET_INPUT_SIZE, FACENET_INPUT_SIZE, 3)
    assert tuple(model.output_shape) == (None, FACENET_DIM)


def test_every_weighted_layer_is_loaded_from_the_h5(keras_engine):
    model = keras_engine.backends["facenet"].network._model
    weighted = [layer for layer in model.layers if layer.weights]
    with h5py.File(FACENET_WEIGHTS, "r") as h5:
        group = h5["model_weights"]
        h5_weighted = {name for name in group if len(group[name].attrs.get("weight_names", [])) > 0}
        assert {layer.name for layer in weighted} == h5_weighted
        assert len(weighted) > 200  # Inception-ResNet v1: hundreds of conv / batch-norm layers
        for layer in weighted:
            stored = [np.asarray(group[layer.name][n]) for n in group[layer.name].attrs["weight_names"]]
            loaded = [np.asarray(w) for w in layer.get_weights()]
            assert len(stored) == len(loaded), layer.name
            for a, b in zip(stored, loaded):
                np.testing.assert_array_equal(a, b, err_msg=layer.name)
        # one named layer checked explicitly: the final bottleneck projecting to 128 dimensions
        bottleneck = model.get_layer("Bottleneck")
        kernel = np.asarray(group["Bottleneck"][group["Bottleneck"].attrs["weight_names"][0]])
        assert kernel.shape == (1792, FACENET_DIM)
        np.testing.assert_array_equal(bottleneck.get_weights()[0], kernel)
        assert float(np.abs(kernel).sum()) > 0


def test_embeddings_are_l2_normalised_and_distinct(network, face_crops):
    features = network.embed(face_crops)
    assert features.shape == (len(face_crops), FACENET_DIM)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    similarities = features @ features.T
    off_diagonal = similarities[~np.eye(len(features), dtype=bool)]
    assert off_diagonal.max() < 0.9  # five different people are not near-identical


def test_embedding_of_the_same_crop_is_deterministic(network, face_crops):
    first = network.embed(face_crops[:1])
    again = network.embed(face_crops[:1])
    in_batch = network.embed(face_crops)[:1]
    assert_same_vectors(again, first)
    assert_same_vectors(in_batch, first)  # another batch shape: other float32 code paths, the same direction


def test_empty_batch_gives_empty_features(network):
    features = network.embed(np.zeros((0, 160, 160, 3), np.uint8))
    assert features.shape == (0, FACENET_DIM)


def test_flip_averaging_changes_the_vector_a_little(network, face_crops):
    with_flip = network.embed(face_crops, flip=True)
    without = network.embed(face_crops)
    np.testing.assert_allclose(np.linalg.norm(without, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(with_flip * without, axis=1)
    assert np.all(cosine > 0.85), cosine  # close: the same face
    assert np.all(cosine < 0.9999), cosine  # but not the same vector
    # and the flip-averaged vector is exactly the normalised mean of the face and its mirror
    mirrored = network.embed(face_crops[:, :, ::-1, :])
    expected = without + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert_same_vectors(with_flip, expected)


def test_prewhiten_standardises_each_image():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (3, 160, 160, 3)).astype(np.uint8)
    white = prewhiten(faces)
    assert white.dtype == np.float32  # the networks' input type: no conversion before each run
    np.testing.assert_allclose(white.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(white.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
