"""The model registry: every model's name, description and settings come from its backend class (no network loaded)."""

from __future__ import annotations

from typing import get_args

import pytest

from engine import MODEL_NAMES, EngineSettings
from engine.backends import BACKENDS, FACE_MODELS, check_model, create_backends
from engine.backends.facenet import FaceNetBackend
from engine.backends.vgg16 import VGG16Backend
from engine.errors import BadInputError
from engine.search.identity import IdentityParams
from engine.settings import ModelName


def test_names_come_from_the_registry():
    assert MODEL_NAMES == tuple(BACKENDS) == ("facenet", "vgg16")
    for name, backend in BACKENDS.items():
        assert backend.name == name


def test_the_settings_type_lists_the_registered_models():
    """ModelName is spelt out for pydantic and mypy (engine/settings.py cannot import the backends)."""
    assert get_args(ModelName) == MODEL_NAMES


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_backend_says_what_its_model_is(name):
    backend = BACKENDS[name]
    assert isinstance(backend.description, str) and backend.description
    assert isinstance(backend.embeds_faces, bool)
    assert isinstance(backend.default_identity, IdentityParams)


def test_faces_and_whole_images():
    assert FaceNetBackend.embeds_faces and not VGG16Backend.embeds_faces
    assert FACE_MODELS == ("facenet",)


def test_identity_params_are_the_backends_unless_overridden(tmp_path):
    backends = create_backends(EngineSettings(data_dir=tmp_path, models_dir=tmp_path))
    assert set(backends) == set(MODEL_NAMES)
    for name, backend in backends.items():
        assert backend.identity_params() == BACKENDS[name].default_identity
    assert FaceNetBackend.default_identity.threshold == 0.427  # the LFW calibration (see the backend's note)
    overridden = create_backends(EngineSettings(data_dir=tmp_path, models_dir=tmp_path, open_set_threshold=0.6))
    for name, backend in overridden.items():
        assert backend.identity_params().threshold == 0.6
        assert backend.identity_params().neighbours == BACKENDS[name].default_identity.neighbours


def test_unknown_model_names_the_registered_ones():
    assert check_model("vgg16") == "vgg16"
    with pytest.raises(BadInputError, match="choose one of: facenet, vgg16"):
        check_model("resnet")


@pytest.mark.parametrize(
    ("which", "fetched"), [("facenet", ["facenet"]), ("vgg16", ["vgg16"]), ("all", ["facenet", "vgg16"])]
)
def test_models_fetch_asks_each_chosen_backend(monkeypatch, tmp_path, which, fetched):
    from engine.tools import commands, fetch

    assert set(fetch.FETCHERS) == set(BACKENDS)  # every registered model can be fetched
    called: list[str] = []
    for name in BACKENDS:
        monkeypatch.setitem(fetch.FETCHERS, name, lambda settings, name=name: called.append(name))
    settings = EngineSettings(data_dir=tmp_path, models_dir=tmp_path)
    assert commands.models(settings, "fetch", which) == 0
    assert called == fetched
