"""Which device embeds: a CUDA GPU seen by TensorFlow, or the CPU (and how many cores), with batch sizes for it.

TensorFlow places FaceNet/VGG16 on the first GPU by itself when it sees one; MTCNN is pinned to the CPU
(`engine.models.mtcnn`). What this module adds: one probe that says which device it will be, runs one tiny op
there so a broken CUDA install is found before indexing starts (not mid-way), turns GPU memory
pre-allocation off (the bot and the indexer share the card), and logs one clear line when it falls back
to the CPU. The probe never raises: no GPU, a CPU-only TensorFlow or a broken driver all give the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from engine.runtime.quiet import filtered_stderr, import_quietly

log = logging.getLogger(__name__)

GPU_EMBED_BATCH = 256  # H200, Keras 3 FaceNet: 4,346 faces/s at 32, 5,979 at 1,024; 256 is near the top
GPU_INSTALL_HINT = "pip install '.[gpu]' (or make setup GPU=1) adds onnxruntime-gpu and TensorFlow with CUDA"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, so containers and `taskset` are respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class DeviceInfo:
    """The device that embeds, as the CLI, the bot's /stats and the index summary show it."""

    kind: str  # "gpu" or "cpu"
    name: str  # "NVIDIA H200" / "CPU"
    cores: int  # CPU cores available (detection runs there either way)
    embed_batch_size: int  # faces per FaceNet batch on this device
    reason: str = ""  # why the CPU, when a GPU was possible or asked for
    runtime: str = "keras"  # what runs the networks: "keras" (TensorFlow) or "onnx" (ONNX Runtime)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    @property
    def tf_device(self) -> str:
        return "/GPU:0" if self.is_gpu else "/CPU:0"

    def describe(self) -> str:
        on = " on ONNX Runtime" if self.runtime == "onnx" else ""
        if self.is_gpu:
            return f"GPU ({self.name}), embedding batches of {self.embed_batch_size}; detection on {self.cores} CPU cores{on}"
        return f"CPU ({self.cores} cores), embedding batches of {self.embed_batch_size}{on}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "name": self.name, "cores": self.cores, "embed_batch_size": self.embed_batch_size,
            "runtime": self.runtime,
        }  # fmt: skip


MAX_DEFAULT_WORKERS = 8  # each worker holds TensorFlow and MTCNN (~0.6 GB resident, measured)


def default_index_workers(cores: int | None = None) -> int:
    """Worker processes for decoding and detection when INDEX_WORKERS is not set: one per core, at most 8.

    Up to 2 cores: 0 (in-process). Measured on 2 cores, LFW (benchmarks/bench_index.py): 2 workers gave
    0.92-1.05x the in-process images/s, as CPU embedding already keeps both cores busy; workers pay off
    where detection is the bottleneck: more cores, or embedding on a GPU.
    """
    cores = cpu_cores() if cores is None else cores
    return 0 if cores <= 2 else min(cores, MAX_DEFAULT_WORKERS)


def probe_device(preference: str = "auto", cpu_batch_size: int = 32, runtime: str = "keras") -> DeviceInfo:
    """The embedding device for `preference` ("auto", "gpu" or "cpu"); falls back to the CPU, never raises.

    `runtime="onnx"` asks ONNX Runtime instead of TensorFlow (which it never imports).
    """
    cores = cpu_cores()
    cpu = DeviceInfo(kind="cpu", name="CPU", cores=cores, embed_batch_size=cpu_batch_size)
    if runtime == "onnx":
        return _probe_onnx(cpu, preference)
    if preference == "cpu":
        _hide_gpus()
        return cpu
    try:
        tf = import_quietly("tensorflow")
        with filtered_stderr():  # "failed call to cuInit" on a machine without a GPU
            gpus = tf.config.list_physical_devices("GPU")
            built_with_cuda = tf.test.is_built_with_cuda()
    except Exception as error:  # a TensorFlow that cannot even list devices: CPU
        return _fallback(cpu, f"TensorFlow could not list GPUs ({error.__class__.__name__}: {error})", preference)
    if not gpus:
        if built_with_cuda:
            reason = "TensorFlow has CUDA support but sees no GPU (no card, or the NVIDIA driver/CUDA libraries failed to load)"
        else:
            reason = f"this TensorFlow is CPU-only; {GPU_INSTALL_HINT}"
        # No card at all is the usual CPU machine: said at INFO unless a GPU was asked for (DEVICE=gpu).
        return _fallback(cpu, reason, preference, quiet=preference == "auto")
    try:
        with contextlib.suppress(RuntimeError, ValueError):  # already initialised: too late, harmless
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
        with tf.device("/GPU:0"):
            value = float(tf.reduce_sum(tf.matmul(tf.ones((8, 8)), tf.ones((8, 8)))))
        if value != 512.0:
            raise RuntimeError(f"a test matrix product on the GPU gave {value}, not 512")
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name") or gpus[0].name
    except Exception as error:  # broken CUDA/cuDNN install: a clear line, then the CPU
        _hide_gpus()
        return _fallback(cpu, f"the GPU failed a test operation ({error.__class__.__name__}: {error})", preference)
    return DeviceInfo(kind="gpu", name=str(name), cores=cores, embed_batch_size=max(cpu_batch_size, GPU_EMBED_BATCH))


def _probe_onnx(cpu: DeviceInfo, preference: str) -> DeviceInfo:
    """ONNX Runtime's device: CUDA when onnxruntime-gpu offers its execution provider (the `gpu` extra), else the CPU."""
    cpu = DeviceInfo(kind="cpu", name=cpu.name, cores=cpu.cores, embed_batch_size=cpu.embed_batch_size, runtime="onnx")
    if preference == "cpu":
        return cpu
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except Exception as error:  # not installed or broken: the backend says so when it loads
        return _fallback(cpu, f"ONNX Runtime is unavailable ({error.__class__.__name__}: {error})", preference)
    if "CUDAExecutionProvider" not in providers:
        reason = "this ONNX Runtime has no CUDA execution provider; pip install '.[gpu]' adds onnxruntime-gpu"
        return _fallback(cpu, reason, preference, quiet=preference == "auto")
    return DeviceInfo(
        kind="gpu", name="CUDA (ONNX Runtime)", cores=cpu.cores,
        embed_batch_size=max(cpu.embed_batch_size, GPU_EMBED_BATCH), runtime="onnx",
    )  # fmt: skip


def _fallback(cpu: DeviceInfo, reason: str, preference: str, quiet: bool = False) -> DeviceInfo:
    level = logging.INFO if quiet else logging.WARNING
    log.log(level, "embedding on the CPU (%d cores): %s", cpu.cores, reason)
    return DeviceInfo(
        kind="cpu", name=cpu.name, cores=cpu.cores, embed_batch_size=cpu.embed_batch_size, reason=reason,
        runtime=cpu.runtime,
    )  # fmt: skip


def _hide_gpus() -> None:
    """Keep TensorFlow off the GPUs (DEVICE=cpu, a failed probe, detection workers). Best effort."""
    try:
        tf = import_quietly("tensorflow")

        tf.config.set_visible_devices([], "GPU")
    except Exception:  # the runtime is already initialised; ops are then placed by `tf_device` scopes
        pass


def device_scope(device: DeviceInfo | None) -> contextlib.AbstractContextManager[Any]:
    """A TensorFlow device scope for embedding on `device` (a no-op scope when None or on ONNX Runtime)."""
    if device is None or device.runtime == "onnx":
        return contextlib.nullcontext()
    tf = import_quietly("tensorflow")

    return tf.device(device.tf_device)
