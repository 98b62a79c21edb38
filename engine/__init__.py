"""Reverse face image search: MTCNN detection, FaceNet / VGG16 embeddings, k-NN over saved features."""

from engine.backends import MODEL_NAMES
from engine.core import Engine
from engine.errors import (
    BadImageError,
    BadInputError,
    EngineError,
    FetchError,
    GalleryError,
    IndexBusyError,
    IndexUnavailableError,
    ModelUnavailableError,
    StoreUnavailableError,
)
from engine.settings import EngineSettings
from engine.types import FaceResult, Identity, IndexInfo, IndexProgress, IndexReport, Match, SearchResult

__all__ = [
    "MODEL_NAMES",
    "BadImageError",
    "BadInputError",
    "Engine",
    "EngineError",
    "EngineSettings",
    "FaceResult",
    "FetchError",
    "GalleryError",
    "IndexBusyError",
    "Identity",
    "IndexInfo",
    "IndexProgress",
    "IndexReport",
    "IndexUnavailableError",
    "Match",
    "ModelUnavailableError",
    "SearchResult",
    "StoreUnavailableError",
]
