"""Two stores hold the same index: the same file records, people and counts, and the same answers to queries."""

from __future__ import annotations

import numpy as np


def assert_same_store(expected, actual, queries: int = 40) -> None:
    assert actual.header == expected.header
    assert actual.files() == expected.files()
    assert actual.people() == expected.people()
    assert actual.count == expected.count
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(queries, expected.header.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    k = min(10, expected.count)
    for want, got in zip(expected.search(vectors, k), actual.search(vectors, k)):
        assert [(hit.row.path, hit.row.box) for hit in got] == [(hit.row.path, hit.row.box) for hit in want]
        # Vectors from other processes agree to cosine >= 0.99999 (see helpers_engine.assert_same_vectors), so a
        # query's similarity to them may move by up to sqrt(2 * 1e-5) ~ 0.0045; the answers themselves must not.
        np.testing.assert_allclose([hit.similarity for hit in got], [hit.similarity for hit in want], atol=0.0045)
