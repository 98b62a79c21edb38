"""Searching the indexed sample gallery: identities, re-encoded uploads, no-face photos, two faces, EXIF, HNSW."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine import FaceResult, Match, SearchResult
from support.helpers_engine import (
    CLEAR_FACES,
    ELTON,
    JERRY,
    MADONNA,
    SAMPLE_GALLERY,
    encode,
    gradient_image,
    sample,
    side_by_side,
)


def test_sample_index_report(sample_index, indexed_engine):
    report = sample_index
    assert report.model == "facenet"
    assert report.images == 118
    assert report.added == 118
    assert (report.updated, report.removed, report.unchanged, report.skipped) == (0, 0, 0, 0)
    assert report.skipped_files == []
    assert report.no_face <= 3  # a couple of photos have faces MTCNN misses
    assert report.faces_indexed == 118 - report.no_face  # one (the main) face per photo by default
    info = indexed_engine.index_info("facenet")
    assert info is not None
    assert (info.count, info.dim) == (report.faces_indexed, 128)
    assert info.gallery == str(SAMPLE_GALLERY.resolve())


@pytest.mark.parametrize("person", sorted(CLEAR_FACES))
def test_search_a_gallery_photo_finds_its_person(indexed_engine, person):
    path = sample(CLEAR_FACES[person])
    result = indexed_engine.search_path(path, k=5)
    assert isinstance(result, SearchResult)
    assert result.model == "facenet"
    assert len(result.faces) == 1
    face = result.faces[0]
    assert isinstance(face, FaceResult)
    assert len(face.matches) == 5
    assert all(isinstance(m, Match) for m in face.matches)
    assert [m.rank for m in face.matches] == [1, 2, 3, 4, 5]
    similarities = [m.similarity for m in face.matches]
    assert similarities == sorted(similarities, reverse=True)
    top = face.matches[0]
    assert top.name == person
    assert top.path == str(path)  # the photo itself is in the gallery
    # the query is flip-averaged and the gallery entry is not, so "itself" is close to, not exactly, 1
    assert top.similarity > 0.97 and top.distance < 0.25
    assert top.similarity > face.matches[1].similarity
    # the best match that is another photo is also of this person
    assert face.matches[1].name == person
    assert face.matches[1].path != str(path)
    for m in face.matches:
        assert m.distance == pytest.approx(np.sqrt(max(0.0, 2 - 2 * m.similarity)), abs=1e-5)
    assert set(result.ms) == {"detect", "embed", "search"}
    assert all(v >= 0 for v in result.ms.values())


def test_search_bytes_of_a_reencoded_jpeg(indexed_engine):
    original = Image.open(sample(MADONNA)).convert("RGB")
    smaller = original.resize((original.width * 3 // 4, original.height * 3 // 4))
    data = encode(smaller, "JPEG", quality=60)
    assert data != sample(MADONNA).read_bytes()
    result = indexed_engine.search_bytes(data, k=3, name="upload.jpg")
    assert result.image == "upload.jpg"
    assert len(result.faces) == 1
    matches = result.faces[0].matches
    assert [m.name for m in matches[:2]] == ["Madonna", "Madonna"]
    assert matches[0].path == str(sample(MADONNA))
    assert matches[0].similarity > 0.9
    # the box is in the coordinates of the uploaded (smaller) image
    x, y, w, h = result.faces[0].box
    assert 0 <= x and x + w <= smaller.width and 0 <= y and y + h <= smaller.height


def test_no_face_image_gives_empty_lists(indexed_engine):
    result = indexed_engine.search_bytes(encode(gradient_image(), "PNG"), k=3)
    assert result.faces == []
    assert isinstance(result.faces, list)
    assert result.to_dict()["faces"] == []
    assert result.ms["embed"] >= 0


def test_to_dict_is_plain_json(indexed_engine):
    import json

    result = indexed_engine.search_path(sample(JERRY), k=2)
    data = json.loads(json.dumps(result.to_dict()))
    face = data["faces"][0]
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert set(face["matches"][0]) == {"rank", "name", "path", "similarity", "distance"}
    assert face["matches"][0]["name"] == "Jerry Seinfeld"


def test_k_is_capped_by_index_size_and_default_applies(indexed_engine):
    result = indexed_engine.search_path(sample(ELTON))
    assert len(result.faces[0].matches) == indexed_engine.settings.default_k == 5
    result = indexed_engine.search_path(sample(ELTON), k=50)
    assert len(result.faces[0].matches) == 50
    assert len({m.path for m in result.faces[0].matches}) == 50


# ---- two faces in one photo --------------------------------------------------------------


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
    """Jerry Seinfeld (left) and Madonna (right) side by side in one JPEG."""
    canvas = side_by_side(sample(JERRY), sample(MADONNA))
    path = tmp_path_factory.mktemp("two-faces") / "jerry-and-madonna.jpg"
    canvas.save(path, quality=95)
    return path, canvas.width // 2


def test_two_faces_each_matching_its_person(indexed_engine, two_people):
    path, middle = two_people
    result = indexed_engine.search_path(path, k=3)
    assert len(result.faces) == 2
    by_side = sorted(result.faces, key=lambda face: face.box[0])
    left, right = by_side
    assert left.box[0] + left.box[2] <= middle <= right.box[0]
    assert left.matches[0].name == "Jerry Seinfeld"
    assert left.matches[0].path == str(sample(JERRY))
    assert right.matches[0].name == "Madonna"
    assert right.matches[0].path == str(sample(MADONNA))
    assert left.matches[1].name == "Jerry Seinfeld"
    assert right.matches[1].name == "Madonna"


def test_max_faces_limits_the_faces_searched(indexed_engine, two_people):
    path, _ = two_people
    result = indexed_engine.search_path(path, k=3, max_faces=1)
    assert len(result.faces) == 1
    assert result.faces[0].matches[0].name in {"Jerry Seinfeld", "Madonna"}


# ---- EXIF orientation ----------------------------------------------------------------------


@pytest.mark.parametrize(("orientation", "angle"), [(6, 90), (8, -90)])
def test_rotated_photo_with_exif_orientation(indexed_engine, tmp_path, orientation, angle):
    upright = Image.open(sample(ELTON)).convert("RGB")
    # Stored sideways; the EXIF tag tells viewers how to turn it upright again.
    stored = upright.rotate(angle, expand=True)
    assert stored.size == (upright.height, upright.width)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "sideways.jpg"
    stored.save(path, quality=95, exif=exif)
    assert Image.open(path).getexif()[0x0112] == orientation

    reference = indexed_engine.search_path(sample(ELTON), k=3).faces[0]
    result = indexed_engine.search_path(path, k=3)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.matches[0].name == "Elton John"
    assert face.matches[0].path == str(sample(ELTON))
    assert face.matches[0].similarity > 0.95
    # the box is in the upright frame: the same place as in the upright original
    x, y, w, h = face.box
    assert x + w <= upright.width and y + h <= upright.height
    np.testing.assert_allclose(face.box, reference.box, atol=8)
