"""The VGG16 whole-image path, with random weights (the real ones are 553 MB): index, PCA, search."""

from __future__ import annotations

import numpy as np
import pytest

from support.helpers_engine import copy_photos, first_photos, sample

TINY = first_photos("Ben_Afflek", 2) + first_photos("Madonna", 2) + first_photos("Mindy_Kaling", 2)


@pytest.fixture(scope="module")
def vgg16_engine(make_engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("vgg16")
    copy_photos(root / "gallery", TINY)
    engine = make_engine(data_dir=root / "data", gallery_dir=root / "gallery", models_dir=root / "no-models",
                         vgg16_random_weights=True)  # fmt: skip
    report = engine.build_index("vgg16")
    return engine, report, root / "gallery"


def test_vgg16_index_with_pca(vgg16_engine):
    engine, report, gallery = vgg16_engine
    assert engine.model_problem("vgg16") is None  # random weights need no file
    assert (report.model, report.images, report.added, report.skipped, report.faces_indexed) == ("vgg16", 6, 6, 0, 6)
    store = engine.searcher("vgg16").store
    assert store.header.dim == 256  # PCA size from the settings (6 photos fit 5 components, the rest padded)
    projection = np.load(__import__("io").BytesIO(store.get_meta("projection")))
    assert projection["components"].shape == (256, 4096) and projection["mean"].shape == (4096,)
    assert np.count_nonzero(np.abs(projection["components"]).sum(axis=1)) == 5  # at most n-1 components for 6 rows
    info = engine.index_info("vgg16")
    assert (info.count, info.dim) == (6, 256)
    assert engine.backend("vgg16").weights_sha256() == "random-weights"
    assert engine.pipeline_params("vgg16") == {"pca_components": 256}
    # whole-image rows: the box is the full photo
    hits = store.search(engine.searcher("vgg16").query_vectors([engine.read(gallery / TINY[0])], None)[1], 6)[0]
    assert len(hits) == 6
    for hit in hits:
        assert hit.row.box[:2] == (0, 0) and min(hit.row.box[2:]) > 100


def test_vgg16_index_grows_incrementally_with_the_same_projection(vgg16_engine, tmp_path):
    engine, _, gallery = vgg16_engine
    store = engine.searcher("vgg16").store
    projection = store.get_meta("projection")
    copy_photos(gallery, first_photos("Jerry_Seinfeld", 1))
    report = engine.build_index("vgg16")
    assert (report.added, report.unchanged, report.faces_indexed) == (1, 6, 7)
    assert store.get_meta("projection") == projection  # fitted once, on the first write
    query = gallery / first_photos("Jerry_Seinfeld", 1)[0]
    assert engine.search_path(query, model="vgg16", k=1).faces[0].matches[0].path == str(query.resolve())


def test_vgg16_search_returns_the_whole_image_with_k_matches(vgg16_engine):
    engine, _, gallery = vgg16_engine
    query = gallery / TINY[2]
    result = engine.search_path(query, model="vgg16", k=4)
    assert result.model == "vgg16"
    assert len(result.faces) == 1
    face = result.faces[0]
    from PIL import Image

    width, height = Image.open(query).size
    assert face.box == (0, 0, width, height) and face.confidence == 1.0
    assert len(face.matches) == 4
    assert face.matches[0].path == str(query.resolve())  # the photo itself, through the same PCA
    assert face.matches[0].similarity > 0.999
    assert result.ms["detect"] < 5  # no detection: the whole image is the region
    assert (
        len(engine.search_path(sample(TINY[0]), model="vgg16", k=50).faces[0].matches)
        == engine.index_info("vgg16").count
    )
