"""Several selfies of one person fused into one query template.

A guest who sends 2-5 selfies sends several views of one face: their normalised mean sits nearer the person's
centre than any one of them, and finds more of their photos (benchmarks/bench_selfies.py measures it). Before
fusing, the faces must be one person's: each face is compared with the normalised mean of the *others*
(leave-one-out), and every one must reach `min_similarity`.

Why leave-one-out rather than every pair: with two selfies both rules are the same comparison (the mean of the
other is the other). With three to five, every pair makes 3-10 comparisons that must all pass, so a genuine set
with one poor pair (a profile and a backlit shot) fails far more often than one pair does; against the mean of
the others each face meets a steadier template (the others' noise averages out), while a stranger's face in the
set still stands out of it. The threshold is chosen on pairs (the two-selfie case), which makes the rule no
looser for larger sets: a stranger's face is compared with the mean of the guest's faces, about as close to it
as to one of them would be after normalisation.

SAME_PERSON was chosen on the A-F fold of LFW development people (benchmarks/bench_selfies.py --tune-fusion,
the engine's query embeddings: flip-averaged FaceNet of each photo's main face, at most 10 photos a person): 99% of
A-F's 3,637 genuine pairs pass from 0.45, and 0.3% of 199K impostor pairs. Reported on G-L: genuine pairs pass
0.993, impostor pairs 0.005; sets of three selfies of one person pass 0.994, sets of two selfies and a stranger's
0.005 (the leave-one-out rule is no looser than a pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import BadInputError
from engine.search.vectors import l2_normalize

SAME_PERSON = 0.45  # cosine similarity from which a face is the same person as the others (see the docstring)
MAX_SELFIES = 5  # an album of 2..MAX_SELFIES selfies is one query
DOMINANCE = 2.0  # a selfie: its largest face's area is at least this many times every other face's


@dataclass(frozen=True)
class Fused:
    """The fused template: `vector` is unit length; `min_similarity` the lowest leave-one-out similarity (1.0 for
    one face)."""

    vector: np.ndarray
    count: int
    min_similarity: float


class DifferentPeopleError(BadInputError):
    """The selfies do not all show one person. `outliers`: 0-based positions of the faces that do not match the
    others; `similarities`: each face's similarity to the mean of the others."""

    def __init__(self, message: str, outliers: tuple[int, ...], similarities: tuple[float, ...]):
        super().__init__(message)
        self.outliers = outliers
        self.similarities = similarities


def dominant_face(boxes: Sequence[tuple[int, int, int, int]], dominance: float = DOMINANCE) -> int | None:
    """The position of the face that makes a photo a selfie (its box's area at least `dominance` times every other
    face's), or None: no face, or several faces of comparable size (a group photo)."""
    if not boxes:
        return None
    areas = [max(0, w) * max(0, h) for _, _, w, h in boxes]
    largest = max(range(len(areas)), key=areas.__getitem__)
    others = [a for i, a in enumerate(areas) if i != largest]
    if others and areas[largest] < dominance * max(others):
        return None
    return largest


def leave_one_out(vectors: np.ndarray) -> np.ndarray:
    """Each row's cosine similarity to the normalised mean of the other rows (rows: unit vectors, at least 2)."""
    unit = l2_normalize(np.asarray(vectors, dtype=np.float32))
    total = unit.sum(axis=0)
    others = l2_normalize(total[None, :] - unit)
    return np.einsum("ij,ij->i", unit, others).astype(np.float64)


def _photos(positions: list[int]) -> str:
    numbers = [str(p + 1) for p in positions]
    if len(numbers) == 1:
        return f"photo {numbers[0]}"
    return "photos " + ", ".join(numbers[:-1]) + " and " + numbers[-1]


def fuse(vectors: np.ndarray, min_similarity: float = SAME_PERSON) -> Fused:
    """One template from one face per selfie (rows, unit vectors), or DifferentPeopleError when they are not all
    one person (each face against the mean of the others, see the module docstring)."""
    rows = np.asarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise BadInputError("No face to search with.")
    if not np.all(np.isfinite(rows)):
        raise BadInputError("A face's vector is not finite.")
    unit = l2_normalize(rows)
    if rows.shape[0] == 1:
        return Fused(vector=unit[0], count=1, min_similarity=1.0)
    similarities = leave_one_out(unit)
    outliers = [i for i, s in enumerate(similarities) if s < min_similarity]
    if outliers:
        count = rows.shape[0]
        if count == 2:
            detail = "photo 1 and photo 2 are not the same person"
        elif len(outliers) == count:
            detail = "no face matches the others"
        else:
            verb = "does" if len(outliers) == 1 else "do"
            detail = f"the face in {_photos(outliers)} {verb} not match the others"
        raise DifferentPeopleError(
            f"These photos show different people: {detail}. Send selfies of one person only.",
            outliers=tuple(outliers),
            similarities=tuple(float(s) for s in similarities),
        )
    mean = l2_normalize(unit.mean(axis=0, keepdims=True))[0]
    return Fused(vector=mean, count=rows.shape[0], min_similarity=float(similarities.min()))
