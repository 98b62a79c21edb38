"""Vector stores: where face vectors and their rows live (see `engine.stores.base`), and the SQLite set-up they share (sqlite.py)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import StoreUnavailableError
from engine.stores.base import Changes, FaceRow, FileRecord, Hit, StoreHeader, VectorStore

__all__ = ["Changes", "FaceRow", "FileRecord", "Hit", "StoreHeader", "VectorStore", "open_store"]


def open_store(
    uri: str | None,
    *,
    data_dir: Path,
    model: str,
    local_root: Path | None = None,
    collection: str | None = None,
    ann_threshold: int = 50_000,
    hnsw_m: int = 16,
    ef_search: int = 96,
) -> VectorStore:
    """The store `VECTOR_STORE_URI` names.

    unset or empty: the local store in DATA_DIR/index/<model> (or `local_root`); `*.db`: a Milvus Lite
    file; http(s)://host:port: a Milvus server (standalone or cluster). Collections are named after the
    model (or `collection`: evaluation indexes live apart from the bot's).
    """
    if not uri or not uri.strip():
        from engine.stores.local import LocalStore

        root = local_root if local_root is not None else Path(data_dir) / "index" / model
        return LocalStore(root, ann_threshold=ann_threshold, hnsw_m=hnsw_m, ef_search=ef_search)
    uri = uri.strip()
    if uri.startswith(("http://", "https://")) or uri.endswith(".db"):
        try:
            from engine.stores.milvus import MilvusStore
        except ImportError as error:
            raise StoreUnavailableError(
                f"VECTOR_STORE_URI={uri} needs pymilvus (and milvus-lite for a .db file): pip install 'facesearch-bot[milvus]'"
            ) from error
        return MilvusStore(
            uri, model=model, collection=collection, hnsw_m=hnsw_m, ef_search=ef_search, data_dir=Path(data_dir)
        )
    raise StoreUnavailableError(
        f"VECTOR_STORE_URI={uri!r} is not a store address: leave it unset for the local store under DATA_DIR, "
        "give a path ending in .db for Milvus Lite, or http(s)://host:19530 for a Milvus server"
    )
