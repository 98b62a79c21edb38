"""MTCNN without TensorFlow: the `mtcnn` package's three networks as ONNX graphs, its stages in numpy.

`python -m engine models fetch` converts P-, R- and O-net from the weights the installed `mtcnn`
package ships (engine/tools/export.py) and accepts them only when this detector finds the same
faces as the package. The stages below follow mtcnn 1.0 step by step (pyramid, per-scale and
cross-scale NMS, square boxes, R-net and O-net refinement, landmarks) on photos of one shape, the
only batches `engine.models.mtcnn` makes; the two TensorFlow image ops it used are rewritten exactly:
`tf.image.resize(method="area")` from one integral image per photo, `tf.image.crop_and_resize` (bilinear,
zero outside the photo) as a gather. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.runtime.onnx import MTCNN_GRAPHS, SessionConfig, open_session, return_freed_memory

PNET_THRESHOLD, RNET_THRESHOLD, ONET_THRESHOLD = 0.6, 0.7, 0.8  # mtcnn 1.0's defaults
PNET_NMS_SCALE, PNET_NMS_ALL, RNET_NMS, ONET_NMS = 0.5, 0.7, 0.7, 0.7
SCALE_FACTOR = 0.709
MIN_SIZE = 12
LEVEL_BAND_ROWS = 64  # output rows of a pyramid level made at once
PNET_STRIP_PIXELS = 120_000  # input pixels a photo of one P-net run
PNET_CELL = 12  # P-net's window (stride 2)
RNET_BATCH = 128  # candidate patches of one R-net run
ONET_BATCH = 32  # ... of one O-net run


@dataclass(frozen=True)
class MTCNNSessions:
    """The three ONNX Runtime sessions (anything with `run(None, {name: array})` and `get_inputs()`)."""

    pnet: object
    rnet: object
    onet: object


def _run(session: Any, batch: np.ndarray) -> list[np.ndarray]:
    return session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32, copy=False)})


def _run_in_batches(session: Any, patches: np.ndarray, batch: int) -> list[np.ndarray]:
    """R-net or O-net on `patches`, `batch` at a time: each patch's outputs are its own (the same numbers as in one
    run), and the activations are those of a batch. 1,000 R-net patches in one run took 180 MB inside ONNX Runtime
    (32 at a time: 8 MB), and were slower: the activations of a small batch stay in the CPU's caches."""
    if len(patches) <= batch:
        return _run(session, patches)
    parts = [_run(session, patches[start : start + batch]) for start in range(0, len(patches), batch)]
    return [np.concatenate(column) for column in zip(*parts)]


