"""Where does this face appear: from a query face to the gallery photos its person is in (photos layout).

Not the k nearest faces: every photo with a face of the same person, each photo once (its best face), best
first. The same-person decision for each gallery face is made in three steps, over the store's ANN search
(never an n x n matrix):

1. Neighbours, as many as it takes: the store is searched with a growing k (x4 each time) until the last
   similarity falls under what could still pass (a person may be in hundreds of photos).
2. A cohort-normalised score: each face's similarity minus `cohort_weight` x the query's cohort level, the
   mean similarity of its neighbours at ranks `cohort_from`..`cohort_from + cohort_size` (faces of other people
   for all but the most photographed guests). A stranger's selfie is about as close to many faces; a guest's
   faces stand out of that level. This separates better than the raw similarity, whose level moves with the
   photo (pose, light, resolution), as engine/identity.py found for named galleries.
3. Average query expansion: the `expand` best faces scoring at least `expand_threshold` are averaged into the
   query (their vectors, from the store) and the search runs again; a face of another photo that is close to
   the confident matches (another pose of the same person) then passes `threshold`. Without a confident match
   nothing is expanded, so a stranger's answer stays empty.

Calibrated on one fold of LFW development people (benchmarks/bench_event.py --tune, A-F), reported on the
other (G-L); the figures are in the README.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.stores.base import Hit, VectorStore


@dataclass(frozen=True)
class AppearanceParams:
    threshold: float = 0.42  # normalised score from which a gallery face is the query's person
    cohort_from: int = 64  # neighbour ranks whose mean similarity is the query's cohort level
    cohort_size: int = 64
    cohort_weight: float = 0.5
    cohort_default: float = 0.2  # assumed when the store holds fewer faces than `cohort_from`
    expand: int = 5  # confident faces averaged into the query (0: no expansion)
    expand_threshold: float = 0.55  # score from which a face is confident enough to expand with
    first_k: int = 256  # neighbours asked for first; more (x4) while the last one could still pass

    def describe(self) -> str:
        return (
            f"threshold {self.threshold}, cohort ranks {self.cohort_from}+{self.cohort_size} x{self.cohort_weight}, "
            f"expand {self.expand} from {self.expand_threshold}"
        )


@dataclass(frozen=True)
class Appearance:
    """One gallery face judged the query's person, with its score and its similarity to the query."""

    hit: Hit
    score: float  # the decision's score (after expansion: against the expanded query)
    similarity: float  # cosine similarity to the query face itself


def neighbours(store: VectorStore, query: np.ndarray, floor: float, first_k: int) -> list[Hit]:
    """Every face with similarity >= `floor` (and at least `first_k` faces), best first, with their vectors."""
    total = store.count
    k = min(first_k, total)
    while True:
        hits = store.search(query[None], k, with_vectors=True)[0]
        if k >= total or not hits or hits[-1].similarity < floor or len(hits) < k:
            return hits
        k = min(total, k * 4)


def cohort_level(hits: list[Hit], params: AppearanceParams) -> float:
    part = hits[params.cohort_from : params.cohort_from + params.cohort_size]
    return float(np.mean([hit.similarity for hit in part])) if part else params.cohort_default


def appearances(store: VectorStore, query: np.ndarray, params: AppearanceParams) -> list[Appearance]:
    """Gallery faces of the query's person (any number of them, several per photo possible), best first."""
    query = np.asarray(query, np.float32).reshape(-1)
    if store.count == 0:
        return []
    hits = neighbours(store, query, -1.0, max(params.first_k, params.cohort_from + params.cohort_size))
    cohort = params.cohort_weight * cohort_level(hits, params)
    hits = _more_if_needed(store, query, hits, params.threshold + cohort, params.first_k)
    scored = [Appearance(hit, hit.similarity - cohort, hit.similarity) for hit in hits]
    confident = [a for a in scored if a.score >= params.expand_threshold][: params.expand]
    if params.expand and confident:
        expanded = query + sum(a.hit.vector for a in confident if a.hit.vector is not None)
        expanded = expanded / np.linalg.norm(expanded)
        hits = neighbours(store, expanded, -1.0, max(params.first_k, params.cohort_from + params.cohort_size))
        cohort = params.cohort_weight * cohort_level(hits, params)
        hits = _more_if_needed(store, expanded, hits, params.threshold + cohort, params.first_k)
        scored = [Appearance(hit, hit.similarity - cohort, _similarity(query, hit)) for hit in hits]
    return [a for a in scored if a.score >= params.threshold]


def _similarity(query: np.ndarray, hit: Hit) -> float:
    return float(query @ hit.vector) if hit.vector is not None else hit.similarity


def _more_if_needed(store, query, hits: list[Hit], floor: float, first_k: int) -> list[Hit]:
    if hits and hits[-1].similarity >= floor and len(hits) < store.count:
        return neighbours(store, query, floor, len(hits) * 4)
    return hits


def best_per_photo(found: list[Appearance]) -> list[Appearance]:
    """Each photo once, by its best-scoring face, best first."""
    best: dict[str, Appearance] = {}
    for appearance in found:
        path = appearance.hit.row.path
        if path not in best or appearance.score > best[path].score:
            best[path] = appearance
    return sorted(best.values(), key=lambda a: (-a.score, a.hit.row.path))
