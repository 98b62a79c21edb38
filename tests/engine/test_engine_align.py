"""The five-point template crop: on a real photo, tilted and shrunk, the landmarks land on the template."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.models.align import FACE_TEMPLATE, similarity_transform, template_crop
from support.helpers_engine import JERRY, sample


def test_similarity_transform_recovers_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = FACE_TEMPLATE * 100
    p, q, tx, ty = similarity_transform(source, source @ rotation.T + shift)
    assert (p, q) == pytest.approx((scale * np.cos(angle), scale * np.sin(angle)))
    assert (tx, ty) == pytest.approx(tuple(shift))


@pytest.mark.parametrize("tilt, shrink", [(0, 1.0), (25, 0.6), (-35, 1.4)])
def test_template_crop_puts_the_landmarks_on_the_template(facenet_engine, tilt, shrink):
    """Whatever the tilt and size of the face in the photo, MTCNN finds its landmarks at the template's places."""
    with Image.open(sample(JERRY)) as opened:
        photo = opened.convert("RGB")
    photo = photo.resize((round(photo.width * shrink), round(photo.height * shrink))).rotate(tilt, expand=True)
    image = np.asarray(photo)
    face = facenet_engine.backends["facenet"].detector.detect([image])[0][0]
    crop = template_crop(image, face, size=160, margin=0.1)
    assert crop.shape == (160, 160, 3)
    found = facenet_engine.backends["facenet"].detector.detect([crop])[0][0]
    expected = 80 + FACE_TEMPLATE * (160 / 1.1)
    error = np.linalg.norm(found.landmarks - expected, axis=1)
    assert error.max() < 8, error  # pixels of the 160-px crop (MTCNN's own landmark noise is a few pixels)
    eyes = found.landmarks[1] - found.landmarks[0]
    assert abs(np.degrees(np.arctan2(eyes[1], eyes[0]))) < 4  # level eyes, though the photo was tilted
