"""Incremental face clustering over nearest neighbours, in memory (the registry feeds it and stores the result).

The rule, after Immich's facial recognition job (a face joins the person of its close neighbours; a face
with enough close neighbours founds a person; the others wait and are retried), made precision-first:

- two faces are *close* when the cosine similarity of their vectors reaches `threshold`;
- a face joins the person most of its close neighbours belong to, when that person has at least twice
  the votes of any other (an ambiguous face waits rather than risk a wrong merge);
- a face none of whose close neighbours has a person founds a new one when it has at least
  `min_faces - 1` close neighbours (itself included: `min_faces` faces, the DBSCAN core-point rule);
- faces are taken densest first (most close neighbours), and a person grows breadth first from the face
  that founded it (its close neighbours decide next, and theirs) before another person is founded; the
  pass is repeated until nothing changes: a face that waited may join a person founded after it.

Neighbours come from the vector store's ANN search (k per face), never from an n x n matrix.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

NO_PERSON = -1
EXCLUDED = -2  # taken out of its person by hand: never votes, never assigned again


@dataclass(frozen=True)
class ClusterParams:
    threshold: float  # cosine similarity from which two faces count as close
    min_faces: int  # faces (itself included) a face needs close by to found a person
    neighbours: int  # neighbours asked of the store per face
    # an index run re-clusters every face when the faces have grown by this share since the last full
    # clustering (persons founded apart in earlier runs come together; amortised, each face is grouped
    # a few times at most); 0: only on request
    regroup_growth: float = 0.5


@dataclass
class Neighbours:
    """Close neighbours of the faces being clustered: for face i, `index[i]` (universe positions) and `similarity[i]`."""

    index: dict[int, np.ndarray]
    similarity: dict[int, np.ndarray]


def assign(
    pending: list[int],
    neighbours: Neighbours,
    person: np.ndarray,
    params: ClusterParams,
    next_id: int,
    keys: list | None = None,
    max_passes: int = 10,
) -> tuple[set[int], int]:
    """Assign the `pending` faces (universe positions) to persons, changing `person` in place.

    `person[i]` is a person id, NO_PERSON, or EXCLUDED for every face of the universe (the pending faces
    and their neighbours). Faces are taken densest first; when one gets a person, its pending close
    neighbours are decided next (breadth first, joining only: a person grows from its core before another
    person is founded). Faces with as many neighbours go in the order of `keys[i]` (default: i), so the
    result does not depend on the order a store lists them in. New persons get ids from `next_id` on.
    Returns (faces assigned, the next free id).
    """
    order = sorted(pending, key=lambda i: (-len(neighbours.index[i]), keys[i] if keys is not None else i))
    waiting = set(pending)
    assigned: set[int] = set()

    def decide(i: int, found: bool) -> bool:
        nonlocal next_id
        owners = person[neighbours.index[i]].tolist()
        votes = Counter(p for p in owners if p >= 0)
        if votes:
            ranked = votes.most_common(2)
            if len(ranked) > 1 and ranked[0][1] < 2 * ranked[1][1]:
                return False  # close to two persons: wait
            person[i] = ranked[0][0]
        elif found and sum(p != EXCLUDED for p in owners) + 1 >= params.min_faces:
            person[i] = next_id
            next_id += 1
        else:
            return False
        assigned.add(i)
        waiting.discard(i)
        return True

    for _ in range(max_passes):
        before = len(assigned)
        for seed in order:
            if seed not in waiting or person[seed] != NO_PERSON or not decide(seed, found=True):
                continue
            queue = deque([seed])
            while queue:
                for j in neighbours.index[queue.popleft()].tolist():
                    if j in waiting and person[j] == NO_PERSON and decide(j, found=False):
                        queue.append(j)
        if len(assigned) == before:
            break
    return assigned, next_id
