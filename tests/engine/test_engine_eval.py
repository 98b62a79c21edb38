"""Leave-one-out identification on the real sample gallery, and the report files it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import BadInputError
from engine.tools.evaluate import eval_index_dir, read_pairs, retrieval_metrics, run_evaluation, verification_accuracy


@pytest.fixture(scope="module")
def evaluation(facenet_engine, sample_gallery, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("reports")
    report = run_evaluation(
        facenet_engine, sample_gallery, model="facenet", pairs_files=[], limit=None, out_dir=out_dir
    )
    return report, out_dir


@pytest.mark.slow
def test_sample_gallery_rank1_at_least_097(evaluation):
    report, _ = evaluation
    assert report["model"] == "facenet"
    assert (report["images"], report["people"], report["queries"]) == (118, 5, 118)
    assert report["queries_without_face"] <= 3
    assert report["rank1"] >= 0.97, report["rank1"]
    assert report["hit5"] >= report["rank1"]
    assert 0.8 <= report["map10"] <= 1.0
    precision = report["precision_at_k"]
    assert len(precision) == 10 and precision[0] == pytest.approx(report["rank1"])
    assert all(0.0 <= p <= 1.0 for p in precision)


def test_eval_writes_report_and_plots(evaluation, facenet_engine, sample_gallery):
    report, out_dir = evaluation
    files = {key: out_dir / name for key, name in (
        ("json", "eval-sample-gallery-facenet.json"),
        ("plot", "eval-sample-gallery-facenet-precision.png"),
        ("contact_sheet", "eval-sample-gallery-facenet-contact-sheet.png"),
    )}  # fmt: skip
    assert report["files"] == {key: str(path) for key, path in files.items()}
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 1000, path
    for key in ("plot", "contact_sheet"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(files["json"].read_text())
    assert saved["rank1"] == report["rank1"]
    assert saved["index"]["images"] == 118
    # the evaluation index lives in DATA_DIR/eval, apart from the search index
    eval_dir = eval_index_dir(facenet_engine, sample_gallery, "facenet", None)
    assert eval_dir.is_relative_to(facenet_engine.settings.data_dir / "eval")
    assert eval_dir.is_dir() and any(eval_dir.iterdir())


def exact_search(features, rows):
    """A stand-in for a store's search over a few hand-made vectors (exact inner product)."""
    from engine.stores.base import Hit

    def search(queries, k):
        similarities = queries @ features.T
        order = np.argsort(-similarities, axis=1)[:, :k]
        return [[Hit(float(similarities[q, r]), rows[r]) for r in order[q]] for q in range(len(queries))]

    return search


def test_retrieval_metrics_on_a_hand_made_case():
    from engine.stores.base import FaceRow

    # four unit vectors; b1 is nearer to a2 than to b2, so its rank-1 is a miss
    features = np.array([[1, 0], [0.96, 0.28], [0.8, 0.6], [0, 1]], np.float32)
    rows = [
        FaceRow(path, person, (0, 0, 1, 1)) for path, person in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]
    ]
    queries = [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B"), ("missing", "B")]
    vectors = {row.path: features[i] for i, row in enumerate(rows)}
    metrics, per_query = retrieval_metrics(
        exact_search(features, rows), {"A": 2, "B": 2}, {row.path: 1 for row in rows}, queries, vectors
    )
    # a1 → a2 (hit), a2 → a1 (hit), b1 → a2 (miss), b2 → b1 (hit), missing → no face (miss)
    assert metrics["queries"] == 5 and metrics["queries_without_face"] == 1
    assert metrics["rank1"] == pytest.approx(3 / 5)
    assert metrics["hit5"] == pytest.approx(4 / 5)
    assert per_query[4]["top"] == []
    assert per_query[0]["top"][0] == ("a2", "A")  # its own image is never its match


def test_verification_accuracy_separable_pairs():
    features = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.141, 0.99]], np.float32)
    vectors = dict(zip(["a", "a2", "b", "b2"], features))
    pairs = [("a", "a2", True), ("b", "b2", True), ("a", "b", False), ("a2", "b2", False)] * 5
    result = verification_accuracy(vectors, pairs, folds=5)
    assert result["accuracy"] == 1.0 and result["pairs"] == 20 and result["pairs_missing_face"] == 0


