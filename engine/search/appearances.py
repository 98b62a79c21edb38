"""Where does this face appear: from a query face to the gallery photos its person is in (photos layout).

Not the k nearest faces: every photo with a face of the same person, each photo once (its best face), best
first. The same-person decision for each gallery face is made in three steps, over the store's ANN search
(never an n x n matrix):

1. Neighbours, as many as it takes: the store is searched with a growing k (x4 each time) until the last
   similarity falls under what could still pass (a person may be in hundreds of photos).
2. A cohort-normalised score: each face's similarity minus `cohort_weight` x the query's cohort level, the
   mean similarity of its neighbours at ranks `cohort_from`..`cohort_from + cohort_size` past the query's own
   faces (so faces of other people, for the most photographed guests too: see `_scored`). A stranger's selfie is
   about as close to many faces; a guest's faces stand out of that level. This separates better than the raw
   similarity, whose level moves with the photo (pose, light, resolution), as engine/search/identity.py found for
   named galleries.
3. Acceptance: unless the best face's score reaches `accept`, the person is in no photo (a stranger's
   selfie is answered with nothing).
4. Average query expansion: the `expand` best faces scoring at least `expand_threshold` are averaged into the
   query (their vectors, from the store) and the search runs again; the faces whose score against the expanded
   query reaches `expanded_threshold` are the answer. The expanded query sits nearer the person's centre than
   one selfie: another pose of them in another photo is found, and look-alikes drop out.

Chosen on one fold of LFW development people (benchmarks/bench_event.py --fold A-F --tune), reported on the
other (G-L); the figures are in the README. On A-F: a plain similarity threshold at best reaches precision
0.94 / recall 0.92 / strangers clean 0.92 (0.6), the cohort with acceptance 0.95 / 0.91 / 0.99, and with the
expansion 0.97 / 0.91 / 0.99.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.stores.base import Hit, VectorStore

MAX_NEIGHBOURS = 16_384  # Milvus' largest top-k: a face is found in at most this many gallery faces


@dataclass(frozen=True)
class AppearanceParams:
    threshold: float = 0.46  # normalised score from which a gallery face is the query's person
    accept: float = 0.52  # ...once the best face's score reaches this (is the person in the gallery at all?)
    cohort_from: int = 64  # neighbour ranks whose mean similarity is the query's cohort level
    cohort_size: int = 64
    cohort_weight: float = 0.5
    cohort_default: float = 0.2  # assumed when the store holds fewer faces than `cohort_from`
    cohort_past_matches: bool = True  # the window starts past the faces that pass (see _scored)
    expand: int = 5  # confident faces averaged into the query (0: no expansion)
    expand_threshold: float = 0.6  # score from which a face is confident enough to expand with
    expanded_threshold: float | None = 0.5  # the expanded query's `threshold` (None: the same)
    first_k: int = 128  # neighbours asked for first; more (x4) while the last one could still pass

    def describe(self) -> str:
        return (
            f"threshold {self.threshold}, accept {self.accept}, cohort ranks {self.cohort_from}+{self.cohort_size} x{self.cohort_weight}"
            f"{' past the matches' if self.cohort_past_matches else ''}, "
            f"expand {self.expand} from {self.expand_threshold}, then threshold {self.expanded_threshold}"
        )


@dataclass(frozen=True)
class Appearance:
    """One gallery face judged the query's person, with its score and its similarity to the query."""

    hit: Hit
    score: float  # the decision's score (after expansion: against the expanded query)
    similarity: float  # cosine similarity to the query face itself


def neighbours(store: VectorStore, query: np.ndarray, floor: float | None, first_k: int) -> list[Hit]:
    """Every face with similarity >= `floor` (and at least `first_k` faces; None: just those), best first."""
    total = min(store.count, MAX_NEIGHBOURS)
    k = min(first_k, total)
    while True:
        hits = store.search(query[None], k)[0]
        if floor is None or k >= total or not hits or hits[-1].similarity < floor or len(hits) < k:
            return hits
        k = min(total, k * 4)


def cohort_level(hits: list[Hit], params: AppearanceParams, skip: int = 0) -> float:
    """The mean similarity of the neighbours at ranks `cohort_from`..`cohort_from + cohort_size` past the first
    `skip` (the query's own faces)."""
    start = skip + params.cohort_from
    part = hits[start : start + params.cohort_size]
    return float(np.mean([hit.similarity for hit in part])) if part else params.cohort_default


