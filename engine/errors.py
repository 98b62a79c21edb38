"""Typed errors: callers (the CLI, the bot) turn these into user messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.types import PersonRef


class EngineError(Exception):
    """Base class: anything the engine refuses or cannot do, with a message fit for a user."""

    exit_code = 1


class BadInputError(EngineError):
    """The caller gave something unusable (a bad argument, an unknown model, k out of range)."""

    exit_code = 2


class BadImageError(BadInputError):
    """The bytes are not a decodable image, or the image is too large."""


class ModelUnavailableError(EngineError):
    """The weights for a model are missing or do not match; the message says how to get them."""

    exit_code = 2


class IndexUnavailableError(EngineError):
    """No index for this model yet, or one built with other weights."""

    exit_code = 2


class StoreUnavailableError(EngineError):
    """The vector store cannot be opened: a bad VECTOR_STORE_URI, a Milvus that does not answer, or a
    Milvus Lite file another process holds."""

    exit_code = 2


class GalleryError(BadInputError):
    """The gallery folder is missing or holds no images."""


class FetchError(EngineError):
    """Downloading or verifying weights failed (offline, checksum mismatch)."""


class IndexBusyError(EngineError):
    """Another process holds the index's writer lock (a second `index` run) and did not let go in time."""

    exit_code = 2


class ClusterUnavailableError(EngineError):
    """The Ray cluster to index on does not answer, or Ray is not installed."""

    exit_code = 2


class PersonNotFoundError(BadInputError):
    """No (visible) person with that id in the people registry."""


class PersonOptedOutError(BadInputError):
    """The person opted out (the bot's /optout): shown again only when asked explicitly."""


class BadPersonNameError(BadInputError):
    """A person's name that cannot be used: empty, too long, control characters, or another person's."""


class FaceNamedError(BadInputError):
    """A face that already belongs to another named person (or a hidden one) was to be named otherwise: refused.

    `owner`: the other named person the face is already (an `engine.types.PersonRef`; None for a hidden person),
    for callers that word their own answer."""

    def __init__(self, message: str, owner: PersonRef | None = None):
        super().__init__(message)
        self.owner = owner
