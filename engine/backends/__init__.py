"""Model backends behind one registry: the only place that knows which models exist.

What each model is (its name, description, whether its rows are faces, its open-set settings) is said by its
backend class; the model names everything else offers (settings, command line, the bot) come from BACKENDS.
"""

from __future__ import annotations

from engine.backends.base import ModelBackend, Region
from engine.backends.facenet import FaceNetBackend
from engine.backends.vgg16 import VGG16Backend
from engine.errors import BadInputError
from engine.settings import EngineSettings

BACKENDS: dict[str, type[ModelBackend]] = {backend.name: backend for backend in (FaceNetBackend, VGG16Backend)}
MODEL_NAMES: tuple[str, ...] = tuple(BACKENDS)  # settings.ModelName lists the same names (a test checks)
FACE_MODELS: tuple[str, ...] = tuple(name for name, backend in BACKENDS.items() if backend.embeds_faces)


def check_model(name: str) -> str:
    if name not in BACKENDS:
        raise BadInputError(f"unknown model {name!r}; choose one of: {', '.join(BACKENDS)}")
    return name


def create_backends(settings: EngineSettings) -> dict[str, ModelBackend]:
    """One backend object per model; nothing is loaded until used."""
    return {name: cls(settings) for name, cls in BACKENDS.items()}


__all__ = ["BACKENDS", "FACE_MODELS", "MODEL_NAMES", "ModelBackend", "Region", "check_model", "create_backends"]
