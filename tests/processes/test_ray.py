"""Indexing on Ray: `python -m engine index --ray local` (a real local Ray cluster, started once for the module)
gives the same index as the single-process run; a cluster that does not answer is a clear error, exit 2.

The local cluster is kept small for a shared 2-core machine: RAY_NUM_CPUS=2 actors, a 256 MB object store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="Ray is in the dev and distributed extras: pip install -e '.[dev]'")
pytestmark = pytest.mark.ray

from support.helpers_engine import REPO_ROOT  # noqa: E402


@pytest.fixture(scope="module")
def ray_run(indexed_engine, tmp_path_factory):
    """The whole sample gallery indexed with --ray local in a subprocess (its own Ray cluster, shut down after)."""
    root = tmp_path_factory.mktemp("ray")
    settings = indexed_engine.settings
    env = {k: v for k, v in os.environ.items() if k.lower() not in settings.model_fields}
    env.update(
        DATA_DIR=str(root / "data"), MODELS_DIR=str(settings.models_dir), TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(REPO_ROOT), RAY_NUM_CPUS="2", RAY_OBJECT_STORE_MB="256",
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "engine", "index", "--gallery", str(settings.resolved_gallery()), "--ray", "local"],
        env=env, capture_output=True, text=True, timeout=600, cwd=root,
    )  # fmt: skip
    return done, root / "data" / "index" / "facenet"


def test_ray_local_gives_the_single_process_index(ray_run, indexed_engine, sample_index):
    done, index_dir = ray_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{sample_index.images} images in" in done.stdout
    assert f"{sample_index.faces_indexed} faces indexed" in done.stdout
    assert "Ray cluster local;" in done.stdout and "workers 2: decode" in done.stdout
    from engine.stores.local import LocalStore
    from support.store_compare import assert_same_store

    assert_same_store(indexed_engine.searcher("facenet").store, LocalStore(index_dir))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (f"127.0.0.1:{free_port()}", "does not answer"),
        ("no-port-here", "is not 'local', 'auto', host:port or ray://host:port"),
    ],
)
def test_a_cluster_that_does_not_answer_exits_2_quickly(
    indexed_engine, tmp_path, monkeypatch, capsys, address, message
):
    import time

    from engine.__main__ import main

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MODELS_DIR", str(indexed_engine.settings.models_dir))
    started = time.perf_counter()
    assert main(["index", "--gallery", str(indexed_engine.settings.resolved_gallery()), "--ray", address]) == 2
    assert time.perf_counter() - started < 10
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert address in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "index").exists()