def _scored(
    store: VectorStore, query: np.ndarray, params: AppearanceParams, threshold: float
) -> tuple[list[Hit], float]:
    """The query's neighbours down to what could pass `threshold`, and its cohort term.

    The cohort window starts past the query's own faces: a guest in more photos than `cohort_from` (the bride of
    a wedding) would otherwise have their own faces as the cohort, whose level pushes every one of them under the
    threshold (a live event's guest in 137 of 234 photos was answered with none). How many faces are the query's
    own is the largest count that holds: at most the faces over `threshold` itself (the cohort level is not
    negative), the window put past them, its level taken, the faces passing counted, and again while the count
    falls (each round the window moves up, its level rises, the count can only fall). A stranger's count falls
    to the few faces (mostly none) that pass a window at the usual ranks."""
    wanted = max(params.first_k, params.cohort_from + params.cohort_size)
    if not params.cohort_past_matches:
        hits = neighbours(store, query, None, wanted)
        cohort = params.cohort_weight * cohort_level(hits, params)
        if hits and hits[-1].similarity >= threshold + cohort and len(hits) < min(store.count, MAX_NEIGHBOURS):
            hits = neighbours(store, query, threshold + cohort, len(hits) * 4)
        return hits, cohort
    hits = neighbours(store, query, threshold, wanted)
    own = sum(1 for hit in hits if hit.similarity >= threshold)
    if len(hits) < min(store.count, MAX_NEIGHBOURS, own + wanted):
        hits = neighbours(store, query, None, own + wanted)  # the deepest window's neighbours (the first round's)
    while True:
        cohort = params.cohort_weight * cohort_level(hits, params, own)
        if cohort < 0 and hits and hits[-1].similarity >= threshold + cohort:  # a far window of unlike faces
            hits = neighbours(store, query, threshold + cohort, len(hits))
        passing = sum(1 for hit in hits if hit.similarity - cohort >= threshold)
        if passing >= own:
            return hits, cohort
        own = passing


def _vector(hit: Hit) -> np.ndarray:
    """The vector of a hit searched `with_vectors=True`."""
    if hit.vector is None:
        raise RuntimeError(f"the store returned no vector for {hit.row.key}")
    return hit.vector


def appearances(store: VectorStore, query: np.ndarray, params: AppearanceParams) -> list[Appearance]:
    """Gallery faces of the query's person (any number of them, several per photo possible), best first."""
    query = np.asarray(query, np.float32).reshape(-1)
    if store.count == 0:
        return []
    hits, cohort = _scored(store, query, params, params.threshold)
    if not hits or hits[0].similarity - cohort < max(params.accept, params.threshold):
        return []  # the best face is not close enough: not in any photo
    # the score is the similarity less a constant: the confident faces are the first ones
    confident = sum(1 for hit in hits[: params.expand] if hit.similarity - cohort >= params.expand_threshold)
    if not confident:
        return [
            Appearance(hit, hit.similarity - cohort, hit.similarity)
            for hit in hits
            if hit.similarity - cohort >= params.threshold
        ]
    with_vectors = store.search(query[None], confident, with_vectors=True)[0]
    expanded = query + np.sum([_vector(hit) for hit in with_vectors], axis=0)
    expanded = expanded / np.linalg.norm(expanded)
    first = {hit.row.key: hit.similarity for hit in hits}
    threshold = params.threshold if params.expanded_threshold is None else params.expanded_threshold
    hits, cohort = _scored(store, expanded, params, threshold)
    passed = [hit for hit in hits if hit.similarity - cohort >= threshold]
    if any(hit.row.key not in first for hit in passed):  # found through the expansion: its similarity to the query
        for hit in store.search(expanded[None], len(hits), with_vectors=True)[0]:
            first.setdefault(hit.row.key, float(query @ _vector(hit)))
    return [Appearance(hit, hit.similarity - cohort, first.get(hit.row.key, hit.similarity)) for hit in passed]


def best_per_photo(found: list[Appearance]) -> list[Appearance]:
    """Each photo once, by its best-scoring face, best first."""
    best: dict[str, Appearance] = {}
    for appearance in found:
        path = appearance.hit.row.path
        if path not in best or appearance.score > best[path].score:
            best[path] = appearance
    return sorted(best.values(), key=lambda a: (-a.score, a.hit.row.path))
