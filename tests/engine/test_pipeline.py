"""Parallel indexing (engine.indexing.pipeline) and the embedding device (engine.runtime.device), on real photos and real processes.

Worker processes are spawned for real (each imports TensorFlow and loads MTCNN: seconds), so the
worker runs happen once per module, in fixtures, and the tests compare what they produced.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.indexing.pipeline import IndexPipeline
from engine.runtime.device import DeviceInfo, cpu_cores, default_index_workers, probe_device
from support.helpers_engine import (
    CLOSE_UP,
    REPO_ROOT,
    assert_same_vectors,
    bad_image_files,
    copy_photos,
    first_photos,
    gradient_image,
)

PEOPLE = ("Ben_Afflek", "Elton_John", "Jerry_Seinfeld", "Madonna", "Mindy_Kaling")
PHOTOS = [relative for person in PEOPLE for relative in first_photos(person, 5)]  # 25 real photos
BROKEN = ("Ben_Afflek/truncated.jpg", "Madonna/text.jpg")
NO_FACE = "Elton_John/gradient.png"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """25 sample photos (one found only by the padded retry), two unreadable files and one image without a face."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pipeline-gallery")
    copy_photos(root, PHOTOS)
    files = bad_image_files()
    (root / BROKEN[0]).write_bytes(files["truncated.jpg"])
    (root / BROKEN[1]).write_bytes(files["text.jpg"])
    Image.fromarray(gradient_image()).save(root / NO_FACE)
    return root


@pytest.fixture(scope="module")
def items(gallery):
    from engine.images import list_gallery_images

    return [(path.relative_to(gallery).as_posix(), path) for path in list_gallery_images(gallery)]


def run_pipeline(engine, items, workers):
    pipeline = IndexPipeline(engine.settings, engine.backend("facenet"), workers=workers, device=engine.device)
    chunks = list(pipeline.run(items))
    return chunks, pipeline.stats


@pytest.fixture(scope="module")
def in_process(facenet_engine, items):
    return run_pipeline(facenet_engine, items, workers=0)


@pytest.fixture(scope="module")
def two_workers(facenet_engine, items):
    return run_pipeline(facenet_engine, items, workers=2)


def assert_same_results(expected, actual):
    assert [r.path for r in actual] == [r.path for r in expected]
    for want, got in zip(expected, actual):
        assert got.error == want.error, want.path
        assert [box for box, _ in got.faces] == [box for box, _ in want.faces], want.path
        for (_, want_vector), (_, got_vector) in zip(want.faces, got.faces):
            assert_same_vectors(got_vector, want_vector, what=want.path)


def test_worker_processes_give_the_in_process_results(in_process, two_workers, items):
    (expected_chunks, expected_stats), (chunks, stats) = in_process, two_workers
    assert (expected_stats.workers, stats.workers) == (0, 2)
    expected = [result for chunk in expected_chunks for result in chunk]
    results = [result for chunk in chunks for result in chunk]
    assert [r.path for r in results] == [relative for relative, _ in items]  # input order
    assert_same_results(expected, results)
    assert [len(chunk) for chunk in chunks] == [16, 12]  # DETECT_BATCH_SIZE images per chunk on the CPU
    assert stats.images == len(items) == 28
    assert stats.faces == expected_stats.faces == 25
    assert stats.detect_s > 0 and stats.embed_s > 0 and stats.total_s >= stats.embed_s


def test_broken_files_and_faceless_photos_are_reported_not_raised(two_workers):
    results = {r.path: r for chunk in two_workers[0] for r in chunk}
    assert results[BROKEN[0]].error.startswith(f"{BROKEN[0]}: the image is corrupt or truncated")
    assert results[BROKEN[1]].error.startswith(f"{BROKEN[1]}: not a readable image")
    assert results[NO_FACE].error is None and results[NO_FACE].faces == []
    assert CLOSE_UP in PHOTOS  # its face is found by the last, padded pass, in the worker processes too
    for relative in PHOTOS:
        ((box, vector),) = results[relative].faces  # one face: the most prominent (INDEX_ALL_FACES off)
        assert len(box) == 4 and all(isinstance(v, int) for v in box)
        assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-4


def test_closing_early_stops_the_workers(facenet_engine, items):
    pipeline = IndexPipeline(facenet_engine.settings, facenet_engine.backend("facenet"), workers=1)
    run = pipeline.run(items)
    first = next(run)
    assert len(first) == 16
    run.close()  # the pool is shut down in the generator's `finally`
    assert pipeline.stats.images == 16
    import multiprocessing

    assert multiprocessing.active_children() == []


