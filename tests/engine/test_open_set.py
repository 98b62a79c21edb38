"""Open-set identification: a face is named only when its person is in the gallery.

Real FaceNet weights and real photos: the sample gallery split into enrolled people (all photos but one
indexed) and never-enrolled people; plus the decision rules on hand-made neighbour lists.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import Identity
from engine.backends.facenet import FaceNetBackend
from engine.search.identity import IdentityParams, identify, person_scores
from support.helpers_engine import CLEAR_FACES, copy_enrolled, person_of, sample

ENROLLED = ("Ben_Afflek", "Elton_John", "Jerry_Seinfeld")
STRANGERS = ("Madonna", "Mindy_Kaling")


@pytest.fixture(scope="module")
def open_set_engine(make_engine, tmp_path_factory):
    """An engine whose gallery holds three of the five sample people, each without their clear-face photo."""
    root = tmp_path_factory.mktemp("open-set")
    enrolled = copy_enrolled(root / "gallery", ENROLLED)
    engine = make_engine(data_dir=root / "data", gallery_dir=root / "gallery")
    report = engine.build_index("facenet")
    assert report.faces_indexed >= len(enrolled) - 3
    return engine


@pytest.mark.parametrize("relative", [CLEAR_FACES[p.replace("_", " ")] for p in ENROLLED])
def test_enrolled_person_is_named_with_a_score(open_set_engine, relative):
    face = open_set_engine.search_path(sample(relative)).faces[0]
    threshold = FaceNetBackend.default_identity.threshold
    assert face.identity.name == person_of(relative), face.identity
    assert face.identity.score >= threshold
    assert face.matches[0].name == person_of(relative)  # the photo itself is not in the gallery


@pytest.mark.parametrize("relative", [CLEAR_FACES[p.replace("_", " ")] for p in STRANGERS])
def test_never_enrolled_person_is_not_in_the_gallery(open_set_engine, relative):
    face = open_set_engine.search_path(sample(relative)).faces[0]
    assert face.identity.name is None, face.identity
    assert face.identity.score < FaceNetBackend.default_identity.threshold
    assert len(face.matches) == 5 and {m.name for m in face.matches} <= {p.replace("_", " ") for p in ENROLLED}


def test_json_identity_field_shape(open_set_engine):
    known = open_set_engine.search_path(sample(CLEAR_FACES["Elton John"])).to_dict()
    unknown = open_set_engine.search_path(sample(CLEAR_FACES["Madonna"])).to_dict()
    for result, name in ((known, "Elton John"), (unknown, None)):
        face = json.loads(json.dumps(result))["faces"][0]
        assert set(face) == {"box", "confidence", "matches", "identity"}
        assert set(face["identity"]) == {"name", "score"}
        assert face["identity"]["name"] == name
        assert isinstance(face["identity"]["score"], float)
        assert len(face["matches"]) == 5  # matches stay as they were, whatever the decision


def test_open_set_threshold_setting_overrides_the_calibrated_one(open_set_engine, make_engine):
    relative = CLEAR_FACES["Madonna"]
    baseline = open_set_engine.search_path(sample(relative)).faces[0].identity
    lenient = make_engine(
        data_dir=open_set_engine.settings.data_dir,
        gallery_dir=open_set_engine.settings.gallery_dir,
        open_set_threshold=baseline.score - 0.01,
    )
    identity = lenient.search_path(sample(relative)).faces[0].identity
    assert identity.score == pytest.approx(baseline.score)
    assert identity.name is not None  # named now: the threshold is below its score


def test_person_scores_rank_people_with_support():
    names = ["A", "B", "B", "B", "C"]
    similarities = [0.80, 0.79, 0.78, 0.77, 0.40]
    assert person_scores(names, similarities, IdentityParams(threshold=0))[0][0] == "A"
    # one further face counts by default: B's second face (0.78) lifts B above A
    scored = person_scores(names, similarities, IdentityParams(threshold=0, support=0.1, floor=0.3))
    assert scored[0][0] == "B" and scored[0][1] == pytest.approx(0.79 + 0.1 * 0.48)
    assert [name for name, _ in scored] == ["B", "A", "C"]
    both = person_scores(names, similarities, IdentityParams(threshold=0, support=0.1, floor=0.3, support_faces=2))
    assert both[0][1] == pytest.approx(0.79 + 0.1 * (0.48 + 0.47))
    assert person_scores(names, similarities, IdentityParams(threshold=0, neighbours=1)) == [("A", 0.80)]


def test_identify_normalises_against_the_cohort():
    params = IdentityParams(threshold=0.3, cohort_weight=1.0, cohort=2)
    # a face that stands out from the other people is named ...
    known = identify(["A", "B", "C", "D"], np.array([0.9, 0.4, 0.3, 0.1]), params)
    assert known == Identity("A", pytest.approx(0.9 - 0.35))
    # ... one about as close to everyone is not, though its top similarity is the same
    stranger = identify(["A", "B", "C"], np.array([0.9, 0.85, 0.8]), params)
    assert stranger.name is None and stranger.score == pytest.approx(0.9 - 0.825)
    # no other person among the neighbours: the default cohort score stands in
    alone = identify(["A", "A"], np.array([0.7, 0.6]), params)
    assert alone.score == pytest.approx(0.7 - params.cohort_default)
    assert identify([], np.array([]), params) == Identity(None, 0.0)


def test_identity_to_dict_rounds_the_score():
    assert Identity("A", 0.123456).to_dict() == {"name": "A", "score": 0.1235}
    assert Identity(None, -0.5).to_dict() == {"name": None, "score": -0.5}
