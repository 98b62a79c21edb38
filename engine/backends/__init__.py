"""Model backends behind one registry: the only place that knows which models exist."""

from __future__ import annotations

from engine.backends.base import ModelBackend, Region
from engine.backends.facenet import FaceNetBackend
from engine.backends.vgg16 import VGG16Backend
from engine.errors import BadInputError
from engine.settings import MODEL_NAMES, EngineSettings

BACKENDS: dict[str, type[ModelBackend]] = {"facenet": FaceNetBackend, "vgg16": VGG16Backend}
assert tuple(BACKENDS) == MODEL_NAMES


def check_model(name: str) -> str:
    if name not in BACKENDS:
        raise BadInputError(f"unknown model {name!r}; choose one of: {', '.join(BACKENDS)}")
    return name


def create_backends(settings: EngineSettings) -> dict[str, ModelBackend]:
    """One backend object per model; nothing is loaded until used."""
    return {name: cls(settings) for name, cls in BACKENDS.items()}


__all__ = ["BACKENDS", "ModelBackend", "Region", "check_model", "create_backends"]
