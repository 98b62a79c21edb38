"""Face detection with the real MTCNN: the padded last pass and the fallback face of a photo that has none at FACE_CONFIDENCE."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.models.mtcnn import FaceDetector
from support.helpers_engine import AT_THE_EDGE, BEN, CLOSE_UP, JERRY, sample


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


def _detector(facenet_engine, *, confidence: float, fallback: float, padding: float = 0.0) -> FaceDetector:
    """A detector with these thresholds sharing the session's loaded MTCNN."""
    loaded = facenet_engine.backends["facenet"].detector
    detector = FaceDetector(
        max_side=loaded.max_side,
        min_face_size=loaded.min_face_size,
        confidence=confidence,
        fallback_confidence=fallback,
        retry_padding=padding,
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
    [[chosen]] = _detector(facenet_engine, confidence=above_all, fallback=weakest_real.confidence - 0.01).detect(
        [image]
    )
    assert chosen.box == best.box and chosen.confidence == best.confidence
    # A fallback level above every face finds nothing either.
    assert _detector(facenet_engine, confidence=above_all, fallback=(best.confidence + above_all) / 2).detect(
        [image]
    ) == [[]]


def test_the_fallback_adds_nothing_to_a_photo_with_a_confident_face(facenet_engine):
    image = _photo(BEN, JERRY)
    everything = _detector(facenet_engine, confidence=0.0, fallback=1.0).detect([image])[0]
    best = max(everything, key=lambda face: face.confidence)
    between = sorted(face.confidence for face in everything)[-2:]
    threshold = sum(between) / 2  # only the best face reaches it
    faces = _detector(facenet_engine, confidence=threshold, fallback=0.0).detect([image])[0]
    assert [face.box for face in faces] == [best.box]


def test_faces_filling_the_frame_or_at_its_edge_are_found_by_the_padded_pass(indexed_engine):
    """Two real photos MTCNN misses as they are; framed by the last pass, each face is found, inside the
    photo, and it is Elton John's: his other gallery photos are its nearest faces."""
    settings = indexed_engine.settings
    assert settings.face_retry_padding > 0  # on by default
    for relative in (CLOSE_UP, AT_THE_EDGE):
        with Image.open(sample(relative)) as opened:
            image = np.asarray(opened.convert("RGB"))
        plain = _detector(
            indexed_engine, confidence=settings.face_confidence, fallback=settings.face_fallback_confidence
        )
        assert plain.detect([image]) == [[]], relative
        [faces] = indexed_engine.backends["facenet"].detector.detect([image])
        assert len(faces) == 1 and faces[0].confidence >= settings.face_confidence, relative
        x, y, w, h = faces[0].box
        assert 0 <= x and 0 <= y and w > 40 and h > 40 and x + w <= image.shape[1] and y + h <= image.shape[0]
        [found] = indexed_engine.search_path(sample(relative), model="facenet", k=4).faces
        others = [match.name for match in found.matches if match.path != str(sample(relative).resolve())]
        assert others[:3] == ["Elton John"] * 3, (relative, others)
