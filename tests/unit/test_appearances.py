"""The photos layout's same-person decision over a real local store (no networks: unit vectors made here)."""

from __future__ import annotations

import numpy as np

from engine.search.appearances import AppearanceParams, appearances, best_per_photo
from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader
from engine.stores.local import LocalStore

DIM = 128  # random 128-d unit vectors are about orthogonal, as different people's faces roughly are


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def event_store(tmp_path, appearances_of_guest: int, others: int, seed: int = 0, spread: float = 0.35):
    """A guest in `appearances_of_guest` photos (two of their faces in photo 0), and `others` faces of strangers;
    `spread` sets how far the guest's faces lie from their selfie (0.35: similarity ~0.94, 1.0: ~0.6-0.8)."""
    rng = np.random.default_rng(seed)
    guest = unit(rng.standard_normal(DIM))
    guest_faces = unit(guest + spread * unit(rng.standard_normal((appearances_of_guest + 1, DIM))))
    other_faces = unit(rng.standard_normal((others, DIM)))
    rows = [FaceRow(f"g/{i:04d}.jpg", "", (10, 10, 50, 50)) for i in range(appearances_of_guest)]
    rows.append(FaceRow("g/0000.jpg", "", (100, 10, 50, 50)))  # a second face of theirs in photo 0 (a mirror)
    rows += [FaceRow(f"o/{i // 4:04d}.jpg", "", (60 * (i % 4), 10, 50, 50)) for i in range(others)]
    vectors = np.concatenate([guest_faces, other_faces])
    store = LocalStore(tmp_path / "store")
    store.initialise(StoreHeader("t", DIM, "fp", "/g", layout="photos"))
    paths = sorted({row.path for row in rows})
    store.apply(Changes(rows=rows, vectors=vectors, records=[FileRecord(p, 1, 1, p, 1) for p in paths]))
    return store, guest


def test_a_person_in_more_photos_than_the_first_search_is_found_in_all_each_once(tmp_path):
    store, guest = event_store(tmp_path, appearances_of_guest=300, others=600)
    params = AppearanceParams(threshold=0.75, cohort_weight=0.0, expand=0, first_k=64)
    found = best_per_photo(appearances(store, guest, params))
    assert sorted(a.hit.row.path for a in found) == [f"g/{i:04d}.jpg" for i in range(300)]
    scores = [a.score for a in found]
    assert scores == sorted(scores, reverse=True)
    store.close()


def test_a_guest_in_most_photos_is_found_in_all_though_their_faces_fill_the_cohort_window(tmp_path):
    """The bride: 300 photos, so neighbours 64-128 are all her own faces. The fixed window's level put every face
    of hers under the threshold; the window past her faces finds them all, and still no one else."""
    store, guest = event_store(tmp_path, appearances_of_guest=300, others=1500, spread=1.0)
    want = [f"g/{i:04d}.jpg" for i in range(300)]
    found = best_per_photo(appearances(store, guest, AppearanceParams()))
    assert sorted(a.hit.row.path for a in found) == want
    assert appearances(store, guest, AppearanceParams(cohort_past_matches=False)) == []  # the fixed window
    store.close()


def test_a_guest_in_a_few_photos_gets_the_same_answer_as_with_the_fixed_window(tmp_path):
    store, guest = event_store(tmp_path, appearances_of_guest=20, others=1500, spread=1.0)
    past = best_per_photo(appearances(store, guest, AppearanceParams()))
    fixed = best_per_photo(appearances(store, guest, AppearanceParams(cohort_past_matches=False)))
    assert [a.hit.row.path for a in past] == [a.hit.row.path for a in fixed]  # best first, both
    assert sorted(a.hit.row.path for a in past) == [f"g/{i:04d}.jpg" for i in range(20)]
    store.close()


def test_a_stranger_gets_no_photo_and_expansion_keeps_it_so(tmp_path):
    store, _ = event_store(tmp_path, appearances_of_guest=20, others=400)
    stranger = unit(np.random.default_rng(99).standard_normal(DIM))
    for params in (AppearanceParams(expand=0), AppearanceParams(expand=5)):
        assert appearances(store, stranger, params) == []
    assert appearances(store, stranger, AppearanceParams(threshold=0.0, accept=0.0, expand=0)) != []  # can fail
    store.close()


def test_expansion_reports_each_face_s_similarity_to_the_query_itself(tmp_path):
    store, guest = event_store(tmp_path, appearances_of_guest=30, others=300, seed=3)
    found = appearances(
        store, guest, AppearanceParams(threshold=0.3, cohort_weight=0.5, expand=5, expand_threshold=0.4)
    )
    assert found
    for appearance in found:
        direct = store.search(guest[None], store.count, with_vectors=True)[0]
        want = next(hit.similarity for hit in direct if hit.row == appearance.hit.row)
        assert abs(appearance.similarity - want) < 1e-3  # the same number, computed from the stored vector
    store.close()
