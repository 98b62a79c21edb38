"""Bulk indexing's pipeline: decoding, detection and cropping in worker processes, embedding here in batches.

`IndexPipeline.run(items)` takes gallery items `(relative_path, path)` and yields lists of `EmbeddedImage`
in input order, one list per chunk of `DETECT_BATCH_SIZE` images (on a GPU, chunks that are ready
together are embedded as one batch and yielded together). Each result carries its relative path.

Workers are `spawn`ed processes (TensorFlow is not fork-safe); each loads MTCNN once in its initializer,
keeps off the GPU, and uses its share of the cores. The indexing process keeps the embedder (loaded once,
on the GPU when there is one) and embeds chunk N while the workers prepare chunks N+1..N+2·workers.
Crops are made exactly as the in-process path makes them (`Preparer`), so the vectors are the same.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engine.backends import BACKENDS, ModelBackend, Region
from engine.errors import BadInputError, EngineError
from engine.images import decode_image, read_image
from engine.runtime.device import DeviceInfo, cpu_cores, default_index_workers, device_scope
from engine.runtime.onnx import limit_heap_retention, return_freed_memory
from engine.runtime.quiet import import_quietly
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
# Below this many images, starting worker processes (TensorFlow + MTCNN each, seconds) costs more than it saves.
MIN_IMAGES_FOR_WORKERS = 64
# Decoded pixels a worker holds before finding their regions: one 24 Mpx camera photo, or a whole chunk of small ones.
DECODED_PIXELS = 12_000_000
T = TypeVar("T")


@dataclass
class EmbeddedImage:
    """One gallery image: its faces' boxes and vectors (empty: no face), or why it was skipped."""

    path: str  # relative gallery path, as given
    error: str | None
    faces: list[tuple[Box, np.ndarray]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)  # per face, as `faces`
    landmarks: list[np.ndarray | None] = field(default_factory=list)  # per face: (5, 2), None for whole images


@dataclass
class PreparedImage:
    """One image decoded and its regions found, ready to embed (the backend's regions: faces or the whole image)."""

    path: str
    error: str | None
    regions: list[Region] = field(default_factory=list)


@dataclass
class PipelineStats:
    """Where the time went. decode/detect are summed over workers; wait is the embedder idle for them."""

    workers: int = 0
    images: int = 0
    faces: int = 0
    decode_s: float = 0.0
    detect_s: float = 0.0  # detection and cropping
    embed_s: float = 0.0
    wait_s: float = 0.0
    start_s: float = 0.0  # starting the workers (or the Ray actors) until the first chunk is back
    total_s: float = 0.0

    def to_dict(self) -> dict:
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in asdict(self).items()}

    def summary(self) -> str:
        return (
            f"{self.images} images, {self.faces} faces, workers {self.workers}: decode {self.decode_s:.1f} s, "
            f"detect {self.detect_s:.1f} s (CPU time summed over workers), embed {self.embed_s:.1f} s, "
            f"waiting for workers {self.wait_s:.1f} s (first chunk after {self.start_s:.1f} s), total {self.total_s:.1f} s"
        )


