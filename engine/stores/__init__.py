"""Vector stores behind one seam (see base.py); `open_store` picks one from VECTOR_STORE_URI."""

from __future__ import annotations

from pathlib import Path

from engine.errors import StoreUnavailableError
from engine.stores.base import VectorStore


def open_store(uri: str | None, *, data_dir: Path, model: str) -> VectorStore:
    """unset: the local store under DATA_DIR/index/<model>."""
    if not uri:
        from engine.stores.local import LocalStore

        return LocalStore(Path(data_dir) / "index" / model)
    raise StoreUnavailableError(f"VECTOR_STORE_URI={uri!r} is not supported yet")
