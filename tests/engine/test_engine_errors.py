"""Bad input is refused with a typed error and a clear message; bad gallery files are skipped, never fatal."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from engine import (
    BadImageError,
    BadInputError,
    Engine,
    EngineSettings,
    GalleryError,
    IndexUnavailableError,
    ModelUnavailableError,
)
from engine.errors import EngineError
from engine.images import decode_image
from engine.models.facenet_keras import build_facenet
from support.helpers_engine import BEN, MADONNA, bad_image_files, copy_photos, encode, png_header_only, sample

LIMITS = {"max_bytes": 20_000_000, "max_pixels": 50_000_000}


# ---- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("truncated.jpg", "corrupt or truncated"),
        ("random.jpg", "corrupt or truncated"),
        ("text.jpg", "not a readable image"),
        ("empty.jpg", "the file is empty"),
        ("bomb-header.png", r"pixels|DecompressionBomb"),
    ],
)
def test_bad_bytes_raise_bad_image_error(name, expected):
    data = bad_image_files()[name]
    with pytest.raises(BadImageError) as caught:
        decode_image(data, name=name, **LIMITS)
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert re.search(expected, message), message
    assert len(message) > len(name) + 10
    assert isinstance(caught.value, BadInputError) and caught.value.exit_code == 2


def test_decompression_bomb_header_over_the_pixel_limit():
    # 8000×8000 = 64 MP: under Pillow's own bomb error (2 × 89 MP) but over the engine's 50 MP limit
    with pytest.raises(BadImageError, match=r"8000x8000 pixels is over the limit of 50 megapixels"):
        decode_image(png_header_only(8000, 8000), name="big.png", **LIMITS)
    # 30000×30000 = 900 MP: refused from the header alone, no 2.7 GB allocation
    with pytest.raises(BadImageError, match="big.png"):
        decode_image(png_header_only(30_000, 30_000), name="big.png", **LIMITS)


def test_huge_bomb_header_message_names_the_pixel_limit():
    """Over twice Pillow's own limit (~179 MP) Pillow refuses before the engine's size check (this was reported
    as 'not a readable image (DecompressionBombError)'); the message must still name the engine's limit."""
    with pytest.raises(BadImageError) as caught:
        decode_image(png_header_only(30_000, 30_000), name="big.png", **LIMITS)
    assert "over the limit of 50 megapixels" in str(caught.value)
    assert "not a readable image" not in str(caught.value)


def test_real_png_over_a_small_pixel_limit():
    data = encode(Image.new("RGB", (1000, 1000), (200, 10, 10)), "PNG")
    assert len(data) < 20_000  # cheap: compresses to almost nothing
    assert decode_image(data, max_bytes=10**6, max_pixels=1_000_000).shape == (1000, 1000, 3)
    with pytest.raises(BadImageError, match="1000x1000 pixels is over the limit"):
        decode_image(data, max_bytes=10**6, max_pixels=999_999)


def test_file_over_the_byte_limit():
    data = sample(BEN).read_bytes()
    assert decode_image(data, max_bytes=len(data), max_pixels=10**8).ndim == 3
    with pytest.raises(BadImageError, match="over the .* limit"):
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**8)


def test_tiny_and_palette_and_animated_images_decode_to_rgb():
    with pytest.raises(BadImageError, match="too small"):
        decode_image(encode(Image.new("RGB", (4, 4)), "PNG"), **LIMITS)
    palette = Image.new("P", (20, 30))
    assert decode_image(encode(palette, "PNG"), **LIMITS).shape == (30, 20, 3)
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(gif, **LIMITS)
    assert decoded.shape == (16, 16, 3)
    assert tuple(decoded[0, 0]) == (255, 0, 0)  # the first frame


def test_search_bytes_rejects_bad_images(indexed_engine):
    for name, data in bad_image_files().items():
        with pytest.raises(BadImageError, match=name.replace(".", r"\.")):
            indexed_engine.search_bytes(data, name=name)


def test_search_bytes_respects_the_engine_limits(indexed_engine, make_engine, tmp_path):
    strict = make_engine(data_dir=tmp_path, max_image_bytes=5_000, max_image_pixels=10_000)
    with pytest.raises(BadImageError, match="MB limit"):
        strict.search_bytes(sample(MADONNA).read_bytes(), name="photo.jpg")
    tiny_file_big_image = encode(Image.new("L", (200, 200)), "PNG")
    assert len(tiny_file_big_image) < 5_000
    with pytest.raises(BadImageError, match="200x200 pixels is over the limit"):
        strict.search_bytes(tiny_file_big_image, name="photo.png")


# ---- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 51, True, 2.5, "3"])
def test_k_out_of_range(indexed_engine, k):
    with pytest.raises(BadInputError, match="k must be a whole number from 1 to 50"):
        indexed_engine.search_path(sample(BEN), k=k)


