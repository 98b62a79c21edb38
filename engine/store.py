"""An index on disk: features, per-row metadata and a manifest, written atomically.

Layout under `DATA_DIR/index/<model>/`:
  CURRENT                 name of the live version (replaced atomically with os.replace)
  v-<time>/features.npy   float32 (rows, dim) raw features
  v-<time>/metadata.json  {"rows": [...], "files": {relative path: {sha256, faces}}}
  v-<time>/manifest.json  model, weights checksum, pipeline, dim, count, build time
  v-<time>/pca.npz        (VGG16 with PCA) projection mean and components
  v-<time>/hnsw.faiss     (large galleries) the approximate index

A crash while writing leaves a half-written v-* folder that CURRENT never names,
so the previous index stays intact; it is removed on the next successful write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.errors import IndexUnavailableError


@dataclass
class StoredIndex:
    manifest: dict
    features: np.ndarray  # (rows, dim) float32
    rows: list[dict]  # {"path": relative path, "name", "box", "sha256"}
    files: dict[str, dict]  # relative path → {"sha256", "faces"} for every image seen (faces may be 0)
    pca: dict[str, np.ndarray] | None = None
    ann_path: Path | None = None
    directory: Path | None = field(default=None, repr=False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_version_dir(index_dir: Path) -> Path | None:
    pointer = index_dir / "CURRENT"
    if not pointer.is_file():
        return None
    version = index_dir / pointer.read_text().strip()
    return version if (version / "manifest.json").is_file() else None


def load_index(index_dir: Path) -> StoredIndex | None:
    """The live index, or None when none was built yet."""
    version = current_version_dir(index_dir)
    if version is None:
        return None
    try:
        manifest = json.loads((version / "manifest.json").read_text())
        metadata = json.loads((version / "metadata.json").read_text())
        features = np.load(version / "features.npy")
        pca = dict(np.load(version / "pca.npz")) if (version / "pca.npz").is_file() else None
    except (OSError, ValueError) as error:
        raise IndexUnavailableError(f"the index in {version} is unreadable ({error}); rebuild it with: python -m engine index") from error
    ann_path = version / "hnsw.faiss"
    return StoredIndex(
        manifest=manifest,
        features=features,
        rows=metadata["rows"],
        files=metadata["files"],
        pca=pca,
        ann_path=ann_path if ann_path.is_file() else None,
        directory=version,
    )


def write_index(index_dir: Path, index: StoredIndex, *, ann_index=None, before_commit=None) -> Path:
    """Write a new version and make it live with one atomic rename of CURRENT.

    `before_commit` is called after all files are written, before the switch (tests use it
    to simulate a crash at the worst moment).
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    version = index_dir / f"v-{stamp}"
    version.mkdir()
    np.save(version / "features.npy", np.ascontiguousarray(index.features, dtype=np.float32))
    (version / "metadata.json").write_text(json.dumps({"rows": index.rows, "files": index.files}))
    if index.pca is not None:
        np.savez(version / "pca.npz", **index.pca)
    if ann_index is not None:
        import faiss

        faiss.write_index(ann_index, str(version / "hnsw.faiss"))
    (version / "manifest.json").write_text(json.dumps(index.manifest, indent=2))
    _fsync_dir(version)
    if before_commit is not None:
        before_commit()
    pointer_tmp = index_dir / f"CURRENT.tmp-{os.getpid()}"
    pointer_tmp.write_text(version.name)
    os.replace(pointer_tmp, index_dir / "CURRENT")
    _fsync_dir(index_dir)
    _remove_old_versions(index_dir, keep=version.name)
    return version


def _remove_old_versions(index_dir: Path, keep: str) -> None:
    for path in index_dir.glob("v-*"):
        if path.name != keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    for path in index_dir.glob("CURRENT.tmp-*"):
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir():
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_manifest(*, model: str, weights_sha256: str, pipeline: dict, dim: int, count: int, gallery: Path) -> dict:
    return {
        "model": model,
        "weights_sha256": weights_sha256,
        "pipeline": pipeline,
        "dim": dim,
        "count": count,
        "gallery": str(gallery),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "built_unix": time.time(),
    }
