"""The ONNX runtime against the keras one on real photos, without TensorFlow in its processes, and its bad input.

The graphs are the ones `python -m engine models fetch` (make test runs it) wrote into models/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import Engine, EngineSettings
from engine.errors import ModelUnavailableError
from engine.images import list_gallery_images, read_image
from engine.runtime.onnx import FACENET_GRAPH, MANIFEST, MTCNN_GRAPHS, resolve_runtime
from support.helpers_engine import (
    CLEAR_FACES,
    FACENET_WEIGHTS,
    JERRY,
    MODELS_DIR,
    assert_same_vectors,
    fresh_env,
    person_of,
    sample,
)  # fmt: skip

GRAPHS = (FACENET_GRAPH, *MTCNN_GRAPHS.values())


def box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    width = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    height = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = width * height
    return inter / (aw * ah + bw * bh - inter)


def test_the_session_engine_runs_on_onnx(facenet_engine, keras_engine):
    """make test fetched the graphs, so the default (auto) runtime is onnx; the keras engine is what it is asked to be."""
    assert facenet_engine.settings.engine_runtime == "auto"
    assert facenet_engine.backends["facenet"].runtime == "onnx"
    assert facenet_engine.device.runtime == "onnx" and "ONNX Runtime" in facenet_engine.device.describe()
    assert keras_engine.backends["facenet"].runtime == "keras" and keras_engine.device.runtime == "keras"


def test_same_faces_as_the_mtcnn_package_on_every_sample_photo(facenet_engine, keras_engine, sample_gallery):
    """The whole detector (scaling, retry passes, fallback) on each runtime: the same faces, boxes within a pixel."""
    onnx_detector = facenet_engine.backends["facenet"].detector
    keras_detector = keras_engine.backends["facenet"].detector
    photos = list_gallery_images(sample_gallery)
    worst_iou, worst_pixels, faces = 1.0, 0, 0
    for path in photos:
        image = read_image(path, max_bytes=10**8, max_pixels=10**8)
        [got], [want] = onnx_detector.detect([image]), keras_detector.detect([image])
        assert len(got) == len(want), path
        for a, b in zip(got, want, strict=True):
            worst_iou = min(worst_iou, box_iou(a.box, b.box))
            worst_pixels = max(worst_pixels, max(abs(x - y) for x, y in zip(a.box, b.box, strict=True)))
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1.0, err_msg=str(path))
            assert abs(a.confidence - b.confidence) < 1e-3, path
            faces += 1
    assert faces >= len(photos)  # every sample photo has its face
    assert worst_pixels <= 1 and worst_iou >= 0.97, (worst_pixels, worst_iou)


def test_facenet_vectors_agree_with_keras_on_real_crops(facenet_engine, keras_engine):
    """The same crops through both networks, plain and mirror-averaged: cosine >= 0.99999."""
    backend = keras_engine.backends["facenet"]
    crops = []
    for relative in CLEAR_FACES.values():
        image = read_image(sample(relative), max_bytes=10**8, max_pixels=10**8)
        crops.extend(backend.crop(image, face).pixels for face in backend.detector.detect([image])[0])
    crops = np.stack(crops)
    for flip in (False, True):
        got = facenet_engine.backends["facenet"].network.embed(crops, flip=flip)
        want = backend.network.embed(crops, flip=flip)
        assert_same_vectors(got, want, what=f"flip={flip}")


def test_an_index_built_on_one_runtime_is_searched_on_the_other(indexed_engine, keras_engine, tmp_path):
    """The documented rule: one fingerprint for both runtimes (the Keras weights' sha256), same top-1 answers."""
    onnx_backend, keras_backend = indexed_engine.backends["facenet"], keras_engine.backends["facenet"]
    assert onnx_backend.fingerprint() == keras_backend.fingerprint()
    assert (
        onnx_backend.weights_sha256()
        == keras_backend.weights_sha256()
        == json.loads((MODELS_DIR / MANIFEST).read_text())["sources"][FACENET_WEIGHTS.name]
    )
    # the keras engine searches the index the onnx engine built (same DATA_DIR)
    assert keras_engine.settings.data_dir == indexed_engine.settings.data_dir
    keras_engine.refresh()  # its store was opened before the session index was built
    for relative in CLEAR_FACES.values():
        on_onnx = indexed_engine.search_path(sample(relative), k=3)
        on_keras = keras_engine.search_path(sample(relative), k=3)
        assert [m.path for m in on_onnx.faces[0].matches] == [m.path for m in on_keras.faces[0].matches], relative


def test_auto_is_keras_without_the_manifest(tmp_path):
    (tmp_path / FACENET_WEIGHTS.name).symlink_to(FACENET_WEIGHTS)
    assert resolve_runtime("auto", tmp_path) == "keras"
    assert resolve_runtime("auto", MODELS_DIR) == "onnx"
    assert resolve_runtime("keras", MODELS_DIR) == "keras"
    assert resolve_runtime("onnx", tmp_path) == "onnx"  # asked for: then its problem is said, never a fall-back
    engine = Engine(EngineSettings(data_dir=tmp_path / "data", models_dir=tmp_path, engine_runtime="onnx"))
    problem = engine.model_problem("facenet")
    assert str(tmp_path / MANIFEST) in problem and "python -m engine models fetch" in problem
    with pytest.raises(ModelUnavailableError, match="python -m engine models fetch"):
        engine.load("facenet")


# ---- real processes ------------------------------------------------------------------------------
def _models_copy(root: Path) -> Path:
    """A MODELS_DIR with links to the real weights and graphs and a copy of the manifest."""
    models = root / "models"
    models.mkdir()
    for name in (FACENET_WEIGHTS.name, *GRAPHS):
        (models / name).symlink_to(MODELS_DIR / name)
    shutil.copyfile(MODELS_DIR / MANIFEST, models / MANIFEST)
    return models


# the last line a fresh process prints: which of the heavy frameworks it imported
PRINT_LOADED = (
    "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'tf_keras', 'mtcnn'}))"
)
REPORT_MODULES = (
    f"import sys; from engine.__main__ import main; code = main(sys.argv[1:]); {PRINT_LOADED}; sys.exit(code)"
)


def _python(
    code: str, models: Path, data: Path, runtime: str, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """`code` in a fresh Python with only these engine settings in its environment (cwd: beside `data`)."""
    env = fresh_env(MODELS_DIR=str(models), DATA_DIR=str(data), ENGINE_RUNTIME=runtime)
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, env=env, cwd=data.parent, capture_output=True, text=True, timeout=600)


def _engine_process(
    args: list[str], models: Path, data: Path, runtime: str, prelude: str = ""
) -> subprocess.CompletedProcess:
    return _python(prelude + REPORT_MODULES, models, data, runtime, tuple(args))


@pytest.fixture(scope="module")
def cli_data(indexed_engine, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("onnx-cli") / "data"
    shutil.copytree(indexed_engine.settings.index_dir("facenet"), data / "index" / "facenet")
    return data


def test_search_on_onnx_never_imports_tensorflow(cli_data, tmp_path):
    models = _models_copy(tmp_path)
    run = _engine_process(["search", str(sample(JERRY)), "--json"], models, cli_data, "onnx")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "LOADED []"
    answer = json.loads(run.stdout.splitlines()[0])
    assert answer["faces"][0]["matches"][0]["name"] == person_of(JERRY)


def test_the_bot_on_onnx_never_imports_tensorflow(indexed_engine, tmp_path):
    """The bot's modules and its engine's warm-up and first answer, in a fresh process on the onnx runtime."""
    models = _models_copy(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(indexed_engine.settings.index_dir("facenet"), data / "index" / "facenet")
    script = (
        "import sys, bot, bot.app, bot.handlers; from engine import Engine, EngineSettings; "
        "engine = Engine(EngineSettings()); engine.warm_up('facenet'); "
        f"result = engine.search_bytes(open({str(sample(JERRY))!r}, 'rb').read()); "
        "print('TOP', result.faces[0].matches[0].name); "
        f"{PRINT_LOADED}"
    )
    run = _python(script, models, data, "onnx")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-2:] == [f"TOP {person_of(JERRY)}", "LOADED []"]


def test_a_ray_actor_on_onnx_takes_onnx_runtime_s_device_report_without_tensorflow(tmp_path):
    """A Ray actor's body (engine.indexing.distributed.ShardWorker, a plain class: no cluster needed) in a fresh process on the
    onnx runtime: the device comes from ONNX Runtime, a shard is embedded, and TensorFlow is never imported."""
    models = _models_copy(tmp_path)
    script = (
        "import sys; from engine import EngineSettings; from engine.indexing.distributed import ShardWorker; "
        "worker = ShardWorker(EngineSettings().model_dump(mode='json'), 'facenet', 1, False); "
        f"results, *_ = worker.process([('jerry.jpg', {str(sample(JERRY))!r})]); "
        "print('DEVICE', worker.device.runtime, worker.device.kind, len(results[0].faces)); "
        f"{PRINT_LOADED}"
    )
    run = _python(script, models, tmp_path / "data", "onnx")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-2:] == ["DEVICE onnx cpu 1", "LOADED []"]


def test_a_ray_node_without_models_dir_gets_the_graphs_and_embeds_the_same(tmp_path):
    """What RayPipeline sends a node without MODELS_DIR on the onnx runtime (the backend's `model_files`: the
    manifest and the four graphs, no Keras file): the actor writes them to a folder of its own and embeds the same
    vector as a node with MODELS_DIR, still without TensorFlow."""
    models = _models_copy(tmp_path)
    empty = tmp_path / "no-models"
    empty.mkdir()
    script = (
        "import sys, numpy as np; from engine import EngineSettings; from engine.backends import BACKENDS; "
        "from engine.indexing.distributed import ShardWorker; "
        f"full = EngineSettings(models_dir={str(models)!r}); "
        "files = {p.name: p.read_bytes() for p in BACKENDS['facenet'](full).model_files()}; "
        "print('FILES', sorted(files)); "
        "bare = EngineSettings().model_dump(mode='json'); "
        f"shard = [('jerry.jpg', {str(sample(JERRY))!r})]; "
        "node = ShardWorker(bare, 'facenet', 1, False, files); "
        "driver = ShardWorker(full.model_dump(mode='json'), 'facenet', 1, False); "
        "a = node.process(shard)[0][0].faces[0][1]; b = driver.process(shard)[0][0].faces[0][1]; "
        "print('MODELS', node.settings.models_dir != full.models_dir, node.device.runtime); "
        "print('COSINE', float(np.dot(a, b)) >= 0.99999); "
        f"{PRINT_LOADED}"
    )
    run = _python(script, empty, tmp_path / "data", "onnx")
    assert run.returncode == 0, run.stderr
    files = "FILES ['facenet.onnx', 'mtcnn_onet.onnx', 'mtcnn_pnet.onnx', 'mtcnn_rnet.onnx', 'onnx.json']"
    assert run.stdout.splitlines()[-4:] == [files, "MODELS True onnx", "COSINE True", "LOADED []"]
    assert list(empty.iterdir()) == []  # the node's own MODELS_DIR is left alone


@pytest.mark.parametrize("damage", ["missing", "truncated", "foreign", "manifest missing"])
def test_a_bad_graph_is_an_error_naming_it_and_the_fetch_command(cli_data, tmp_path, damage):
    """Never a silent fall-back to other vectors: exit 2, the file and `models fetch` in the message."""
    models = _models_copy(tmp_path)
    graph = models / FACENET_GRAPH
    graph.unlink()
    named = graph
    if damage == "truncated":
        graph.write_bytes((MODELS_DIR / FACENET_GRAPH).read_bytes()[:1_000_000])
    elif damage == "foreign":  # a valid graph of other weights
        shutil.copyfile(MODELS_DIR / MTCNN_GRAPHS["onet"], graph)
    elif damage == "manifest missing":
        graph.symlink_to(MODELS_DIR / FACENET_GRAPH)
        (models / MANIFEST).unlink()
        named = models / MANIFEST
    run = _engine_process(["search", str(sample(JERRY))], models, cli_data, "onnx")
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert str(named) in run.stderr and "python -m engine models fetch" in run.stderr, run.stderr


@pytest.mark.slow
def test_onnx_without_onnxruntime_is_a_clear_error(cli_data, tmp_path):
    models = _models_copy(tmp_path)
    block = "import sys; sys.modules['onnxruntime'] = None; "  # what an environment without the package sees
    run = _engine_process(["search", str(sample(JERRY))], models, cli_data, "onnx", prelude=block)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "onnxruntime" in run.stderr and "pip install onnxruntime" in run.stderr, run.stderr
    # auto without onnxruntime: the keras runtime, answering as before
    run = _engine_process(["search", str(sample(JERRY)), "--json"], models, cli_data, "auto", prelude=block)
    assert run.returncode == 0, run.stderr
    assert "tensorflow" in run.stdout.splitlines()[-1]
