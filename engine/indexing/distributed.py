"""Bulk indexing on Ray: the gallery split into shards, each decoded, detected and embedded by a Ray actor.

`RayPipeline(settings, model, address).run(items)` yields the same `EmbeddedImage` lists as
`engine.indexing.pipeline.IndexPipeline`, one per shard, in input order; the caller writes them into the store.
"local" starts a Ray cluster in this machine (`INDEX_RAY=local`, `--ray local`), sized by RAY_NUM_CPUS and
RAY_OBJECT_STORE_MB; any other value joins an existing cluster (`host:port`, `ray://host:10001`, `auto`).
Each actor loads MTCNN and the embedder once; with GPUs in the cluster one actor per GPU embeds there
(`num_gpus=1`), CPU actors take the other cores, and Ray's actor pool hands each shard to whichever is free.

Actors read the gallery files by the driver's absolute paths (a shared filesystem mounted at the same
path on every node), or, with RAY_SHIP_IMAGES=true, get each file's bytes from the driver (a gallery
only the driver can read, e.g. an object-storage mount). The engine package travels to the cluster as a
Ray `py_modules` runtime environment; its dependencies must be installed on the nodes.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.backends import BACKENDS
from engine.errors import ClusterUnavailableError
from engine.indexing.pipeline import EmbeddedImage, PipelineStats, Preparer, embed_prepared, limit_tensorflow
from engine.runtime.device import cpu_cores, device_scope, probe_device
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
ENGINE_PACKAGE = Path(__file__).resolve().parents[1]  # the `engine` folder, shipped to the nodes as a py_module


class ShardWorker:
    """Ray actor body: one detector and one embedder, loaded once, for every shard it is given."""

    def __init__(self, settings: dict, model: str, threads: int, gpu: bool, files: dict[str, bytes] | None = None):
        self.settings = EngineSettings(**settings)
        models_dir = self.settings.models_dir
        if files and not all((models_dir / name).is_file() for name in files):  # a node without MODELS_DIR
            import tempfile

            models_dir = Path(tempfile.mkdtemp(prefix="facesearch-models-"))
            for name, data in files.items():
                (models_dir / name).write_bytes(data)
            self.settings = EngineSettings(**{**settings, "models_dir": models_dir})
        # ONNX Runtime reports its own device and never imports TensorFlow; TensorFlow is limited before its first op
        runtime = BACKENDS[model](self.settings).runtime
        if runtime != "onnx":
            limit_tensorflow(threads, hide_gpus=not gpu)
        self.device = probe_device("auto" if gpu else "cpu", self.settings.embed_batch_size, runtime=runtime)
        # No XLA: its query-sized graphs compile for seconds and indexing batches do not use them.
        self.settings = self.settings.model_copy(
            update={"embed_batch_size": self.device.embed_batch_size, "xla": False}
        )
        self.backend = BACKENDS[model](self.settings)
        if runtime == "onnx":
            self.backend.session_threads = threads  # type: ignore[attr-defined]  # its share of the cores, as in workers
        self.backend.require()
        self.preparer = Preparer(self.settings, self.backend)

    def describe(self) -> str:
        return f"{socket.gethostname()}: {self.device.describe()}"

    def process(self, shard: list[tuple[str, str | bytes]]) -> tuple[list[EmbeddedImage], float, float, float]:
        """(results in shard order, decode s, detect s, embed s)."""
        prepared, decode_s, detect_s = self.preparer.prepare(shard)
        started = time.perf_counter()
        with device_scope(self.device):
            results = embed_prepared(self.backend, prepared)
        return results, decode_s, detect_s, time.perf_counter() - started


def connect(settings: EngineSettings, address: str) -> Any:
    """Start ("local") or join a Ray cluster; a cluster that does not answer raises ClusterUnavailableError."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from indexing runs
    try:
        import ray
    except ImportError as error:
        raise ClusterUnavailableError(
            "Ray is not installed; install the distributed extra: pip install '.[distributed]'"
        ) from error
    if ray.is_initialized():  # the caller's own ray.init(): use it, leave it running
        return ray
    runtime_env = {"py_modules": [str(ENGINE_PACKAGE)]}
    # two explicit calls rather than ray.init(**kwargs): a dict of mixed values cannot be type-checked
    if address == "local":
        num_cpus = settings.ray_num_cpus or cpu_cores()
        object_store_memory = settings.ray_object_store_mb * 1024 * 1024
    else:
        check_reachable(address)
    try:
        if address == "local":
            ray.init(
                runtime_env=runtime_env,
                logging_level=logging.WARNING,
                log_to_driver=False,
                num_cpus=num_cpus,
                object_store_memory=object_store_memory,
                include_dashboard=False,
            )
        else:
            ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        raise ClusterUnavailableError(f"cannot start or join the Ray cluster {address!r}: {error}") from error
    return ray