def test_read_pairs(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("10\t300\nAbel_Pacheco\t1\t4\nAbel_Pacheco\t2\tAaron_Peirsol\t3\n")
    assert read_pairs(path) == [
        ("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg", True),
        ("Abel_Pacheco/Abel_Pacheco_0002.jpg", "Aaron_Peirsol/Aaron_Peirsol_0003.jpg", False),
    ]
    (tmp_path / "bad.txt").write_text("nothing here\n")
    with pytest.raises(BadInputError, match="no pairs found"):
        read_pairs(tmp_path / "bad.txt")


# ---- open set ----------------------------------------------------------------------------


def test_open_set_split_enrols_half_and_keeps_strangers_out():
    from engine.tools.evaluate import open_set_split

    images_of = {f"P{i}": [f"P{i}/{j}.jpg" for j in range(1 + i % 3)] for i in range(30)}
    gallery, mated, non_mated = open_set_split(images_of, seed=3)
    multi = [p for p, images in images_of.items() if len(images) >= 2]
    assert len(mated) == len(multi) // 2 == len(non_mated)
    enrolled = {person for _, person in mated}
    assert {image.split("/")[0] for image in gallery} == enrolled
    assert not enrolled & {person for _, person in non_mated}
    for image, person in mated:  # the probe is the enrolled person's one photo left out
        assert image not in gallery and image.startswith(person + "/")
        assert sum(g.startswith(person + "/") for g in gallery) == len(images_of[person]) - 1
    assert open_set_split(images_of, seed=3) == (gallery, mated, non_mated)
    assert open_set_split(images_of, seed=4) != (gallery, mated, non_mated)


def test_open_set_rates_on_a_hand_made_case():
    from engine.tools.evaluate import open_set_curve, open_set_rates

    mated = [("a.jpg", "A"), ("b.jpg", "B"), ("c.jpg", "C"), ("d.jpg", "D")]
    mated_answers = [("A", 0.9), ("B", 0.4), ("X", 0.8), (None, -np.inf)]  # right, right but low, wrong, no face
    non_mated_answers = [("A", 0.7), ("B", 0.3)]
    rates = open_set_rates(mated, mated_answers, non_mated_answers, 0.5)
    assert rates == {"threshold": 0.5, "fpir": 0.5, "fnir": 0.75, "rank1": 0.5}
    assert open_set_rates(mated, mated_answers, non_mated_answers, 0.35)["fnir"] == 0.5
    curve = open_set_curve(mated, mated_answers, non_mated_answers)
    assert [p["fpir"] for p in curve] == sorted((p["fpir"] for p in curve), reverse=True)
    assert curve[0]["fpir"] == 1.0 and curve[-1]["fpir"] <= 0.5


def test_eval_open_set_on_the_sample_gallery(facenet_engine, sample_gallery, tmp_path):
    from engine.tools.evaluate import run_open_set_evaluation

    report = run_open_set_evaluation(facenet_engine, sample_gallery, model="facenet", limit=None, out_dir=tmp_path)
    assert (report["mated_probes"], report["non_mated_probes"]) == (2, 2)  # 5 people: 2 enrolled, 2 strangers
    assert report["threshold"] == facenet_engine.backend("facenet").identity_params().threshold
    assert report["rank1"] == 1.0 and report["fnir"] == 0.0 and report["fpir"] == 0.0
    assert report["curve"][0]["fpir"] == 1.0
    saved = json.loads((tmp_path / "eval-open-set-sample-gallery-facenet-seed0.json").read_text())
    assert saved["fpir"] == report["fpir"] and saved["gallery_images"] == report["gallery_images"]
    plot = tmp_path / "eval-open-set-sample-gallery-facenet-seed0-fpir-fnir.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 1000