def test_unknown_model(indexed_engine):
    data = sample(BEN).read_bytes()
    with pytest.raises(BadInputError, match="unknown model 'foo'; choose one of: facenet, vgg16"):
        indexed_engine.search_bytes(data, model="foo")
    with pytest.raises(BadInputError, match="unknown model"):
        indexed_engine.build_index("foo")
    with pytest.raises(BadInputError, match="unknown model"):
        indexed_engine.load("FaceNet")


# ---- models, indexes, galleries -------------------------------------------------------------


def test_missing_facenet_weights(tmp_path):
    empty_models = tmp_path / "models"
    empty_models.mkdir()
    engine = Engine(EngineSettings(data_dir=tmp_path / "data", models_dir=empty_models))
    assert "python -m engine models fetch" in engine.model_problem("facenet")
    with pytest.raises(ModelUnavailableError, match="python -m engine models fetch") as caught:
        engine.load("facenet")
    assert str(empty_models / "facenet_keras.h5") in str(caught.value)
    assert caught.value.exit_code == 2
    with pytest.raises(ModelUnavailableError, match="python -m engine models fetch"):
        engine.search_bytes(sample(BEN).read_bytes())
    with pytest.raises(ModelUnavailableError, match="python -m engine models fetch"):
        build_facenet(empty_models / "facenet_keras.h5")


def test_missing_vgg16_weights(tmp_path):
    engine = Engine(EngineSettings(data_dir=tmp_path / "data", models_dir=tmp_path))
    assert engine.backend("vgg16").network.available() is False
    with pytest.raises(ModelUnavailableError, match="python -m engine models fetch vgg16"):
        engine.load("vgg16")
    with pytest.raises(ModelUnavailableError, match="python -m engine models fetch vgg16"):
        engine.backend("vgg16").network.load()


def test_search_without_an_index(make_engine, tmp_path):
    engine = make_engine(data_dir=tmp_path / "empty-data")
    engine.load("facenet")
    assert engine.index_info("facenet") is None
    with pytest.raises(IndexUnavailableError, match="python -m engine index --model facenet"):
        engine.search_bytes(sample(BEN).read_bytes())
    with pytest.raises(IndexUnavailableError, match="no facenet index"):
        engine.searcher("facenet").check_store()


def test_empty_or_missing_gallery(make_engine, tmp_path):
    engine = make_engine(data_dir=tmp_path / "data")
    with pytest.raises(GalleryError, match="gallery folder not found"):
        engine.build_index("facenet", tmp_path / "does-not-exist")
    empty = tmp_path / "empty-gallery"
    (empty / "Somebody").mkdir(parents=True)
    (empty / "Somebody" / "notes.txt").write_text("not a photo")
    with pytest.raises(GalleryError, match="no images in"):
        engine.build_index("facenet", empty)
    assert engine.index_info("facenet") is None  # nothing was written


def test_errors_share_one_base_class():
    for error in (BadImageError, BadInputError, GalleryError, IndexUnavailableError, ModelUnavailableError):
        assert issubclass(error, EngineError)
    assert issubclass(BadImageError, BadInputError) and issubclass(GalleryError, BadInputError)


# ---- bad files in a gallery -----------------------------------------------------------------


def test_bad_gallery_files_are_skipped_and_counted(make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [BEN, MADONNA])
    bad = bad_image_files()
    for name, data in bad.items():
        (gallery / "Broken_Files" / name).parent.mkdir(parents=True, exist_ok=True)
        (gallery / "Broken_Files" / name).write_bytes(data)
    # a real bomb under a small pixel limit, and a real photo over a small byte limit
    Image.new("RGB", (1200, 1000)).save(gallery / "Broken_Files" / "bomb.png")
    big = Image.open(sample(BEN)).resize((1000, 1000))
    big.save(gallery / "Broken_Files" / "large.jpg", quality=98)
    assert (gallery / "Broken_Files" / "large.jpg").stat().st_size > 100_000
    assert max(p.stat().st_size for p in (gallery / "Ben_Afflek").iterdir()) < 100_000

    engine = make_engine(
        data_dir=tmp_path / "data", gallery_dir=gallery, max_image_pixels=1_000_000, max_image_bytes=100_000
    )
    report = engine.build_index("facenet")
    skipped_names = {line.split(":", 1)[0] for line in report.skipped_files}
    expected = {f"Broken_Files/{name}" for name in [*bad, "bomb.png", "large.jpg"]}
    assert skipped_names == expected
    assert report.skipped == len(expected) == 7
    assert report.images == 9
    assert report.faces_indexed == 2
    for line in report.skipped_files:
        assert len(line.split(": ", 1)[1]) > 10  # each with a reason
    assert any("pixels is over the limit" in line for line in report.skipped_files if "bomb.png" in line)
    assert any("MB limit" in line for line in report.skipped_files if "large.jpg" in line)
    # and the good photos are searchable
    result = engine.search_path(sample(MADONNA), k=2)
    assert [m.name for m in result.faces[0].matches] == ["Madonna", "Ben Afflek"]