def check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minute of retries, when host:port does not answer."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailableError(f"Ray address {address!r} is not 'local', 'auto', host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise ClusterUnavailableError(
            f"the Ray cluster at {address} does not answer ({error.strerror or error}); "
            "start one with `ray start --head`, or index with --ray local"
        ) from error


class RayPipeline:
    """Shards of DETECT_BATCH_SIZE images processed by Ray actors; results yielded in input order."""

    def __init__(self, settings: EngineSettings, model: str, address: str):
        self.settings = settings
        self.model = model  # a registry name: the actors build their own backend
        self.address = address
        self.stats = PipelineStats()
        self.actors_described: list[str] = []

    def run(self, items: list[tuple[str, Path]]) -> Iterator[list[EmbeddedImage]]:
        started = time.perf_counter()
        size = self.settings.detect_batch_size
        shards = [items[start : start + size] for start in range(0, len(items), size)]
        self.stats = PipelineStats()
        if not shards:
            return
        import ray as ray_module

        owned = not ray_module.is_initialized()
        ray = connect(self.settings, self.address)
        actors = []
        try:
            from ray.util import ActorPool

            resources = ray.cluster_resources()
            cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
            remote = ray.remote(ShardWorker)
            backend = BACKENDS[self.model](self.settings)
            # the driver's runtime, not each node's "auto": every actor embeds as the driver would
            settings = {**self.settings.model_dump(mode="json"), "engine_runtime": backend.runtime}
            files = None
            if self.address != "local":  # for nodes without MODELS_DIR: the files this runtime loads
                files = ray.put({path.name: path.read_bytes() for path in backend.model_files()})
            for _ in range(min(gpus, len(shards))):
                actors.append(remote.options(num_cpus=1, num_gpus=1).remote(settings, self.model, 1, True, files))
            for _ in range(min(max(0, cpus - len(actors)), len(shards) - len(actors))):
                actors.append(remote.options(num_cpus=1).remote(settings, self.model, 1, False, files))
            if not actors:  # a cluster with GPUs but no spare CPU: share one CPU
                actors.append(remote.options(num_cpus=0).remote(settings, self.model, 1, False, files))
            self.stats.workers = len(actors)
            self.actors_described = ray.get([actor.describe.remote() for actor in actors])
            log.info("Ray actors: %s", "; ".join(self.actors_described))
            ship = self.settings.ray_ship_images

            def submit(actor: Any, shard: list[tuple[str, Path]]) -> Any:
                payload = [(rel, Path(path).read_bytes() if ship else str(Path(path).resolve())) for rel, path in shard]
                return actor.process.remote(payload)

            pool = ActorPool(actors)
            waited = time.perf_counter()
            for number, (results, decode_s, detect_s, embed_s) in enumerate(pool.map(submit, shards)):
                if number == 0:
                    self.stats.start_s = time.perf_counter() - started
                else:
                    self.stats.wait_s += time.perf_counter() - waited
                self.stats.decode_s += decode_s
                self.stats.detect_s += detect_s
                self.stats.embed_s += embed_s
                self.stats.images += len(results)
                self.stats.faces += sum(len(result.faces) for result in results)
                yield results
                waited = time.perf_counter()
        except ray.exceptions.RayError as error:
            raise ClusterUnavailableError(f"indexing on the Ray cluster {self.address!r} failed: {error}") from error
        finally:
            for actor in actors:
                ray.kill(actor)
            if owned:
                ray.shutdown()
            self.stats.total_s = time.perf_counter() - started
