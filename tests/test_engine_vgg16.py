"""The VGG16 whole-image path, with random weights (the real ones are 553 MB): index, PCA, search."""

from __future__ import annotations

import numpy as np
import pytest

from engine.store import load_index
from helpers_engine import copy_photos, first_photos, sample

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
    stored = load_index(engine.settings.index_dir("vgg16"))
    assert stored.features.shape == (6, 4096)  # raw fc2 features are kept ...
    assert (stored.directory / "pca.npz").is_file()  # ... and the PCA fitted on them stored next to them
    assert stored.pca["components"].shape == (5, 4096)  # at most n-1 components for 6 rows
    assert stored.pca["mean"].shape == (4096,)
    assert stored.manifest["dim"] == 5 and stored.manifest["weights_sha256"] == "random-weights"
    assert stored.manifest["pipeline"] == {"pca_components": 256}
    info = engine.index_info("vgg16")
    assert (info.count, info.dim, info.ann) == (6, 5, False)
    searchable = engine.loaded_index("vgg16").search.features
    np.testing.assert_allclose(np.linalg.norm(searchable, axis=1), 1.0, atol=1e-5)
    # whole-image rows: the box is the full photo
    for row in stored.rows:
        width_height = row["box"][2:]
        assert row["box"][:2] == [0, 0] and min(width_height) > 100


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
    assert result.ms["detect"] == 0.0
    assert len(engine.search_path(sample(TINY[0]), model="vgg16", k=50).faces[0].matches) == 6  # k capped by size
