"""Nearest-neighbour search over L2-normalised features: exact (one matrix product) or FAISS HNSW."""

from __future__ import annotations

import functools

import numpy as np


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


class VectorSearch:
    """Cosine k-NN over the rows of `features` (already L2-normalised, float32).

    Exact search is a single matrix product; with `ann` set, a FAISS HNSW index
    (inner product) answers instead, for galleries too large to scan per query.
    """

    def __init__(self, features: np.ndarray, *, ann_index=None):
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.ann_index = ann_index

    @property
    def count(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def build(cls, features: np.ndarray, *, use_ann: bool, hnsw_m: int = 32, ef_search: int = 128) -> "VectorSearch":
        ann = build_hnsw(features, m=hnsw_m, ef_search=ef_search) if use_ann and len(features) else None
        return cls(features, ann_index=ann)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, row indices), each (len(queries), min(k, count)), best first."""
        k = min(k, self.count)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.ann_index is not None:
            similarities, indices = self.ann_index.search(queries, k)
            return similarities, indices.astype(np.int64)
        # One BLAS thread: a query is a small product, and OpenBLAS' other threads keep spinning
        # after it, stealing the cores TensorFlow needs for the next photo (measured: +30 ms a query).
        with _blas_controller().limit(limits=1, user_api="blas"):
            return exact_top_k(self.features, queries, k)


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def exact_top_k(features: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    similarities = queries @ features.T
    if k < similarities.shape[1]:
        top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    else:
        top = np.tile(np.arange(similarities.shape[1]), (len(queries), 1))
    top_similarities = np.take_along_axis(similarities, top, axis=1)
    order = np.argsort(-top_similarities, axis=1, kind="stable")
    return np.take_along_axis(top_similarities, order, axis=1), np.take_along_axis(top, order, axis=1)


def build_hnsw(features: np.ndarray, *, m: int, ef_search: int, ef_construction: int = 80):
    import faiss

    index = faiss.IndexHNSWFlat(features.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(np.ascontiguousarray(features, dtype=np.float32))
    index.hnsw.efSearch = ef_search
    return index


def similarity_to_distance(similarity: np.ndarray | float) -> np.ndarray | float:
    """Euclidean distance between two unit vectors with this cosine similarity."""
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.asarray(similarity)))


class Projection:
    """PCA fitted at indexing time (VGG16), applied to queries, followed by L2 normalisation."""

    def __init__(self, mean: np.ndarray, components: np.ndarray):
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)

    @classmethod
    def fit(cls, features: np.ndarray, n_components: int) -> "Projection | None":
        n_components = min(n_components, features.shape[0] - 1, features.shape[1])
        if n_components < 2:
            return None
        from sklearn.decomposition import PCA

        pca = PCA(n_components=n_components, svd_solver="randomized", random_state=0).fit(features)
        return cls(pca.mean_, pca.components_)

    def apply(self, features: np.ndarray) -> np.ndarray:
        return l2_normalize((features - self.mean) @ self.components.T)
