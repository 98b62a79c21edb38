"""Open-set identification: from a face's nearest gallery faces to a person, or to "not in the gallery".

Plain functions over the nearest neighbours (names and cosine similarities, best first):

- each person among them gets a person-level score: their best similarity, plus an optional bonus for a
  further close face of theirs (`support`; measured on LFW, it does not carry over to unseen people, so
  the calibrated default leaves it off and the named person is the nearest face's);
- the best person's score is normalised against a cohort: the query's similarity to the next people
  among its neighbours. A stranger's photo is about as close to several people; a known face stands out.
  This separates mated from non-mated queries better than the raw similarity, whose level moves with
  the photo (pose, light, resolution);
- the person is named when that normalised score reaches the model's threshold.

Each model's settings are its backend's `default_identity` (engine/backends/), with the note of how they were
chosen; FaceNet's were calibrated on open-set splits of the LFW development people (benchmarks/open_set.py),
chosen on one fold of people (A–F or G–L) and checked on the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.types import Identity


@dataclass(frozen=True)
class IdentityParams:
    """How scores are made and thresholded (fitted per model on development data)."""

    threshold: float  # normalised score from which a person is named
    neighbours: int = 20  # nearest gallery faces looked at
    support: float = 0.0  # bonus per further face of the same person, times its similarity's excess over `floor`
    support_faces: int = 1  # further faces counted (more would favour people with many gallery photos)
    floor: float = 0.3
    cohort: int = 5  # other people's best similarities averaged into the cohort score
    cohort_weight: float = 0.0  # how much of the cohort score is subtracted
    cohort_default: float = 0.2  # cohort score assumed when the neighbours hold no other person
    cohort_spread: bool = False  # also divide by the cohort's spread (a z-score against the other people)
    spread_default: float = 0.05


def person_scores(
    names: list[str], similarities: np.ndarray | list[float], params: IdentityParams
) -> list[tuple[str, float]]:
    """(person, person-level score) for every person among the neighbours, best first."""
    best: dict[str, float] = {}
    extra: dict[str, float] = {}
    counted: dict[str, int] = {}
    for name, similarity in zip(names[: params.neighbours], similarities[: params.neighbours]):
        similarity = float(similarity)
        if name not in best:
            best[name], extra[name], counted[name] = similarity, 0.0, 0
        elif counted[name] < params.support_faces:
            extra[name] += max(0.0, similarity - params.floor)
            counted[name] += 1
    scored = [(name, best[name] + params.support * extra[name]) for name in best]
    return sorted(scored, key=lambda item: -item[1])


def identify(names: list[str], similarities: np.ndarray | list[float], params: IdentityParams) -> Identity:
    """The open-set decision for one face from its neighbours (best first)."""
    scored = person_scores(names, similarities, params)
    if not scored:
        return Identity(name=None, score=0.0)
    name, score = scored[0]
    if params.cohort_weight:
        others = [s for _, s in scored[1 : 1 + params.cohort]]
        cohort = float(np.mean(others)) if others else params.cohort_default
        score -= params.cohort_weight * cohort
        if params.cohort_spread:
            score /= max(float(np.std(others)), 0.01) if len(others) >= 3 else params.spread_default
    return Identity(name=name if score >= params.threshold else None, score=float(score))
