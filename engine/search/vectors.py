"""Vector helpers shared by the backends and the searcher: normalisation, distances, PCA projection."""

from __future__ import annotations

import numpy as np


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def similarity_to_distance(similarity: np.ndarray | float) -> np.ndarray | float:
    """Euclidean distance between two unit vectors with this cosine similarity."""
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.asarray(similarity)))


class Projection:
    """PCA fitted at indexing time (VGG16), applied to queries, followed by L2 normalisation."""

    def __init__(self, mean: np.ndarray, components: np.ndarray):
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)

    @classmethod
    def fit(cls, features: np.ndarray, n_components: int) -> Projection | None:
        n_components = min(n_components, features.shape[0] - 1, features.shape[1])
        if n_components < 2:
            return None
        from sklearn.decomposition import PCA

        pca = PCA(n_components=n_components, svd_solver="randomized", random_state=0).fit(features)
        return cls(pca.mean_, pca.components_)

    def apply(self, features: np.ndarray) -> np.ndarray:
        return l2_normalize((features - self.mean) @ self.components.T)
