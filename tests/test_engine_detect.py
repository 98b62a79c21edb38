"""Face detection with the real MTCNN: the fallback face of a photo that has none at FACE_CONFIDENCE."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.detect import FaceDetector
from helpers_engine import BEN, JERRY, sample


def _photo(*relatives: str, height: int = 300) -> np.ndarray:
    """The sample photos side by side, each scaled to `height`."""
    photos = []
    for relative in relatives:
        with Image.open(sample(relative)) as opened:
            photo = opened.convert("RGB")
        photos.append(photo.resize((round(photo.width * height / photo.height), height)))
    canvas = Image.new("RGB", (sum(p.width for p in photos), height))
    left = 0
    for photo in photos:
        canvas.paste(photo, (left, 0))
        left += photo.width
    return np.asarray(canvas)


def _detector(facenet_engine, *, confidence: float, fallback: float) -> FaceDetector:
    """A detector with these thresholds sharing the session's loaded MTCNN."""
    loaded = facenet_engine.backends["facenet"].detector
    detector = FaceDetector(
        max_side=loaded.max_side, min_face_size=loaded.min_face_size, confidence=confidence, fallback_confidence=fallback
    )
    detector._mtcnn = loaded._mtcnn
    return detector


def test_a_photo_without_a_confident_face_gets_its_best_face_from_the_fallback_level(facenet_engine):
    image = _photo(BEN, JERRY)
    everything = _detector(facenet_engine, confidence=0.0, fallback=1.0).detect([image])[0]
    assert len(everything) >= 2, [f.confidence for f in everything]
    best = max(everything, key=lambda face: face.confidence)
    weakest_real = min(everything, key=lambda face: face.confidence)
    assert weakest_real.confidence < best.confidence < 1.0

    # No face reaches `confidence`: without a fallback the photo has no face...
    above_all = (best.confidence + 1.0) / 2
    assert _detector(facenet_engine, confidence=above_all, fallback=1.0).detect([image]) == [[]]
    # ...with one, exactly its most confident face, whatever the others are.
    [[chosen]] = _detector(facenet_engine, confidence=above_all, fallback=weakest_real.confidence - 0.01).detect([image])
    assert chosen.box == best.box and chosen.confidence == best.confidence
    # A fallback level above every face finds nothing either.
    assert _detector(facenet_engine, confidence=above_all, fallback=(best.confidence + above_all) / 2).detect([image]) == [[]]


def test_the_fallback_adds_nothing_to_a_photo_with_a_confident_face(facenet_engine):
    image = _photo(BEN, JERRY)
    everything = _detector(facenet_engine, confidence=0.0, fallback=1.0).detect([image])[0]
    best = max(everything, key=lambda face: face.confidence)
    between = sorted(face.confidence for face in everything)[-2:]
    threshold = sum(between) / 2  # only the best face reaches it
    faces = _detector(facenet_engine, confidence=threshold, fallback=0.0).detect([image])[0]
    assert [face.box for face in faces] == [best.box]
