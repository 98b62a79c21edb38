"""The photos layout on real weights and real photos: any tree, every face, "where does this face appear".

One nested gallery for the module (composed from sample-gallery photos): a two-person photo, a crowd of 60
small faces in a 12-Mpx photo, a single portrait, and files the listing must skip (dot-folders, dot-files).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from engine.errors import IndexUnavailableError
from engine.images import list_gallery_images
from support.compose import background, overlap, paste_faces
from support.helpers_engine import BEN, ELTON, JERRY, MADONNA, MINDY, SAMPLE_GALLERY, copy_photos, sample, side_by_side

TWO = "day-1/ceremony/IMG_0001.jpg"  # Jerry (left) and Madonna (right)
CROWD = "day-2/party/crowd/IMG_0060.jpg"  # 60 faces of 45-95 px on 4000x3000
SOLO = "day-2/portraits/IMG_0100.jpg"  # Mindy
# Elton John is in no photo: the stranger.
SKIPPED = (".trash/IMG_0001.jpg", "day-1/.thumbnails/IMG_0001.jpg", "day-1/ceremony/.IMG_0002.jpg")
# Selfies: other photos of the two people than the ones in the gallery.
JERRY_SELFIE = "Jerry_Seinfeld/httpaurorasblogcomwpcontentuploadsjerryseinfeldpublicityshotjpg.jpg"
MADONNA_SELFIE = "Madonna/httpcdncdnjustjaredcomwpcontentuploadsheadlinesmadonnatalksparisattackstearsjpg.jpg"


def crowd_faces(detector) -> list[tuple[str, np.ndarray, tuple, int]]:
    """60 faces from sample photos of Ben and Mindy, 45-95 px: (label, photo, box, size)."""
    sources = []
    for person in ("Ben_Afflek", "Mindy_Kaling"):
        for path in sorted((SAMPLE_GALLERY / person).glob("*.jpg")):
            image = np.asarray(Image.open(path).convert("RGB"))
            faces = detector.detect([image])[0]
            if len(faces) == 1 and faces[0].confidence >= 0.99 and faces[0].box[3] >= 90:
                sources.append((person, image, faces[0].box))
    assert len(sources) >= 10
    return [
        (f"{sources[i % len(sources)][0]}#{i}", *sources[i % len(sources)][1:], 45 + (i * 7) % 51) for i in range(60)
    ]


@pytest.fixture(scope="module")
def photos_gallery(tmp_path_factory, facenet_engine):
    root = tmp_path_factory.mktemp("event")
    (root / TWO).parent.mkdir(parents=True)
    side_by_side(sample(JERRY), sample(MADONNA)).save(root / TWO, quality=95)
    (root / SOLO).parent.mkdir(parents=True)
    shutil.copyfile(sample(MINDY), root / SOLO)
    canvas = background(np.asarray(Image.open(sample(ELTON)).convert("RGB")), (4000, 3000))
    placed = paste_faces(canvas, crowd_faces(facenet_engine.backends["facenet"].detector))
    (root / CROWD).parent.mkdir(parents=True)
    canvas.save(root / CROWD, quality=92)
    for skipped in SKIPPED:
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample(BEN), root / skipped)
    return root, placed


@pytest.fixture(scope="module")
def photos_engine(photos_gallery, make_engine, tmp_path_factory):
    root, _ = photos_gallery
    engine = make_engine(data_dir=tmp_path_factory.mktemp("photos-data"), gallery_dir=root, gallery_layout="photos")
    report = engine.build_index("facenet")
    return engine, report


def rows_of(engine, path: str):
    store = engine.searcher("facenet").store
    vectors = engine.searcher("facenet").query_vectors([engine.read(engine.settings.gallery_dir / path)], None)[1]
    return [hits[0].row for hits in store.search(vectors, 1)]


def test_listing_goes_to_any_depth_and_skips_dot_names(photos_gallery):
    root, _ = photos_gallery
    listed = [p.relative_to(root).as_posix() for p in list_gallery_images(root, "photos")]
    assert listed == sorted([TWO, CROWD, SOLO])
    assert list_gallery_images(root, "people") == []  # no photo sits one level deep


def test_every_face_of_every_photo_is_a_row_with_its_details(photos_engine, photos_gallery):
    engine, report = photos_engine
    _, placed = photos_gallery
    files = engine.searcher("facenet").store.files()
    assert (report.images, report.added, report.skipped) == (3, 3, 0)
    assert files[TWO].faces == 2 and files[SOLO].faces == 1
    assert files[CROWD].faces == 60  # every small face of the 12-Mpx photo
    assert report.faces_indexed == 63
    assert engine.searcher("facenet").store.people() == {"": 3}  # no names from folders
    # each pasted face was found where it was pasted
    crowd_rows = [hit.row for hit in engine.searcher("facenet").store.search(
        np.eye(1, 128, dtype=np.float32), 63)[0] if hit.row.path == CROWD]  # fmt: skip
    assert len(crowd_rows) == 60
    assert all(max(overlap(row.box, p.box) for p in placed) >= 0.3 for row in crowd_rows)
    for row in crowd_rows + rows_of(engine, TWO):
        assert row.name == "" and row.confidence >= engine.settings.face_confidence
        x, y, w, h = row.box  # landmarks in the photo's pixels, on the face (a turned face's nose may leave the box)
        inside = [x - w / 4 <= px <= x + 1.25 * w and y - h / 4 <= py <= y + 1.25 * h for px, py in row.landmarks]
        assert len(row.landmarks) == 5 and all(inside), (row, inside)


@pytest.mark.parametrize("selfie,side", [(JERRY_SELFIE, "left"), (MADONNA_SELFIE, "right")])
def test_a_selfie_finds_the_group_photo_with_its_own_face(photos_engine, selfie, side):
    engine, _ = photos_engine
    result = engine.search_path(sample(selfie), max_faces=1)
    (face,) = result.faces
    assert face.person is None  # no people registry wired in
    assert [photo.path for photo in face.photos] == [str(engine.settings.gallery_dir.resolve() / TWO)]
    assert face.photos_total == 1
    width = Image.open(engine.settings.gallery_dir / TWO).width
    x, _, w, _ = face.photos[0].box
    assert (x + w / 2 < width / 2) == (side == "left")  # the box marks the selfie's person, not the other one


def test_a_stranger_appears_in_no_photo(photos_engine):
    engine, _ = photos_engine
    (face,) = engine.search_path(sample(ELTON), max_faces=1).faces  # Elton John is in no photo of the gallery
    assert face.photos == [] and face.photos_total == 0 and face.person is None


def test_search_json_contract_and_limit(photos_engine, capsys):
    from engine.__main__ import main

    engine, _ = photos_engine
    settings = engine.settings
    import os

    env = {
        "DATA_DIR": str(settings.data_dir),
        "GALLERY_DIR": str(settings.gallery_dir),
        "MODELS_DIR": str(settings.models_dir),
    }
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        code = main(["search", "--json", "--layout", "photos", "--limit", "1", str(sample(JERRY_SELFIE))])
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    assert code == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    answer = json.loads(line)
    (face,) = answer["faces"]
    assert set(face) == {"box", "confidence", "matches", "photos", "photos_total", "person"}
    assert face["person"] is None and face["photos_total"] == 1 and len(face["photos"]) == 1
    (photo,) = face["photos"]
    assert set(photo) == {"path", "box", "similarity", "person"}
    assert photo["path"].endswith(TWO) and len(photo["box"]) == 4 and 0 < photo["similarity"] <= 1


def test_switching_layouts_rebuilds_with_a_clear_reason_never_a_mixed_index(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, MADONNA])
    people = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    assert people.build_index("facenet").faces_indexed == 2
    photos = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, gallery_layout="photos")
    with pytest.raises(IndexUnavailableError, match="built in the people layout but GALLERY_LAYOUT is photos"):
        photos.search_path(sample(BEN))
    report = photos.build_index("facenet")
    assert report.rebuilt and "people layout" in report.rebuilt_reason and "photos layout" in report.rebuilt_reason
    assert (report.added, report.unchanged) == (2, 0)  # everything embedded again: nothing kept from the other layout
    store = photos.searcher("facenet").store
    assert store.header.layout == "photos" and store.people() == {"": 2}
    people.searcher("facenet").store.refresh()
    with pytest.raises(IndexUnavailableError, match="--layout people"):
        people.search_path(sample(BEN))


@pytest.mark.parametrize("store_kind", ["local", "milvus-lite"])
def test_photos_layout_moves_and_live_pickup(make_engine, tmp_path, store_kind):
    uri = None
    if store_kind == "milvus-lite":
        pytest.importorskip("milvus_lite")
        uri = str(tmp_path / "faces.db")
    gallery = tmp_path / "gallery"
    (gallery / "a" / "b").mkdir(parents=True)
    side_by_side(sample(JERRY), sample(MADONNA)).save(gallery / "a" / "b" / "two.jpg", quality=95)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, gallery_layout="photos", vector_store_uri=uri)
    first = engine.build_index("facenet")
    assert (first.added, first.faces_indexed) == (1, 2)
    before = sorted(rows_of(engine, "a/b/two.jpg"), key=lambda row: row.box)
    version = engine.searcher("facenet").store.version

    (gallery / "c").mkdir()
    (gallery / "a" / "b" / "two.jpg").rename(gallery / "c" / "renamed.jpg")  # a moved and renamed photo
    shutil.copyfile(sample(MINDY), gallery / "a" / "mindy.jpg")  # and a new one
    report = engine.build_index("facenet")
    assert (report.moved, report.added, report.embedded_images, report.faces_indexed) == (1, 1, 1, 3)
    after = sorted(rows_of(engine, "c/renamed.jpg"), key=lambda row: row.box)
    assert [(r.path, r.box, r.confidence, r.landmarks) for r in after] == [
        ("c/renamed.jpg", r.box, r.confidence, r.landmarks) for r in before
    ]  # the rows follow the file with their detection details; nothing embedded again
    assert engine.searcher("facenet").store.version != version
    (face,) = engine.search_path(sample(JERRY_SELFIE), max_faces=1).faces
    assert [photo.path for photo in face.photos] == [str(gallery.resolve() / "c" / "renamed.jpg")]