def test_index_command_with_workers_gives_the_in_process_index(make_engine, gallery, items, tmp_path):
    """`python -m engine index --workers 2` in a real subprocess, against Engine.build_index in this process."""
    in_process = make_engine(data_dir=tmp_path / "in-process", gallery_dir=gallery, index_workers=0)
    report = in_process.build_index("facenet")
    assert "workers 0:" in report.pipeline
    assert (report.added, report.skipped, report.no_face, report.faces_indexed) == (26, 2, 1, 25)

    env = {k: v for k, v in os.environ.items() if k.lower() not in in_process.settings.model_fields}
    env.update(
        DATA_DIR=str(tmp_path / "workers"), MODELS_DIR=str(in_process.settings.models_dir), TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(REPO_ROOT),
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "engine", "index", "--gallery", str(gallery), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "28 images in" in done.stdout and "25 faces indexed, 1 without a face, 2 skipped" in done.stdout
    assert "images/s" in done.stdout
    assert "  CPU (" in done.stdout or "  GPU (" in done.stdout
    assert "workers 2: decode" in done.stdout

    from engine.stores.local import LocalStore
    from support.store_compare import assert_same_store

    assert_same_store(in_process.searcher("facenet").store, LocalStore(tmp_path / "workers" / "index" / "facenet"))


def test_small_runs_stay_in_process_unless_workers_are_chosen(engine_settings, items):
    from engine.backends import FaceNetBackend

    backend = FaceNetBackend(engine_settings)
    assert IndexPipeline(engine_settings, backend).explicit_workers is (engine_settings.index_workers is not None)
    chosen = IndexPipeline(engine_settings.model_copy(update={"index_workers": 3}), backend)
    assert (chosen.workers, chosen.explicit_workers) == (3, True)
    assert IndexPipeline(engine_settings, backend, workers=0).workers == 0


def test_default_workers_follow_the_cores():
    assert default_index_workers(1) == default_index_workers(2) == 0  # CPU embedding keeps 2 cores busy
    assert default_index_workers(4) == 4
    assert default_index_workers(8) == 8
    assert default_index_workers(64) == 8  # memory: TensorFlow and MTCNN in each
    assert default_index_workers() == default_index_workers(cpu_cores())
    assert cpu_cores() >= 1


# ---- device -----------------------------------------------------------------------------------


def tensorflow_gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def test_cpu_when_asked():
    device = probe_device("cpu", cpu_batch_size=32)
    assert device == DeviceInfo(kind="cpu", name="CPU", cores=cpu_cores(), embed_batch_size=32)
    assert device.describe() == f"CPU ({cpu_cores()} cores), embedding batches of 32"
    assert device.tf_device == "/CPU:0"


def test_asking_for_a_gpu_without_one_falls_back_to_the_cpu_with_a_log_line(caplog):
    caplog.set_level(logging.INFO, logger="engine.runtime.device")
    device = probe_device("gpu", cpu_batch_size=32)
    if tensorflow_gpus():  # a machine with a working CUDA TensorFlow
        assert device.is_gpu and device.embed_batch_size >= 256 and "GPU (" in device.describe()
        return
    assert device.kind == "cpu" and device.embed_batch_size == 32 and device.reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith(f"embedding on the CPU ({cpu_cores()} cores): ")
    import tensorflow as tf

    if not tf.test.is_built_with_cuda():
        assert "pip install '.[gpu]'" in warnings[0].getMessage()


def test_engine_reports_its_device(facenet_engine):
    device = facenet_engine.device
    assert device.kind == ("gpu" if tensorflow_gpus() and facenet_engine.settings.device != "cpu" else "cpu")
    assert facenet_engine.backend("facenet").network.batch_size == device.embed_batch_size
    assert device.to_dict()["cores"] == cpu_cores()


def test_shipped_bytes_prepare_like_paths(facenet_engine, items):
    """RAY_SHIP_IMAGES sends file bytes instead of paths: the same crops either way."""
    from engine.indexing.pipeline import Preparer

    preparer = Preparer(facenet_engine.settings, facenet_engine.backend("facenet"))
    chunk = items[:3] + [item for item in items if item[0] == BROKEN[0]]
    by_path, _, _ = preparer.prepare(chunk)
    by_bytes, _, _ = preparer.prepare([(relative, path.read_bytes()) for relative, path in chunk])
    assert [(p.path, p.error) for p in by_bytes] == [(p.path, p.error) for p in by_path]
    assert by_path[-1].error is not None
    for want, got in zip(by_path, by_bytes):
        assert [r.box for r in got.regions] == [r.box for r in want.regions]
        for a, b in zip(want.regions, got.regions):
            np.testing.assert_array_equal(a.pixels, b.pixels)
