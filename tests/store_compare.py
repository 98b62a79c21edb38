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
        np.testing.assert_allclose([hit.similarity for hit in got], [hit.similarity for hit in want], atol=1e-4)