class Preparer:
    """Decode and find the regions to embed with the engine's settings: the same code in a worker, a Ray actor
    or in-process."""

    def __init__(self, settings: EngineSettings, backend: ModelBackend):
        self.settings = settings
        self.backend = backend

    def load(self) -> None:
        self.backend.load_regions()

    def prepare(self, chunk: Sequence[tuple[str, str | Path | bytes]]) -> tuple[list[PreparedImage], float, float]:
        """One chunk → (prepared images in order, decode seconds, detect seconds). Decoded photos are held only until
        DECODED_PIXELS of them are (a chunk of 24 Mpx photos decoded at once was 16 × 72 MB): then their regions are
        found and the photos dropped."""
        prepared: list[PreparedImage] = []
        group: list[tuple[PreparedImage, np.ndarray]] = []
        decode_s = detect_s = 0.0
        for number, (relative, path) in enumerate(chunk):
            started = time.perf_counter()
            try:
                group.append((PreparedImage(relative, None), self.read(relative, path)))
                prepared.append(group[-1][0])
            except BadInputError as error:
                prepared.append(PreparedImage(relative, str(error)))
            decode_s += time.perf_counter() - started
            if group and (number == len(chunk) - 1 or sum(image.size // 3 for _, image in group) >= DECODED_PIXELS):
                started = time.perf_counter()
                items = [item for item, _ in group]
                for item, regions in zip(items, self.backend.gallery_regions([image for _, image in group])):
                    item.regions = regions
                group = []  # the decoded photos go now, not when the next one is decoded beside them
                detect_s += time.perf_counter() - started
        return prepared, decode_s, detect_s

    def read(self, relative: str, path: str | Path | bytes) -> np.ndarray:
        """`path` may also be the file's bytes (Ray shards shipped by the driver)."""
        s = self.settings
        if isinstance(path, bytes):
            return decode_image(path, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, name=relative)
        return read_image(Path(path), max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, name=relative)


def embed_prepared(backend: ModelBackend, prepared: list[PreparedImage]) -> list[EmbeddedImage]:
    """Embed every region of `prepared` in one call (split into the network's batches)."""
    vectors = backend.embed([region for item in prepared for region in item.regions], query=False)
    return_freed_memory()  # FaceNet's activations, freed in blocks under the mmap threshold: back to the system
    results, position = [], 0
    for item in prepared:
        faces = []
        for region in item.regions:
            faces.append((region.box, vectors[position]))
            position += 1
        confidences = [region.confidence for region in item.regions]
        landmarks = [region.landmarks for region in item.regions]
        results.append(EmbeddedImage(item.path, item.error, faces, confidences, landmarks))
    return results


# ---- worker processes ------------------------------------------------------------------------

_WORKER: Preparer | None = None


def limit_tensorflow(threads: int, *, hide_gpus: bool) -> None:
    """A fresh process's TensorFlow: `threads` threads per op pool, optionally no GPU. Before any TF op."""
    tf = import_quietly("tensorflow")

    try:
        if hide_gpus:
            tf.config.set_visible_devices([], "GPU")
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised (not in a fresh process): keep its settings
        pass


def _init_worker(settings: EngineSettings, model: str, threads: int) -> None:
    """Runs once per worker process: CPU only, its share of the cores, MTCNN loaded."""
    global _WORKER
    limit_heap_retention(settings.heap_mmap_threshold_mb)
    backend = BACKENDS[model](settings)
    if backend.runtime == "onnx":
        backend.session_threads = threads  # type: ignore[attr-defined]  # ONNX Runtime: TensorFlow is never imported here
    else:
        limit_tensorflow(threads, hide_gpus=True)  # the GPU is the embedder's; TF would reserve its memory
    _WORKER = Preparer(settings, backend)
    _WORKER.load()


def _prepare_in_worker(chunk: list[tuple[str, Path]]) -> tuple[list[PreparedImage], float, float]:
    if _WORKER is None:
        raise RuntimeError("the worker process was not initialised")
    return _WORKER.prepare(chunk)


class _OnThisThread(Executor):
    """An executor that runs each call when it is submitted (a finished Future, or one holding its error)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # handed to whoever reads the result, as a pool's future would
            future.set_exception(error)
        return future


class IndexPipeline:
    """Prepared chunks from workers (or prepared on this thread), embedded here, yielded in input order."""

    def __init__(
        self,
        settings: EngineSettings,
        backend: ModelBackend,
        *,
        workers: int | None = None,
        device: DeviceInfo | None = None,
    ):
        self.settings = settings
        self.backend = backend
        # Chosen workers are used as given; the default is skipped for small runs (see MIN_IMAGES_FOR_WORKERS).
        self.explicit_workers = workers is not None or settings.index_workers is not None
        if workers is None:
            workers = settings.index_workers if settings.index_workers is not None else default_index_workers()
        self.workers = workers
        self.device = device
        self.stats = PipelineStats()

    def run(self, items: list[tuple[str, Path]]) -> Iterator[list[EmbeddedImage]]:
        """Yield each chunk's results in input order. Closing the generator early stops the workers."""
        started = time.perf_counter()
        size = self.settings.detect_batch_size
        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        workers = min(self.workers, len(chunks))
        if not self.explicit_workers and len(items) < MIN_IMAGES_FOR_WORKERS:
            workers = 0
        self.stats = PipelineStats(workers=workers)
        if not chunks:
            return
        self.backend.require()
        if workers == 0:
            # In-process, a chunk is prepared and then embedded, on this thread: a prefetch thread overlapping the two
            # gained 6% on 2 cores (both runtimes already use both) and added FaceNet's batch to detection's peak.
            preparer = Preparer(self.settings, self.backend)
            preparer.load()
            executor: Executor = _OnThisThread()
            submit, ahead = (lambda chunk: executor.submit(preparer.prepare, chunk)), 1
        else:
            threads = max(1, cpu_cores() // workers)
            executor = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.settings, self.backend.name, threads),
            )
            submit, ahead = (lambda chunk: executor.submit(_prepare_in_worker, chunk)), 2 * workers
        # On a GPU, chunks already prepared are embedded together, up to the device's batch size.
        group_faces = self.device.embed_batch_size if self.device is not None and self.device.is_gpu else 0
        try:
            pending: deque[Future] = deque()
            queued = iter(chunks)
            for chunk in queued:
                pending.append(submit(chunk))
                if len(pending) >= ahead:
                    break
            first = True
            while pending:
                waited = time.perf_counter()
                group = [self._result(pending.popleft())]
                while group_faces and pending and pending[0].done() and _faces(group) < group_faces:
                    group.append(self._result(pending.popleft()))
                if first:
                    self.stats.start_s = time.perf_counter() - started
                    first = False
                else:
                    self.stats.wait_s += time.perf_counter() - waited
                for chunk in queued:  # refill before embedding, so the workers stay busy meanwhile
                    pending.append(submit(chunk))
                    if len(pending) >= ahead:
                        break
                prepared = [item for part in group for item in part]
                embedding = time.perf_counter()
                with device_scope(self.device):
                    results = embed_prepared(self.backend, prepared)
                self.stats.embed_s += time.perf_counter() - embedding
                self.stats.images += len(results)
                self.stats.faces += sum(len(result.faces) for result in results)
                yield results
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            self.stats.total_s = time.perf_counter() - started

    def _result(self, future: Future) -> list[PreparedImage]:
        try:
            prepared, decode_s, detect_s = future.result()
        except BrokenProcessPool as error:
            raise EngineError(
                "a detection worker process failed to start or died (out of memory? see the log above); "
                f"index with fewer workers, e.g. INDEX_WORKERS=1 or 0 ({error})"
            ) from error
        self.stats.decode_s += decode_s
        self.stats.detect_s += detect_s
        return prepared


def _faces(group: list[list[PreparedImage]]) -> int:
    return sum(len(item.regions) for part in group for item in part)
