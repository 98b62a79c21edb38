"""Incremental indexing through the store, on tmp copies of sample photos: what changed is found by
size/mtime, only that is embedded; moved files keep their vectors; other pipelines are refused or rebuilt."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from engine import IndexProgress, IndexUnavailableError
from engine.stores.base import Changes, FaceRow, FileRecord, StoreHeader
from support.helpers_engine import BEN, ELTON, JERRY, MADONNA, MINDY, copy_photos, first_photos, sample, side_by_side

SMALL = first_photos("Ben_Afflek", 3) + first_photos("Jerry_Seinfeld", 3) + first_photos("Madonna", 3)


def top_match(engine, relative_photo):
    return engine.search_path(sample(relative_photo), k=1).faces[0].matches[0]


def test_incremental_reindex(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, SMALL)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    store = engine.searcher("facenet").store
    progress: list[IndexProgress] = []

    # 1. first run: everything is new
    report = engine.build_index("facenet", progress=progress.append)
    assert (report.images, report.added, report.updated, report.removed, report.unchanged) == (9, 9, 0, 0, 0)
    assert (report.skipped, report.no_face, report.faces_indexed, report.embedded_images) == (0, 0, 9, 9)
    assert progress and progress[-1].done == progress[-1].total == 9
    assert (progress[0].done, progress[0].total) == (0, 9)  # the total is told before the first photo's work
    assert report.images_per_second > 0
    assert set(store.files()) == set(SMALL)
    assert store.people() == {"Ben Afflek": 3, "Jerry Seinfeld": 3, "Madonna": 3}
    first_version = store.version
    ben_before = engine.search_path(sample(SMALL[1]), k=1).faces[0].matches[0]

    # 2. nothing changed: nothing embedded, nothing written
    report = engine.build_index("facenet")
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (0, 0, 0, 9, 0)
    assert report.faces_indexed == 9
    assert store.version == first_version

    # 3. a touched file (same content, new mtime) is not embedded again
    touched = gallery / SMALL[2]
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10_000_000_000))
    report = engine.build_index("facenet")
    assert (report.unchanged, report.embedded_images, report.updated) == (9, 0, 0)
    assert store.files()[SMALL[2]].mtime_ns == touched.stat().st_mtime_ns

    # 4. a new photo: only it is embedded; the kept rows keep their vectors
    copy_photos(gallery, [MINDY])
    report = engine.build_index("facenet")
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (1, 0, 0, 9, 1)
    assert report.faces_indexed == 10
    assert store.version != first_version
    top = top_match(engine, MINDY)
    assert (top.name, top.path) == ("Mindy Kaling", str((gallery / MINDY).resolve()))
    ben_after = engine.search_path(sample(SMALL[1]), k=1).faces[0].matches[0]
    assert (ben_after.path, ben_after.similarity) == pytest.approx((ben_before.path, ben_before.similarity))

    # 5. a photo's content replaced by another person's photo: updated, and findable as the new content
    changed = SMALL[0]  # a Ben Afflek photo ...
    shutil.copyfile(sample(ELTON), gallery / changed)  # ... now showing Elton John
    report = engine.build_index("facenet")
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (0, 1, 0, 9, 1)
    assert report.faces_indexed == 10
    top = top_match(engine, ELTON)
    assert top.path == str((gallery / changed).resolve())
    assert top.similarity > 0.97  # the same photo; only the query is flip-averaged

    # 6. a deleted photo: its rows are gone
    deleted = SMALL[3]  # a Jerry Seinfeld photo
    (gallery / deleted).unlink()
    report = engine.build_index("facenet")
    assert (report.added, report.updated, report.removed, report.unchanged, report.embedded_images) == (0, 0, 1, 9, 0)
    assert report.faces_indexed == store.count == 9
    assert deleted not in store.files()
    result = engine.search_path(sample(deleted), k=9)
    assert str((gallery / deleted).resolve()) not in {m.path for m in result.faces[0].matches}

    # 7. a corrupt photo added: skipped and counted, the rest of the index stays
    broken = gallery / "Madonna" / "broken.jpg"
    data = sample(MADONNA).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    report = engine.build_index("facenet")
    assert report.skipped == 1
    assert report.skipped_files[0].startswith("Madonna/broken.jpg: ")
    assert report.faces_indexed == 9
    assert store.files()["Madonna/broken.jpg"].error
    assert top_match(engine, JERRY).name == "Jerry Seinfeld"


def test_a_renamed_person_keeps_its_vectors(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, SMALL)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    engine.build_index("facenet")
    before = engine.search_path(sample(SMALL[4]), k=1).faces[0].matches[0]
    assert before.name == "Jerry Seinfeld"

    (gallery / "Jerry_Seinfeld").rename(gallery / "Jerry_S")
    report = engine.build_index("facenet")
    assert (report.moved, report.removed, report.added, report.embedded_images) == (3, 0, 0, 0)
    assert report.faces_indexed == 9
    after = engine.search_path(sample(SMALL[4]), k=1).faces[0].matches[0]
    assert after.name == "Jerry S"
    assert after.path == str((gallery / "Jerry_S" / SMALL[4].split("/")[1]).resolve())
    assert after.similarity == pytest.approx(before.similarity)
    assert engine.searcher("facenet").store.people() == {"Ben Afflek": 3, "Jerry S": 3, "Madonna": 3}
    assert engine.build_index("facenet").unchanged == 9  # and the moved files are known by their new paths


def _foreign_store(engine, gallery, fingerprint="another-pipeline"):
    """Write a one-face store as another pipeline (other weights or settings) would have."""
    store = engine.searcher("facenet").store
    header = StoreHeader(model="facenet", dim=128, fingerprint=fingerprint, gallery=str(gallery.resolve()))
    store.initialise(header)
    vector = np.zeros((1, 128), np.float32)
    vector[0, 0] = 1.0
    stat = (gallery / BEN).stat()
    store.apply(
        Changes(
            rows=[FaceRow(BEN, "Ben Afflek", (0, 0, 10, 10))],
            vectors=vector,
            records=[FileRecord(BEN, stat.st_size, stat.st_mtime_ns, "0" * 64, 1)],
        )
    )
    return store


def test_a_store_of_other_weights_or_settings_is_refused_then_rebuilt(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, JERRY])
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    _foreign_store(engine, gallery)

    with pytest.raises(IndexUnavailableError, match="other weights or settings") as caught:
        engine.search_bytes(sample(BEN).read_bytes())
    assert "python -m engine index --model facenet" in str(caught.value)
    assert engine.index_info("facenet") is None

    report = engine.build_index("facenet")  # the documented remedy: rebuild, never mix
    assert report.rebuilt
    assert (report.added, report.unchanged, report.faces_indexed) == (2, 0, 2)
    assert top_match(engine, JERRY).name == "Jerry Seinfeld"
    assert engine.index_info("facenet").count == 2


def test_changed_pipeline_settings_rebuild_from_scratch(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, JERRY])
    data_dir = tmp_path / "data"
    make_engine(data_dir=data_dir, gallery_dir=gallery).build_index("facenet")
    wider = make_engine(data_dir=data_dir, gallery_dir=gallery, face_margin=0.3)
    with pytest.raises(IndexUnavailableError):  # searches refuse vectors made with other settings
        wider.search_bytes(sample(BEN).read_bytes())
    report = wider.build_index("facenet")
    assert report.rebuilt
    assert (report.added, report.unchanged, report.embedded_images) == (2, 0, 2)
    assert top_match(wider, BEN).name == "Ben Afflek"


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
    assert default.searcher("facenet").store.files()[relative].faces == 1

    every = make_engine(data_dir=tmp_path / "all", gallery_dir=gallery, index_all_faces=True)
    report = every.build_index("facenet")
    assert report.faces_indexed == 3
    assert every.searcher("facenet").store.files()[relative].faces == 2
    assert every.searcher("facenet").store.people() == {"Group Photos": 1, "Mindy Kaling": 1}
    # each face of the group photo is found from its person's own photo, with its own box
    boxes = []
    for person_photo in (JERRY, MADONNA):
        match = top_match(every, person_photo)
        assert (match.path, match.name) == (str(group.resolve()), "Group Photos")
        hits = every.searcher("facenet").store.search(
            every.searcher("facenet").query_vectors([every.read(sample(person_photo))], 1)[1], 1
        )
        boxes.append(hits[0][0].row.box)
    boxes.sort()
    assert boxes[0][0] + boxes[0][2] <= 300 <= boxes[1][0]  # one face in each half


def test_gallery_of_photos_without_faces_gives_an_empty_index(make_engine, tmp_path):
    from PIL import Image

    from support.helpers_engine import gradient_image

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
    """An unreadable file is remembered with its size and mtime: not re-read, nothing written on the next run."""
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, JERRY])
    (gallery / "Ben_Afflek" / "broken.jpg").write_bytes(b"not an image at all")
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    first = engine.build_index("facenet")
    assert (first.skipped, first.faces_indexed) == (1, 2)
    version = engine.searcher("facenet").store.version
    again = engine.build_index("facenet")
    assert again.skipped == 1 and "unchanged since last run" in again.skipped_files[0]
    assert again.added + again.updated + again.unchanged + again.skipped == again.images == 3
    assert (again.added, again.embedded_images) == (0, 0)
    assert engine.searcher("facenet").store.version == version


def test_should_stop_commits_what_was_embedded(make_engine, tmp_path):
    """A stop request (the bot shutting down mid-/reindex) ends the run at the next chunk; the next run finishes it."""
    gallery = tmp_path / "gallery"
    copy_photos(gallery, SMALL)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, detect_batch_size=4, index_commit_every=4)
    report = engine.build_index("facenet", should_stop=lambda: True)
    assert report.stopped
    assert report.embedded_images == 4 and report.faces_indexed == 4
    rest = engine.build_index("facenet")
    assert (rest.unchanged, rest.added, rest.embedded_images, rest.faces_indexed) == (4, 5, 5, 9)


def test_a_run_waiting_for_the_writer_lock_says_why_and_stops_when_told(make_engine, tmp_path):
    """Another run (another process, another bot replica) holds the index's writer lock: a second run tells
    `on_wait` why it waits, and a stop request ends that wait (a replica shutting down) with nothing written."""
    import threading

    from engine.stores.local import LocalStore

    gallery = tmp_path / "gallery"
    copy_photos(gallery, SMALL)
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery)
    holder = LocalStore(tmp_path / "data" / "index" / "facenet")
    waiting, stop, reasons, reports = threading.Event(), threading.Event(), [], []

    def on_wait(why: str) -> None:
        reasons.append(why)
        waiting.set()

    def second_run() -> None:
        reports.append(engine.build_index("facenet", should_stop=stop.is_set, on_wait=on_wait))

    with holder.writer(timeout=0):
        thread = threading.Thread(target=second_run)
        thread.start()
        assert waiting.wait(timeout=120)
        assert thread.is_alive()  # still waiting for the lock
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive()
    holder.close()
    assert reasons == ["another index run is writing the facenet index; waiting for it to finish"]
    (report,) = reports
    assert report.stopped and (report.embedded_images, report.added, report.faces_indexed) == (0, 0, 0)
    assert engine.index_info("facenet") is None  # nothing written
    assert engine.build_index("facenet").added == len(SMALL)  # the lock is free: a run does it all
