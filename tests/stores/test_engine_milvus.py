"""The engine on Milvus Lite (VECTOR_STORE_URI=*.db) answers like the engine on the local store."""

from __future__ import annotations

import pytest

from engine.tools.evaluate import run_evaluation
from support.helpers_engine import SAMPLE_PEOPLE, copy_photos, first_photos, sample

pytest.importorskip("pymilvus")
pytestmark = pytest.mark.milvus

PHOTOS = [photo for person in SAMPLE_PEOPLE for photo in first_photos(person, 6)]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("milvus-gallery")
    copy_photos(root, PHOTOS)
    return root


@pytest.mark.slow
def test_index_search_and_evaluation_agree_across_stores(make_engine, gallery, tmp_path):
    local = make_engine(data_dir=tmp_path / "local", gallery_dir=gallery)
    milvus = make_engine(data_dir=tmp_path / "milvus", gallery_dir=gallery, vector_store_uri=str(tmp_path / "faces.db"))
    try:
        for engine in (local, milvus):
            report = engine.build_index("facenet")
            assert (report.added, report.faces_indexed) == (30, 30 - report.no_face)
        assert milvus.index_info("facenet").count == local.index_info("facenet").count
        assert (
            milvus.index_info("facenet").store.startswith("Milvus ")
            and "collection faces_facenet" in milvus.index_info("facenet").store
        )

        for photo in (PHOTOS[0], PHOTOS[7], PHOTOS[20]):
            ours = local.search_path(sample(photo), k=5).faces[0].matches
            theirs = milvus.search_path(sample(photo), k=5).faces[0].matches
            assert [m.path for m in theirs] == [m.path for m in ours]
            assert [m.similarity for m in theirs] == pytest.approx([m.similarity for m in ours], abs=1e-4)

        # an unchanged gallery writes nothing; a removed photo leaves the Milvus collection too
        assert milvus.build_index("facenet").embedded_images == 0
        (gallery / PHOTOS[1]).rename(tmp_path / "aside.jpg")
        try:
            assert milvus.build_index("facenet").removed == 1
            found = {m.path for m in milvus.search_path(sample(PHOTOS[1]), k=10).faces[0].matches}
            assert str((gallery / PHOTOS[1]).resolve()) not in found
        finally:
            (tmp_path / "aside.jpg").rename(gallery / PHOTOS[1])

        # the evaluation searches through the configured store: same rank-1 on both
        results = [
            run_evaluation(engine, gallery, model="facenet", pairs_files=[], limit=None, out_dir=tmp_path / name)
            for engine, name in ((local, "local-report"), (milvus, "milvus-report"))
        ]
        assert results[0]["rank1"] == pytest.approx(results[1]["rank1"], abs=1e-9)
        assert results[0]["rank1"] > 0.9
    finally:
        milvus.close()
        local.close()