def _run_pnet(session: Any, level: np.ndarray) -> list[np.ndarray]:
    """P-net on a pyramid level, in strips of about PNET_STRIP_PIXELS input pixels a photo.

    P-net's output row t reads input rows [2t, 2t + 12) only, so strips that start on an even row and overlap by
    10 rows give every output row from the same inputs as one run; what the strips save is the activations of a
    whole first level at once (a 1200×900 level took 180 MB inside ONNX Runtime)."""
    height, width = level.shape[1:3]
    rows = max(2 * PNET_CELL, PNET_STRIP_PIXELS // width // 2 * 2)  # even: every strip starts on an even row
    if height <= rows + PNET_CELL:
        return _run(session, level)
    parts: list[list[np.ndarray]] = []
    start = 0
    while True:
        last = start + rows + PNET_CELL - 2 >= height
        outputs = _run(session, level[:, start : height if last else start + rows + PNET_CELL - 2])
        parts.append(outputs if last else [output[:, : rows // 2] for output in outputs])
        if last:
            break
        start += rows
    return [np.concatenate(column, axis=1) for column in zip(*parts)]


class OnnxMTCNN:
    """Detects faces in a batch of same-shape RGB photos; rows as mtcnn's `detect_faces(output_type="numpy",
    box_format="xyxy")` gives them: [image index, x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y]."""

    def __init__(self, sessions: MTCNNSessions):
        self.sessions = sessions

    def detect_faces(self, images: list[np.ndarray], *, min_face_size: int = 20, **_: object) -> np.ndarray:
        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise ValueError(f"one shape per batch, got {sorted(shapes)}")
        # The photos stay uint8: the networks' input, (pixel - 127.5) / 128, is made per pyramid level and per patch
        # (a float32 copy of a camera photo's batch was 4x its pixels, and the pyramid's float64 integral 8x).
        return_freed_memory()  # what decoding the photos left (Pillow's copy of each) before the pyramid's arrays
        arrays = [np.asarray(image, dtype=np.uint8) for image in images]
        batch = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # one photo: a view, not a copy
        del arrays
        boxes = self._pnet(batch, min_face_size)
        return_freed_memory()  # the pyramid's and P-net's buffers (~70 MB of a camera photo) before the next stages
        if len(boxes):
            boxes = self._rnet(batch, boxes)
        if len(boxes):
            boxes = self._onet(batch, boxes)
        del batch
        return_freed_memory()  # the pyramid's levels and the networks' buffers
        if not len(boxes):
            return np.empty((0, 16))
        return _limit_boxes(boxes, shapes.pop()[:2])

    # ---- stages (mtcnn/stages/stage_*.py) -------------------------------------------------
    def _pnet(self, batch: np.ndarray, min_face_size: int) -> np.ndarray:
        height, width = batch.shape[1:3]
        pyramids = [AreaPyramid(photo) for photo in batch]  # once per photo: each level is then a few reads
        proposals = []
        for scale in scale_pyramid(width, height, min_face_size):
            size = (int(height * scale), int(width * scale))
            levels = [pyramid.level(*size) for pyramid in pyramids]
            scaled = levels[0][None] if len(levels) == 1 else np.stack(levels)  # one photo: no copy
            del levels
            regression, classes = _run_pnet(self.sessions.pnet, scaled)
            del scaled
            boxes = _proposals(regression, classes, PNET_THRESHOLD)
            boxes[:, 1:5] /= scale
            proposals.append(nms(boxes, PNET_NMS_SCALE, "union", initial_sort=False))
        boxes = np.concatenate(proposals) if proposals else np.empty((0, 6))
        return _square(nms(boxes, PNET_NMS_ALL, "union", initial_sort=True))

    def _rnet(self, batch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        regression, scores = _run_in_batches(self.sessions.rnet, crop_and_resize(batch, boxes, 24), RNET_BATCH)
        boxes = boxes.copy()
        boxes[:, -1] = scores[:, -1]
        boxes = _adjust(boxes, regression)
        boxes = boxes[boxes[:, -1] > RNET_THRESHOLD]
        return _square(nms(boxes, RNET_NMS, "union", initial_sort=True))

    def _onet(self, batch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        regression, landmarks, scores = _run_in_batches(
            self.sessions.onet, crop_and_resize(batch, boxes, 48), ONET_BATCH
        )
        width = boxes[:, 3:4] - boxes[:, 1:2] + 1
        height = boxes[:, 4:5] - boxes[:, 2:3] + 1
        landmarks = np.concatenate(
            [width * landmarks[:, 0:5] + boxes[:, 1:2] - 1, height * landmarks[:, 5:10] + boxes[:, 2:3] - 1], axis=1
        )
        boxes = boxes.copy()
        boxes[:, -1] = scores[:, -1]
        boxes = np.concatenate([_adjust(boxes, regression), landmarks], axis=1)
        boxes = boxes[boxes[:, 5] > ONET_THRESHOLD]
        return nms(boxes, ONET_NMS, "min", initial_sort=True)


# ---- numpy versions of mtcnn.utils ---------------------------------------------------------
def scale_pyramid(width: int, height: int, min_face_size: int) -> np.ndarray:
    """mtcnn's `build_scale_pyramid`: the level count from the photo's short side, the first level at 12/min_face."""
    count = round(-((np.log(min(width, height) / MIN_SIZE) / np.log(SCALE_FACTOR)) + 1))
    return (MIN_SIZE / min_face_size) * SCALE_FACTOR ** np.arange(count)


class AreaPyramid:
    """`tf.image.resize(photo, size, method="area")` of (pixel - 127.5) / 128 at every pyramid level of one photo.

    TensorFlow's ResizeArea averages, for output pixel (o, p), the input over [o·sy, (o+1)·sy) × [p·sx, (p+1)·sx)
    (s = size_in / size_out, bounds in float32), each pixel weighted by the share of it covered, pixels past the
    edge counting as the edge pixel. The average is separable: rows first, from the photo's exact integer running
    sums down its columns (two reads per output row and the partly covered edge rows), then the same along each of
    those rows. The normalisation is applied to the average (it is linear; the weights' sum is kept exact), so the
    levels equal the float64 reference within a float32 rounding. O(output rows × photo width) per level.
    """

    def __init__(self, photo: np.ndarray):
        self.height, self.width, self.channels = photo.shape
        padded = np.pad(photo, ((0, 2), (0, 2), (0, 0)), mode="edge")
        self.pixels = padded.reshape(padded.shape[0], -1)  # (rows, columns · channels), uint8
        # Running sums kept modulo 2^16 when that is enough: a level's output row sums the input rows between two of
        # them (under 257 rows: a level is at least 12 px high, P-net's input, so a photo of up to 3,084 rows), and
        # the difference of two sums modulo 2^16 is then that sum exactly. Half the memory of int32 (19 MB for a
        # photo scaled to 2048x1536).
        dtype = np.uint16 if self.height <= 12 * 257 else np.int32
        self.row_sums = np.zeros((self.pixels.shape[0] + 1, self.pixels.shape[1]), dtype)
        np.cumsum(self.pixels, axis=0, dtype=dtype, out=self.row_sums[1:])

    @staticmethod
    def _bounds(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.float32]:
        scale = np.float32(size_in / size_out)
        bounds = np.arange(size_out + 1, dtype=np.float32) * scale  # float32, as the kernel computes them
        whole = np.floor(bounds).astype(np.intp)
        return whole, bounds.astype(np.float64) - whole, scale

    def level(self, height: int, width: int) -> np.ndarray:
        """The (height, width, channels) float32 level, made LEVEL_BAND_ROWS output rows at a time (each output row
        is computed alone, so the bands change nothing; the float64 temporaries of a whole first level were 175 MB
        for a photo scaled to 2048 px)."""
        rows, row_share, scale_y = self._bounds(self.height, height)
        columns, column_share, scale_x = self._bounds(self.width, width)
        channels = self.channels
        index = (columns[:, None] * channels + np.arange(channels)).ravel()
        shares = np.repeat(column_share, channels)
        column_weights = np.diff(columns + column_share)
        divisor = np.float64(scale_y) * np.float64(scale_x) * 128.0
        level = np.empty((height, width, channels), np.float32)
        for start in range(0, height, LEVEL_BAND_ROWS):
            stop = min(height, start + LEVEL_BAND_ROWS)
            level[start:stop] = self._band(
                rows[start : stop + 1], row_share[start : stop + 1], index, shares, column_weights, divisor
            )
        return level

    def _band(
        self,
        rows: np.ndarray,
        row_share: np.ndarray,
        index: np.ndarray,
        shares: np.ndarray,
        column_weights: np.ndarray,
        divisor: np.float64,
    ) -> np.ndarray:
        """Output rows between the bounds `rows` (+ `row_share`), every column."""
        channels, height, width = self.channels, len(rows) - 1, len(column_weights)
        # rows: sum over [b_o, b_o+1) of every column = running sums' difference ± the partly covered edge rows
        by_rows = np.diff(np.take(self.row_sums, rows, axis=0), axis=0).astype(np.float64)  # uint16: wraps back
        edge = np.take(self.pixels, rows, axis=0) * row_share[:, None]
        by_rows += edge[1:]
        by_rows -= edge[:-1]
        del edge
        # columns: the same along each row of (rows, columns · channels)
        running = np.zeros((height, by_rows.shape[1] + channels))
        np.cumsum(by_rows.reshape(height, -1, channels), axis=1, out=running.reshape(height, -1, channels)[:, 1:])
        area = np.diff(np.take(running, index, axis=1).reshape(height, width + 1, channels), axis=1)
        del running
        edge = (np.take(by_rows, index, axis=1) * shares).reshape(height, width + 1, channels)
        area += edge[:, 1:]
        area -= edge[:, :-1]
        covered = np.diff(rows + row_share)[:, None] * column_weights[None, :]  # the weights' sum
        area -= 127.5 * covered[:, :, None]
        area /= divisor
        return area


def resize_area(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """`tf.image.resize(photo, (height, width), method="area")` of an (H, W, C) uint8 photo, normalised."""
    return AreaPyramid(photo).level(height, width)


def crop_and_resize(batch: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """mtcnn's `extract_patches`: `tf.image.crop_and_resize` of each box (bilinear; zero outside the photo).

    mtcnn divides the box corners by the photo's size (not size - 1), and TensorFlow maps them back by
    size - 1: kept, so the patches are the ones the networks saw with the package. `batch` is uint8: the patches
    are normalised as (pixel - 127.5) / 128 after interpolating (it is linear), zero outside the photo.
    """
    height, width = batch.shape[1:3]
    y1, x1, y2, x2 = (boxes[:, 2] / height), (boxes[:, 1] / width), (boxes[:, 4] / height), (boxes[:, 3] / width)
    steps = np.arange(size, dtype=np.float64)
    in_y = (y1 * (height - 1))[:, None] + steps[None, :] * ((y2 - y1) * (height - 1) / (size - 1))[:, None]
    in_x = (x1 * (width - 1))[:, None] + steps[None, :] * ((x2 - x1) * (width - 1) / (size - 1))[:, None]
    in_y, in_x = in_y.astype(np.float32), in_x.astype(np.float32)
    inside = ((in_y >= 0) & (in_y <= height - 1))[:, :, None] & ((in_x >= 0) & (in_x <= width - 1))[:, None, :]
    top, left = np.floor(in_y), np.floor(in_x)
    y_lerp, x_lerp = (in_y - top)[:, :, None, None], (in_x - left)[:, None, :, None]
    top_i, bottom_i = np.clip(top, 0, height - 1).astype(int), np.clip(np.ceil(in_y), 0, height - 1).astype(int)
    left_i, right_i = np.clip(left, 0, width - 1).astype(int), np.clip(np.ceil(in_x), 0, width - 1).astype(int)
    image = boxes[:, 0].astype(int)[:, None]
    flat = batch.reshape(-1, batch.shape[3])  # (photos · rows · columns, channels): one flat gather per corner
    top_start, bottom_start = (image * height + top_i) * width, (image * height + bottom_i) * width

    def pixels(row_start: np.ndarray, columns: np.ndarray) -> np.ndarray:
        return flat[row_start[:, :, None] + columns[:, None, :]].astype(np.float32)

    top_left, bottom_left = pixels(top_start, left_i), pixels(bottom_start, left_i)
    upper = top_left + (pixels(top_start, right_i) - top_left) * x_lerp
    lower = bottom_left + (pixels(bottom_start, right_i) - bottom_left) * x_lerp
    patches = (upper + (lower - upper) * y_lerp - np.float32(127.5)) / np.float32(128.0)
    return np.where(inside[:, :, :, None], patches, 0.0).astype(np.float32)


def _proposals(regression: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """mtcnn's `generate_bounding_box`: a 12-px cell (stride 2) per P-net score above `threshold`, regressed."""
    scores = classes[:, :, :, 1]
    index = np.stack(np.where(scores > threshold))  # image, y, x
    reg_x1, reg_y1, reg_x2, reg_y2 = np.transpose(regression[index[0], index[1], index[2]], (1, 0))
    up_left = index * np.asarray([[1], [2], [2]]) + np.asarray([[0], [1], [1]])
    bottom_right = index * np.asarray([[1], [2], [2]]) + np.asarray([[0], [12], [12]])
    box_w = bottom_right[2] - up_left[2]
    box_h = bottom_right[1] - up_left[1]
    boxes = np.stack(
        [
            index[0],
            up_left[2] + reg_x1 * box_w,
            up_left[1] + reg_y1 * box_h,
            bottom_right[2] + reg_x2 * box_w,
            bottom_right[1] + reg_y2 * box_h,
            scores[index[0], index[1], index[2]],
        ],
        axis=0,
    ).T
    return boxes[np.argsort(boxes[:, -1])[::-1]]


def _overlap(boxes: np.ndarray, method: str) -> np.ndarray:
    """mtcnn's `iou` (its corner order is odd but symmetric: the same matrix)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    first, second = boxes[None, :, :], boxes[:, None, :]
    inter_h = np.maximum(0, np.minimum(first[:, :, 2], second[:, :, 2]) - np.maximum(first[:, :, 0], second[:, :, 0]))
    inter_w = np.maximum(0, np.minimum(first[:, :, 3], second[:, :, 3]) - np.maximum(first[:, :, 1], second[:, :, 1]))
    inter = inter_h * inter_w
    if method == "union":
        return inter / (area[:, None] + area[None, :] - inter)
    return inter / np.minimum(area[:, None], area[None, :])


def nms(boxes: np.ndarray, threshold: float, method: str, *, initial_sort: bool) -> np.ndarray:
    """mtcnn's `smart_nms_from_bboxes`: per image, drop every box overlapping any higher one above `threshold`.

    (Unlike greedy NMS, a box is dropped even when the box it overlaps was itself dropped: kept as mtcnn does it.)
    """
    if initial_sort:
        boxes = boxes[np.argsort(boxes[:, 5])[::-1]]
    kept = []
    for image_id in np.unique(boxes[:, 0]):
        subset = boxes[boxes[:, 0] == image_id]
        failed = np.triu(_overlap(subset[:, 1:5], method) > threshold, k=1)
        kept.append(subset[~failed.any(axis=0)])
    return np.concatenate(kept) if kept else np.empty((0, boxes.shape[1]))


def _square(boxes: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    height, width = boxes[:, 4] - boxes[:, 2], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    boxes[:, 1] += width * 0.5 - side * 0.5
    boxes[:, 2] += height * 0.5 - side * 0.5
    boxes[:, 3:5] = boxes[:, 1:3] + side[:, None]
    return boxes


def _adjust(boxes: np.ndarray, regression: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    width, height = boxes[:, 3] - boxes[:, 1] + 1, boxes[:, 4] - boxes[:, 2] + 1
    boxes[:, 1:5] += regression * np.stack([width, height, width, height], axis=-1)
    return boxes


def _limit_boxes(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """mtcnn's `limit_bboxes` without landmarks (what `detect_faces` does by default)."""
    height, width = shape
    boxes = boxes.copy()
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, width - 1)
    boxes[:, [2, 4]] = np.clip(boxes[:, [2, 4]], 0, height - 1)
    return boxes


def open_mtcnn(models_dir: Path, config: SessionConfig) -> OnnxMTCNN:
    """MTCNN on ONNX Runtime over the three verified graphs; always on the CPU. Without ONNX Runtime's arena: P-net's
    inputs change size at every pyramid level, and the arena kept the largest (a 24 Mpx photo's first level) for
    good: 760 against 400 MB resident after three camera photos (benchmarks/bench_memory.py), at no measured cost."""
    sessions = {
        stage: open_session(models_dir, filename, config, arena=False) for stage, filename in MTCNN_GRAPHS.items()
    }
    return OnnxMTCNN(MTCNNSessions(**sessions))
