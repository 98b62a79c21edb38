"""Several selfies fused into one template (engine/search/fusion.py), on small synthetic vectors."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import BadInputError
from engine.search.fusion import SAME_PERSON, DifferentPeopleError, Fused, dominant_face, fuse, leave_one_out


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def around(centre: np.ndarray, noise: float, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = centre[None, :] + noise * rng.standard_normal((count, centre.size)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_one_face_is_its_own_template() -> None:
    fused = fuse(unit(3, 4)[None])
    assert isinstance(fused, Fused)
    assert fused.count == 1 and fused.min_similarity == 1.0
    np.testing.assert_allclose(fused.vector, [0.6, 0.8], atol=1e-6)


def test_same_person_fuses_to_the_normalised_mean() -> None:
    faces = np.stack([unit(1, 0.2, 0), unit(1, -0.2, 0), unit(1, 0, 0.3)])
    fused = fuse(faces)
    assert fused.count == 3
    assert np.linalg.norm(fused.vector) == pytest.approx(1.0, abs=1e-6)
    expected = faces.mean(axis=0) / np.linalg.norm(faces.mean(axis=0))
    np.testing.assert_allclose(fused.vector, expected, atol=1e-6)
    assert fused.min_similarity == pytest.approx(float(leave_one_out(faces).min()))
    assert fused.min_similarity >= SAME_PERSON


def test_the_fused_template_is_nearer_the_centre_than_the_selfies() -> None:
    centre = unit(*np.ones(64))
    faces = around(centre, 0.12, 4, seed=1)
    fused = fuse(faces)
    assert float(fused.vector @ centre) > float(np.max(faces @ centre))


def test_two_different_people_are_refused_with_both_named() -> None:
    with pytest.raises(DifferentPeopleError) as caught:
        fuse(np.stack([unit(1, 0, 0), unit(0, 1, 0)]))
    assert isinstance(caught.value, BadInputError)
    assert "different people" in str(caught.value)
    assert "photo 1 and photo 2" in str(caught.value)
    assert caught.value.outliers == (0, 1)


def test_the_stranger_among_several_selfies_is_named() -> None:
    rng = np.random.default_rng(2)
    guest = unit(*rng.standard_normal(128))
    stranger = unit(*rng.standard_normal(128))
    faces = np.concatenate([around(guest, 0.05, 3, seed=3), stranger[None]])
    faces = faces[[0, 3, 1, 2]]  # the stranger's selfie second
    with pytest.raises(DifferentPeopleError) as caught:
        fuse(faces)
    assert caught.value.outliers == (1,)
    assert "photo 2 does not match the others" in str(caught.value)
    assert len(caught.value.similarities) == 4


def test_leave_one_out_with_two_faces_is_their_similarity() -> None:
    a, b = unit(1, 2, 3), unit(3, 1, 0)
    np.testing.assert_allclose(leave_one_out(np.stack([a, b])), [a @ b, a @ b], atol=1e-6)


def test_the_threshold_is_the_callers_to_choose() -> None:
    faces = np.stack([unit(1, 0), unit(1, 1)])  # cosine 0.707
    assert fuse(faces, min_similarity=0.7).count == 2
    with pytest.raises(DifferentPeopleError):
        fuse(faces, min_similarity=0.71)


BAD = {"none": np.zeros((0, 4), np.float32), "not rows": np.array([1.0, 0.0]), "nan": np.array([[np.nan, 1.0]])}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_no_usable_face_is_bad_input(bad: str) -> None:
    with pytest.raises(BadInputError):
        fuse(BAD[bad])


def test_a_selfie_is_a_photo_whose_largest_face_dominates() -> None:
    assert dominant_face([]) is None
    assert dominant_face([(0, 0, 50, 50)]) == 0
    assert dominant_face([(0, 0, 30, 30), (100, 0, 120, 120)]) == 1  # a passer-by behind the guest
    assert dominant_face([(0, 0, 100, 100), (200, 0, 90, 90)]) is None  # two friends side by side: a group photo
