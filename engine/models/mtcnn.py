"""Face detection with MTCNN (the `mtcnn` package on TensorFlow, or its networks on ONNX Runtime) and prominence ranking.

The crops the embedder sees are cut in engine/models/align.py."""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from engine.runtime.quiet import import_quietly
from engine.types import DetectedFace

# MTCNN's own pyramid is only correct at min_face_size=20 (mtcnn 1.0 keeps the level
# count fixed, so larger values push the last levels below 12 px and it finds nothing).
# We therefore always run it at 20 and express a larger minimum by scaling the photo down.
_MTCNN_MIN_FACE = 20
# Pixels (at detection scale) in one MTCNN batch: same-size photos are batched up to `batch_size`, but a batch of
# 16 camera photos at 2048 px would hold ~45 Mpx and its pyramid at once, for no speed gain on photos this large.
BATCH_PIXELS = 4_000_000


class FaceDetector:
    """MTCNN, loaded once; `detect` takes a batch of RGB arrays and returns faces per image.

    `open_network` gives the network to run (engine.models.mtcnn_onnx on ONNX Runtime); None: the `mtcnn`
    package on TensorFlow. Everything else (scaling, the retry passes, the fallback) is the same for both.
    """

    def __init__(
        self,
        *,
        max_side: int,
        min_face_size: int,
        confidence: float,
        fallback_confidence: float = 1.0,
        retry_padding: float = 0.0,
        batch_size: int = 16,
        open_network: Callable[[], object] | None = None,
    ):
        self.max_side = max_side
        self.min_face_size = min_face_size
        self.confidence = confidence
        self.fallback_confidence = fallback_confidence
        self.retry_padding = retry_padding
        self.batch_size = batch_size
        self.open_network = open_network
        self._mtcnn: Any = None  # mtcnn.MTCNN, or engine.models.mtcnn_onnx.OnnxMTCNN
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._mtcnn is None:
                if self.open_network is not None:
                    self._mtcnn = self.open_network()
                else:
                    import_quietly("tensorflow")  # mtcnn imports it: deferred until a detector is needed
                    from mtcnn import MTCNN

                    self._mtcnn = MTCNN(device="CPU:0")
                    _trace_networks(self._mtcnn)
                self._run([np.zeros((64, 64, 3), np.uint8)])  # warm up

    def sharing(self, **scaling: float) -> FaceDetector:
        """A detector running these networks (loaded once) with other scaling settings, e.g. `max_side` and
        `min_face_size` for the photos layout's gallery photos."""
        self.load()
        other = copy.copy(self)
        for name, value in scaling.items():
            if not hasattr(other, name):
                raise AttributeError(name)
            setattr(other, name, value)
        return other

    def detection_scale(self, height: int, width: int, *, for_min_face: bool = True) -> float:
        """How much a photo is shrunk for detection: to `max_side`, and so that `min_face_size` becomes 20 px."""
        scale = min(1.0, self.max_side / max(height, width))
        return min(scale, _MTCNN_MIN_FACE / self.min_face_size) if for_min_face else scale

    def detect(self, images: list[np.ndarray]) -> list[list[DetectedFace]]:
        """Faces per image, most prominent first. Same-size photos are run as one MTCNN batch.

        mtcnn's pyramid stops a level or two short on small photos, so a close-up face can
        be missed once the photo is shrunk for `min_face_size`; photos where the fast pass
        finds no face at `confidence` get a second pass at the larger `max_side` scale.
        Those still without one get a last pass framed by `retry_padding` of each side (edge
        pixels): MTCNN misses some faces that fill the frame or touch its edge. Measured, this
        finds a face in all 4 photos that had none (2 in LFW A–L, 2 in the sample gallery) and
        lifts 9 of the 12 LFW faces found under `confidence` above it. A photo that still has
        none gets its single most confident face from `fallback_confidence` on (hard photos:
        profile, low contrast; chosen on LFW by folds, it lowers rank-1 on no fold).
        """
        self.load()
        results = self._detect_scaled(images, for_min_face=True)
        retry = [
            position
            for position, (faces, image) in enumerate(zip(results, images))
            if not self._confident(faces)
            and self.detection_scale(*image.shape[:2], for_min_face=False)
            > self.detection_scale(*image.shape[:2], for_min_face=True)
        ]
        self._pass_again(results, images, retry, for_min_face=False)
        if self.retry_padding > 0:
            without = [position for position, faces in enumerate(results) if not self._confident(faces)]
            self._pass_again(results, images, without, for_min_face=False, pad=self.retry_padding)
        return [rank_by_prominence(self._chosen(faces), image.shape) for faces, image in zip(results, images)]

    def _pass_again(
        self, results: list[list[DetectedFace]], images: list[np.ndarray], positions: list[int], **how: Any
    ) -> None:
        """Detect `positions` again: confident faces replace the earlier ones, others join the fallback candidates."""
        if not positions:
            return
        for position, faces in zip(positions, self._detect_scaled([images[p] for p in positions], **how)):
            results[position] = faces if self._confident(faces) else results[position] + faces

    def _confident(self, faces: list[DetectedFace]) -> list[DetectedFace]:
        return [face for face in faces if face.confidence >= self.confidence]

    def _chosen(self, faces: list[DetectedFace]) -> list[DetectedFace]:
        """Every face at `confidence`; if there is none, the most confident one from `fallback_confidence` on."""
        confident = self._confident(faces)
        if confident or not faces:
            return confident
        return [max(faces, key=lambda face: face.confidence)]

    def _detect_scaled(
        self, images: list[np.ndarray], *, for_min_face: bool, pad: float = 0.0
    ) -> list[list[DetectedFace]]:
        """MTCNN on each photo scaled for detection and, with `pad`, framed by that share of its sides."""
        results: list[list[DetectedFace]] = [[] for _ in images]
        scaled: list[tuple[np.ndarray, tuple[float, float], tuple[int, int]]] = []
        for image in images:
            scale = self.detection_scale(*image.shape[:2], for_min_face=for_min_face)
            if scale < 1.0:
                height, width = image.shape[:2]
                size = (max(12, round(width * scale)), max(12, round(height * scale)))
                small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
                scale_xy = (width / size[0], height / size[1])
            else:
                small, scale_xy = image, (1.0, 1.0)
            offset = (round(small.shape[1] * pad), round(small.shape[0] * pad))
            if pad > 0:
                small = np.pad(small, ((offset[1], offset[1]), (offset[0], offset[0]), (0, 0)), mode="edge")
            scaled.append((small, scale_xy, offset))

        kept_from = min(self.confidence, self.fallback_confidence)  # fallback candidates are kept too
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for position, (small, _, _) in enumerate(scaled):
            by_shape[small.shape].append(position)
        for shape, positions in by_shape.items():
            per_batch = max(1, min(self.batch_size, BATCH_PIXELS // (shape[0] * shape[1])))
            for start in range(0, len(positions), per_batch):
                chunk = positions[start : start + per_batch]
                rows = self._run([scaled[p][0] for p in chunk])
                for row in rows:
                    position = chunk[int(row[0])]
                    small, scale_xy, offset = scaled[position]
                    if not _centred_inside(row, small.shape, offset):
                        continue  # a "face" in the padding
                    face = _face_from_row(row, scale_xy, images[position].shape, offset)
                    if face.confidence >= kept_from and max(face.box[2], face.box[3]) >= self.min_face_size:
                        results[position].append(face)
        return results

    def _run(self, batch: list[np.ndarray]) -> np.ndarray:
        """Raw MTCNN rows: [image index, x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y]."""
        rows = self._mtcnn.detect_faces(batch, output_type="numpy", box_format="xyxy", min_face_size=_MTCNN_MIN_FACE)
        return np.asarray(rows, dtype=np.float64).reshape(-1, 16)


def _trace_networks(mtcnn: Any) -> None:
    """Run MTCNN's three networks as traced TensorFlow graphs instead of eager Keras calls.

    On small photos the per-layer Python overhead of eager calls (PNet runs once per pyramid
    level) costs more than the convolutions. `reduce_retracing` keeps one graph per network
    with dynamic sizes. Stages without a `_model` (another mtcnn version) are left as they are.
    """
    import tensorflow as tf

    for stage in getattr(mtcnn, "stages", []):
        model = getattr(stage, "_model", None)
        if model is not None and not isinstance(model, tf.types.experimental.GenericFunction):
            stage._model = tf.function(model, reduce_retracing=True)


def _centred_inside(row: np.ndarray, padded_shape: tuple[int, ...], offset: tuple[int, int]) -> bool:
    """Whether a detection's centre lies in the photo itself, not in the padding around it."""
    dx, dy = offset
    height, width = padded_shape[0] - 2 * dy, padded_shape[1] - 2 * dx
    centre_x, centre_y = (row[1] + row[3]) / 2 - dx, (row[2] + row[4]) / 2 - dy
    return 0 <= centre_x < width and 0 <= centre_y < height


def _face_from_row(
    row: np.ndarray, scale_xy: tuple[float, float], shape: tuple[int, ...], offset: tuple[int, int] = (0, 0)
) -> DetectedFace:
    """A face in the photo's own pixels from an MTCNN row on its scaled (and possibly padded) copy."""
    sx, sy = scale_xy
    dx, dy = offset
    height, width = shape[:2]
    x1, y1 = max(0.0, (row[1] - dx) * sx), max(0.0, (row[2] - dy) * sy)
    x2, y2 = min(float(width), (row[3] - dx) * sx), min(float(height), (row[4] - dy) * sy)
    landmarks = np.stack([(row[6:11] - dx) * sx, (row[11:16] - dy) * sy], axis=1)
    box = (int(round(x1)), int(round(y1)), int(round(x2 - x1)), int(round(y2 - y1)))
    return DetectedFace(box=box, confidence=float(row[5]), landmarks=landmarks.astype(np.float32))


def rank_by_prominence(faces: list[DetectedFace], shape: tuple[int, ...]) -> list[DetectedFace]:
    """Largest and most central first (box area minus twice the squared offset from the centre)."""
    height, width = shape[:2]

    def score(face: DetectedFace) -> float:
        x, y, w, h = face.box
        offset_sq = (x + w / 2 - width / 2) ** 2 + (y + h / 2 - height / 2) ** 2
        return w * h - 2.0 * offset_sq

    return sorted(faces, key=score, reverse=True)
