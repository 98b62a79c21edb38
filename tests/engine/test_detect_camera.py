"""Camera photos (6000x4000) through the photos layout's detection: the faster pyramid, decode and crops give the
faces and pixels the reference computations give."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import engine.models.mtcnn_onnx as mtcnn_onnx
from engine.images import decode_image, read_image
from engine.models.align import face_crop
from engine.models.mtcnn_onnx import AreaPyramid, OnnxMTCNN, scale_pyramid
from support.compose import background, overlap, paste_faces
from support.helpers_engine import BEN, ELTON, JERRY, MADONNA, sample


def reference_area(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """tf.image.resize(method="area") of the normalised photo, pixel by pixel in float64 (the definition)."""
    normalised = (photo.astype(np.float64) - 127.5) / 128.0
    padded = np.pad(normalised, ((0, 2), (0, 2), (0, 0)), mode="edge")
    out = np.zeros((height, width, photo.shape[2]))
    scale_y, scale_x = np.float32(photo.shape[0] / height), np.float32(photo.shape[1] / width)

    def weights(index: int, scale: np.float32) -> list[tuple[int, float]]:
        start, end = float(np.float32(index) * scale), float(np.float32(index + 1) * scale)
        return [(i, min(end, i + 1) - max(start, i)) for i in range(int(np.floor(start)), int(np.ceil(end)))]

    for row in range(height):
        for column in range(width):
            total = sum(wy * wx * padded[y, x] for y, wy in weights(row, scale_y) for x, wx in weights(column, scale_x))
            out[row, column] = total / (float(scale_y) * float(scale_x))
    return out


def test_the_pyramid_levels_are_tensorflow_s_area_resize():
    photo = read_image(sample(JERRY), max_bytes=10**8, max_pixels=10**8)[:90, :120]
    pyramid = AreaPyramid(photo)
    for height, width in ((54, 72), (38, 51), (13, 17)):
        np.testing.assert_allclose(pyramid.level(height, width), reference_area(photo, height, width), atol=1e-6)


def test_a_level_made_in_bands_of_rows_is_the_same_resize(monkeypatch):
    photo = read_image(sample(ELTON), max_bytes=10**8, max_pixels=10**8)[:100, :70]
    whole = AreaPyramid(photo).level(61, 43)
    monkeypatch.setattr(mtcnn_onnx, "LEVEL_BAND_ROWS", 7)  # 9 bands, the last one short
    banded = AreaPyramid(photo).level(61, 43)
    np.testing.assert_allclose(banded, reference_area(photo, 61, 43), atol=1e-6)
    np.testing.assert_allclose(banded, whole, atol=1e-6)


def test_running_sums_kept_modulo_2_16_give_the_levels_of_exact_sums():
    """The worst case: every pixel 255, as tall as uint16 sums are used for (3,084 rows), down to a 12-row level,
    where an output row sums 257 input rows (65,535). A row taller is summed in int32."""
    for rows in (12 * 257, 12 * 257 + 1):
        photo = np.full((rows, 13, 3), 255, np.uint8)
        photo[::7] = 3  # not flat: a wrong sum shows
        pyramid = AreaPyramid(photo)
        assert pyramid.row_sums.dtype == (np.uint16 if rows <= 12 * 257 else np.int32)
        for height, width in ((12, 1), (257, 2), (1000, 5)):
            reference = AreaPyramid(photo)
            reference.row_sums = np.zeros(reference.row_sums.shape, np.int64)
            np.cumsum(reference.pixels, axis=0, out=reference.row_sums[1:])
            assert np.array_equal(pyramid.level(height, width), reference.level(height, width))


def test_p_net_in_strips_gives_every_output_row_of_one_run(facenet_engine, monkeypatch):
    detector = facenet_engine.backends["facenet"].detector
    detector.load()
    network = detector._mtcnn
    if not isinstance(network, OnnxMTCNN):
        pytest.skip("the Keras runtime runs mtcnn's own P-net")
    session = network.sessions.pnet
    photo = read_image(sample(MADONNA), max_bytes=10**8, max_pixels=10**8)
    for height, width in ((241, 187), (250, 180), (131, 100)):  # odd and even heights: the last strip's edge
        level = AreaPyramid(photo).level(height, width)[None]
        whole = mtcnn_onnx._run(session, level)
        monkeypatch.setattr(mtcnn_onnx, "PNET_STRIP_PIXELS", 40 * width)  # strips of 40 rows
        strips = mtcnn_onnx._run_pnet(session, level)
        monkeypatch.undo()
        for one, parts in zip(whole, strips, strict=True):
            assert one.shape == parts.shape
            np.testing.assert_allclose(parts, one, atol=1e-5)
        for threshold in (0.6, 0.9):  # the same cells pass P-net's threshold
            np.testing.assert_array_equal(whole[1][..., 1] > threshold, strips[1][..., 1] > threshold)


def test_r_net_and_o_net_in_batches_give_each_patch_s_outputs_of_one_run(facenet_engine):
    detector = facenet_engine.backends["facenet"].detector
    detector.load()
    network = detector._mtcnn
    if not isinstance(network, OnnxMTCNN):
        pytest.skip("the Keras runtime runs mtcnn's own networks")
    photo = read_image(sample(MADONNA), max_bytes=10**8, max_pixels=10**8)[None]
    boxes = network._pnet(photo, 20)  # P-net's candidates on a real photo: faces, and many that are not
    assert len(boxes) > 20
    for session, size in ((network.sessions.rnet, 24), (network.sessions.onet, 48)):
        patches = mtcnn_onnx.crop_and_resize(photo, boxes, size)
        whole = mtcnn_onnx._run(session, patches)
        batched = mtcnn_onnx._run_in_batches(session, patches, 7)  # the last batch short
        for one, parts in zip(whole, batched, strict=True):
            assert one.shape == parts.shape == (len(boxes), one.shape[1])
            np.testing.assert_allclose(parts, one, atol=1e-5)
        np.testing.assert_array_equal(whole[-1][:, 1] > 0.7, batched[-1][:, 1] > 0.7)  # the same patches pass


def camera_photo(facenet_engine) -> tuple[bytes, list]:
    detector = facenet_engine.backends["facenet"].detector
    faces = []
    for name, size in ((BEN, 90), (ELTON, 130), (JERRY, 170), (MADONNA, 240)):
        image = read_image(sample(name), max_bytes=10**8, max_pixels=10**8)
        faces.append((name, image, detector.detect([image])[0][0].box, size))
    canvas = background(faces[0][1], (6000, 4000), seed=3)
    placed = paste_faces(canvas, faces, seed=3)
    data = io.BytesIO()
    canvas.save(data, "JPEG", quality=92)
    return data.getvalue(), placed


def test_a_camera_photo_s_faces_are_found_and_cropped_as_from_the_whole_photo(facenet_engine):
    data, placed = camera_photo(facenet_engine)
    image = decode_image(data, max_bytes=10**8, max_pixels=10**8)
    np.testing.assert_array_equal(image, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    backend = facenet_engine.backends["facenet"]
    found = backend.photos_detector.detect([image])[0]
    for pasted in placed:  # every pasted face, where it was pasted
        assert max(overlap(face.box, pasted.box) for face in found) >= 0.5, pasted
    reference = _whole_photo_crops(image, found)  # a crop cut from the part of the photo it reads: the same pixels
    for face, want in zip(found, reference, strict=True):
        np.testing.assert_array_equal(face_crop(image, face, size=160, margin=0.1, alignment="rotate"), want)


def _whole_photo_crops(image: np.ndarray, faces: list) -> list[np.ndarray]:
    """The crops as Pillow makes them from the whole photo (what face_crop did before cutting the part it reads)."""
    import engine.models.align as align

    def whole(image: np.ndarray, size: int, coefficients: tuple[float, ...]) -> np.ndarray:
        crop = Image.fromarray(image).transform(
            (size, size), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR
        )
        return np.asarray(crop, dtype=np.uint8)

    fast, align.affine_crop = align.affine_crop, whole
    try:
        return [face_crop(image, face, size=160, margin=0.1, alignment="rotate") for face in faces]
    finally:
        align.affine_crop = fast


def test_the_pyramid_has_a_level_per_scale():
    assert len(scale_pyramid(2048, 1365, 20)) == 13


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_large_photo_handed_to_numpy_in_bands_is_pillow_s_decode(orientation):
    rng = np.random.default_rng(orientation)
    pixels = rng.integers(0, 256, (1100, 700, 3), dtype=np.uint8)  # > 2 bands, the last one short
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    image.save(data, "JPEG", quality=90, exif=exif.tobytes())
    with Image.open(io.BytesIO(data.getvalue())) as opened:
        want = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    got = decode_image(data.getvalue(), max_bytes=10**8, max_pixels=10**8)
    assert got.shape == want.shape == ((1100, 700, 3) if orientation == 1 else (700, 1100, 3))
    assert np.array_equal(got, want)
