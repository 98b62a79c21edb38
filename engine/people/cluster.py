"""Incremental face clustering over nearest neighbours, in memory (the registry feeds it and stores the result).

The rule, after Immich's facial recognition job (a face joins the person of its close neighbours; a face
with enough close neighbours founds a person; the others wait and are retried), made precision-first:

- two faces are *close* when the cosine similarity of their vectors reaches `threshold`;
- a face joins the person most of its close neighbours belong to, when that person has at least twice
  the votes of any other (an ambiguous face waits rather than risk a wrong merge);
- a face none of whose close neighbours has a person founds a new one when it has at least
  `min_faces - 1` close neighbours (itself included: `min_faces` faces, the DBSCAN core-point rule);
- faces are taken densest first (most close neighbours), so persons grow from their cores, and the
  pass is repeated until nothing changes: a face that waited may join a person founded after it.

Neighbours come from the vector store's ANN search (k per face), never from an n x n matrix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

NO_PERSON = -1
EXCLUDED = -2  # taken out of its person by hand: never votes, never assigned again


@dataclass(frozen=True)
class ClusterParams:
    threshold: float  # cosine similarity from which two faces count as close
    min_faces: int  # faces (itself included) a face needs close by to found a person
    neighbours: int  # neighbours asked of the store per face


@dataclass
class Neighbours:
    """Close neighbours of the faces being clustered: for face i, `index[i]` (universe positions) and `similarity[i]`."""

    index: dict[int, np.ndarray]
    similarity: dict[int, np.ndarray]


def assign(pending: list[int], neighbours: Neighbours, person: np.ndarray, params: ClusterParams, next_id: int,
           max_passes: int = 10) -> tuple[set[int], int]:
    """Assign the `pending` faces (universe positions) to persons, changing `person` in place.

    `person[i]` is a person id, NO_PERSON, or EXCLUDED for every face of the universe (the pending faces
    and their neighbours). New persons get ids from `next_id` on. Returns (faces assigned, the next free id).
    """
    order = sorted(pending, key=lambda i: (-len(neighbours.index[i]), i))
    assigned: set[int] = set()
    for _ in range(max_passes):
        changed = False
        for i in order:
            if person[i] != NO_PERSON:
                continue
            owners = person[neighbours.index[i]].tolist()
            votes = Counter(p for p in owners if p >= 0)
            if votes:
                ranked = votes.most_common(2)
                if len(ranked) > 1 and ranked[0][1] < 2 * ranked[1][1]:
                    continue  # close to two persons: wait
                person[i] = ranked[0][0]
            elif sum(p != EXCLUDED for p in owners) + 1 >= params.min_faces:
                person[i] = next_id
                next_id += 1
            else:
                continue
            assigned.add(i)
            changed = True
        if not changed:
            break
    return assigned, next_id
