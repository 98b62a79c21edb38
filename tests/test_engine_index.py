"""Incremental, atomic indexing on tmp copies of sample photos; index provenance checks; all-faces indexing."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import numpy as np
import pytest

from engine import IndexProgress, IndexUnavailableError
from engine.store import current_version_dir, load_index
from helpers_engine import BEN, ELTON, JERRY, MADONNA, MINDY, copy_photos, first_photos, sample, side_by_side

SMALL = first_photos("Ben_Afflek", 3) + first_photos("Jerry_Seinfeld", 3) + first_photos("Madonna", 3)


def version_dirs(index_dir):
    return sorted(p.name for p in index_dir.glob("v-*"))


def rows_by_path(stored) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in stored.rows:
        out.setdefault(row["path"], []).append(row)
    return out


def test_incremental_reindex(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, SMALL)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    index_dir = engine.settings.index_dir("facenet")
    progress: list[IndexProgress] = []

    # 1. first run: everything is new
    report = engine.build_index("facenet", progress=progress.append)
    assert (report.images, report.added, report.updated, report.removed, report.unchanged) == (9, 9, 0, 0, 0)
    assert (report.skipped, report.no_face, report.faces_indexed, report.embedded_images) == (0, 0, 9, 9)
    assert progress and progress[-1].done == progress[-1].total == 9
    assert report.images_per_second > 0
    first_version = current_version_dir(index_dir)
    stored = load_index(index_dir)
    assert len(stored.rows) == 9 and stored.features.shape == (9, 128)
    assert set(stored.files) == set(SMALL)

    # 2. nothing changed: nothing embedded, nothing written, quick
    started = time.perf_counter()
    report = engine.build_index("facenet")
    assert time.perf_counter() - started < 2.0
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (0, 0, 0, 9, 0)
    assert report.faces_indexed == 9
    assert current_version_dir(index_dir) == first_version

    # 3. a new photo: only it is embedded
    copy_photos(gallery, [MINDY])
    report = engine.build_index("facenet")
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (1, 0, 0, 9, 1)
    assert report.faces_indexed == 10
    assert current_version_dir(index_dir) != first_version
    assert version_dirs(index_dir) == [current_version_dir(index_dir).name]  # the old version is cleaned up
    top = engine.search_path(sample(MINDY), k=1).faces[0].matches[0]
    assert (top.name, top.path) == ("Mindy Kaling", str((gallery / MINDY).resolve()))
    # kept rows keep their features exactly
    before = stored
    stored = load_index(index_dir)
    for path, rows in rows_by_path(before).items():
        old = before.features[before.rows.index(rows[0])]
        new = stored.features[stored.rows.index(rows_by_path(stored)[path][0])]
        np.testing.assert_array_equal(old, new)

    # 4. a photo's content replaced by another person's photo: updated, and findable as the new content
    changed = SMALL[0]  # a Ben Afflek photo ...
    shutil.copyfile(sample(ELTON), gallery / changed)  # ... now showing Elton John
    report = engine.build_index("facenet")
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (0, 1, 0, 9, 1)
    assert report.faces_indexed == 10
    top = engine.search_path(sample(ELTON), k=1).faces[0].matches[0]
    assert top.path == str((gallery / changed).resolve())
    assert top.similarity > 0.97  # the same photo; only the query is flip-averaged
    stored = load_index(index_dir)
    [row] = rows_by_path(stored)[changed]
    assert row["sha256"] == stored.files[changed]["sha256"]
    assert row["sha256"] == hashlib.sha256(sample(ELTON).read_bytes()).hexdigest()

    # 5. a deleted photo: its rows are gone
    deleted = SMALL[3]  # a Jerry Seinfeld photo
    (gallery / deleted).unlink()
    report = engine.build_index("facenet")
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (0, 0, 1, 9, 0)
    assert report.faces_indexed == 9
    stored = load_index(index_dir)
    assert deleted not in stored.files
    assert deleted not in {row["path"] for row in stored.rows}
    assert len(stored.rows) == stored.features.shape[0] == stored.manifest["count"] == 9
    result = engine.search_path(sample(deleted), k=9)
    assert str((gallery / deleted).resolve()) not in {m.path for m in result.faces[0].matches}

    # 6. a corrupt photo added: skipped and counted, the rest of the index stays
    broken = gallery / "Madonna" / "broken.jpg"
    data = sample(MADONNA).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    report = engine.build_index("facenet")
    assert report.skipped == 1
    assert report.skipped_files[0].startswith("Madonna/broken.jpg: ")
    assert report.faces_indexed == 9
    stored = load_index(index_dir)
    assert len(stored.rows) == 9
    assert "Madonna/broken.jpg" not in {row["path"] for row in stored.rows}
    assert engine.search_path(sample(JERRY), k=1).faces[0].matches[0].name == "Jerry Seinfeld"


def test_crash_before_commit_keeps_the_previous_index(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, JERRY, MADONNA])
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    index_dir = engine.settings.index_dir("facenet")
    engine.build_index("facenet")
    previous = load_index(index_dir)
    previous_version = current_version_dir(index_dir)
    assert len(previous.rows) == 3

    class Crash(RuntimeError):
        pass

    def crash():
        raise Crash("power cut")

    copy_photos(gallery, [MINDY])
    with pytest.raises(Crash, match="power cut"):
        engine.build_index("facenet", before_commit=crash)

    # on disk: CURRENT still names the old version, with the same rows and features
    assert current_version_dir(index_dir) == previous_version
    after = load_index(index_dir)
    assert after.manifest == previous.manifest
    assert after.rows == previous.rows and after.files == previous.files
    np.testing.assert_array_equal(after.features, previous.features)
    stray = [name for name in version_dirs(index_dir) if name != previous_version.name]
    assert len(stray) == 1  # the half-committed version
    # in memory: the engine still serves the old index
    assert engine.index_info("facenet").count == 3
    assert engine.search_path(sample(MINDY), k=1).faces[0].matches[0].name != "Mindy Kaling"

    # the next normal run succeeds and removes the stray folder
    report = engine.build_index("facenet")
    assert (report.added, report.unchanged, report.faces_indexed) == (1, 3, 4)
    assert version_dirs(index_dir) == [current_version_dir(index_dir).name]
    assert stray[0] not in version_dirs(index_dir)
    assert not list(index_dir.glob("CURRENT.tmp-*"))
    assert engine.search_path(sample(MINDY), k=1).faces[0].matches[0].name == "Mindy Kaling"


def test_index_built_with_other_weights_is_refused(indexed_engine, make_engine, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(indexed_engine.settings.index_dir("facenet"), data_dir / "index" / "facenet")
    # the copy is usable as long as its manifest names these weights
    engine = make_engine(data_dir=data_dir)
    engine.load("facenet")
    assert engine.index_info("facenet").count == indexed_engine.index_info("facenet").count

    version = current_version_dir(data_dir / "index" / "facenet")
    manifest_path = version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["weights_sha256"] == indexed_engine.weights_checksum("facenet")
    manifest["weights_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))

    fresh = make_engine(data_dir=data_dir)
    with pytest.raises(IndexUnavailableError, match="built with other weights") as caught:
        fresh.load("facenet")
    assert "python -m engine index --model facenet" in str(caught.value)
    with pytest.raises(IndexUnavailableError, match="built with other weights"):
        fresh.search_bytes(sample(BEN).read_bytes())
    assert fresh.index_info("facenet") is None


def test_changed_pipeline_settings_rebuild_from_scratch(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, JERRY])
    data_dir = tmp_path / "data"
    make_engine(data_dir=data_dir, gallery_dir=gallery).build_index("facenet")
    report = make_engine(data_dir=data_dir, gallery_dir=gallery, face_margin=0.3).build_index("facenet")
    assert (report.added, report.unchanged, report.embedded_images) == (2, 0, 2)
    assert load_index(data_dir / "index" / "facenet").manifest["pipeline"]["face_margin"] == 0.3


def test_index_all_faces_indexes_every_face_of_a_group_photo(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [MINDY])
    group = gallery / "Group_Photos" / "jerry-and-madonna.jpg"
    group.parent.mkdir()
    side_by_side(sample(JERRY), sample(MADONNA)).save(group, quality=95)
    relative = "Group_Photos/jerry-and-madonna.jpg"

    default = make_engine(data_dir=tmp_path / "default", gallery_dir=gallery)
    report = default.build_index("facenet")
    assert report.faces_indexed == 2
    stored = load_index(default.settings.index_dir("facenet"))
    assert len(rows_by_path(stored)[relative]) == 1
    assert stored.files[relative]["faces"] == 1

    every = make_engine(data_dir=tmp_path / "all", gallery_dir=gallery, index_all_faces=True)
    report = every.build_index("facenet")
    assert report.faces_indexed == 3
    stored = load_index(every.settings.index_dir("facenet"))
    rows = rows_by_path(stored)[relative]
    assert len(rows) == 2
    assert stored.files[relative]["faces"] == 2
    assert all(row["name"] == "Group Photos" for row in rows)
    boxes = sorted(row["box"] for row in rows)
    assert boxes[0][0] + boxes[0][2] <= 300 <= boxes[1][0]  # one face in each half
    # each face of the group photo is found from its person's own photo
    for person_photo in (JERRY, MADONNA):
        top = every.search_path(sample(person_photo), k=1).faces[0].matches[0]
        assert top.path == str(group.resolve())


def test_gallery_of_photos_without_faces_gives_an_empty_index(make_engine, tmp_path):
    from PIL import Image

    from helpers_engine import gradient_image

    gallery = tmp_path / "gallery"
    (gallery / "Nobody").mkdir(parents=True)
    Image.fromarray(gradient_image()).save(gallery / "Nobody" / "gradient.png")
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    report = engine.build_index("facenet")
    assert (report.images, report.added, report.no_face, report.faces_indexed) == (1, 1, 1, 0)
    assert engine.index_info("facenet").count == 0
    result = engine.search_path(sample(BEN), k=3)
    assert len(result.faces) == 1 and result.faces[0].matches == []
    # a second run knows the photo (0 faces) and does nothing
    again = engine.build_index("facenet")
    assert (again.added, again.unchanged, again.no_face, again.embedded_images) == (0, 1, 1, 0)


def test_reindex_with_an_unchanged_corrupt_file_is_a_no_op(make_engine, tmp_path):
    """Regression (engine bug found by this suite): an unreadable file was counted as 'added' as well as
    'skipped' on every run, re-read, and a new index version written each time."""
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, JERRY])
    (gallery / "Ben_Afflek" / "broken.jpg").write_bytes(b"not an image at all")
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    first = engine.build_index("facenet")
    assert (first.skipped, first.faces_indexed) == (1, 2)
    version = current_version_dir(engine.settings.index_dir("facenet"))
    again = engine.build_index("facenet")
    assert again.skipped == 1
    assert again.added + again.updated + again.unchanged + again.skipped == again.images == 3
    assert (again.added, again.embedded_images) == (0, 0)
    assert current_version_dir(engine.settings.index_dir("facenet")) == version


def test_index_built_with_other_weights_can_be_rebuilt(make_engine, tmp_path):
    """Regression (engine bug found by this suite): build_index() called load(), which refused the stale index
    with IndexUnavailableError, so the remedy its message names (`python -m engine index`) failed the same way."""
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, JERRY])
    data_dir = tmp_path / "data"
    make_engine(data_dir=data_dir, gallery_dir=gallery).build_index("facenet")
    manifest_path = current_version_dir(data_dir / "index" / "facenet") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["weights_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))

    fresh = make_engine(data_dir=data_dir, gallery_dir=gallery)
    report = fresh.build_index("facenet")  # the documented remedy: rebuild
    assert (report.added, report.unchanged, report.faces_indexed) == (2, 0, 2)
    assert load_index(data_dir / "index" / "facenet").manifest["weights_sha256"] == fresh.weights_checksum("facenet")
    assert fresh.search_path(sample(JERRY), k=1).faces[0].matches[0].name == "Jerry Seinfeld"
