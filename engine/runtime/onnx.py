"""ONNX Runtime sessions on verified graphs: the manifest, the session options, and which runtime ENGINE_RUNTIME picks.

Never imports TensorFlow or Keras. The networks that run on these sessions, with their pre- and post-processing,
are in engine/models/ (facenet_onnx.py, mtcnn_onnx.py).

`python -m engine models fetch` writes the graphs (engine/tools/export.py) and `models/onnx.json`, the
manifest: each graph's sha256 and the sha256 of the weights it was converted from and checked against.
A graph is only opened when its bytes match the manifest, so a truncated or replaced file is an error
naming it and the command that rewrites it, never a silent change of vectors.

ENGINE_RUNTIME: `keras`, `onnx`, or `auto` (the default): onnx when onnxruntime is installed and the
manifest is there, else keras. A manifest whose graphs are missing or damaged is an error under auto too.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelUnavailableError
from engine.images import file_sha256

MANIFEST = "onnx.json"
FACENET_GRAPH = "facenet.onnx"
MTCNN_GRAPHS = {"pnet": "mtcnn_pnet.onnx", "rnet": "mtcnn_rnet.onnx", "onet": "mtcnn_onet.onnx"}
FETCH_HINT = "rewrite it with: python -m engine models fetch"
# TensorFlow, Keras, mtcnn, h5py and tf2onnx: converting the weights (models fetch), the keras runtime, VGG16
CONVERT_INSTALL_HINT = "pip install '.[convert]' (make setup installs it)"
INSTALL_HINT = "pip install onnxruntime (it is in the project's dependencies), or set ENGINE_RUNTIME=keras"


# ---- which runtime ------------------------------------------------------------------------------
def manifest_path(models_dir: Path) -> Path:
    return Path(models_dir) / MANIFEST


def read_manifest(models_dir: Path) -> dict:
    """The manifest `models fetch` wrote (ModelUnavailableError when it is missing or unreadable)."""
    path = manifest_path(models_dir)
    try:
        manifest = json.loads(path.read_text())
        manifest["graphs"], manifest["sources"]  # both must be there
    except FileNotFoundError:
        raise ModelUnavailableError(f"the ONNX graphs' manifest {path} is missing; {FETCH_HINT}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelUnavailableError(f"the ONNX graphs' manifest {path} is unreadable ({error}); {FETCH_HINT}") from None
    return manifest


def onnxruntime_module() -> Any:
    """`onnxruntime`, imported (ModelUnavailableError saying how to install it when it is not)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ModelUnavailableError(
            f"ENGINE_RUNTIME=onnx needs the onnxruntime package ({error}); {INSTALL_HINT}"
        ) from None
    return onnxruntime


def resolve_runtime(choice: str, models_dir: Path) -> str:
    """ "onnx" or "keras" for ENGINE_RUNTIME=`choice` ("auto": onnx when onnxruntime and the manifest are there)."""
    if choice != "auto":
        return choice
    if not manifest_path(models_dir).is_file():
        return "keras"
    try:
        onnxruntime_module()
    except ModelUnavailableError:
        return "keras"
    return "onnx"


# ---- sessions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionConfig:
    """How sessions run: CPU threads per op, and whether FaceNet may use CUDA (`device` auto/gpu)."""

    threads: int
    device: str = "cpu"


def verified_graph(models_dir: Path, filename: str) -> Path:
    """A graph's path once its bytes match the manifest's sha256 (else ModelUnavailableError naming the file)."""
    path = Path(models_dir) / filename
    entry = read_manifest(models_dir)["graphs"].get(filename)
    if entry is None:
        raise ModelUnavailableError(f"{path} is not in the manifest {manifest_path(models_dir)}; {FETCH_HINT}")
    if not path.is_file():
        raise ModelUnavailableError(f"ONNX graph {path} is missing; {FETCH_HINT}")
    actual = file_sha256(path)
    if actual != entry["sha256"]:
        raise ModelUnavailableError(
            f"ONNX graph {path} is damaged or of other weights (sha256 {actual[:12]}…, "
            f"{path.stat().st_size} bytes; the manifest says {entry['sha256'][:12]}…, {entry.get('bytes')} bytes); {FETCH_HINT}"
        )
    return path


def return_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).

    Blocks under glibc's mmap threshold (which rises to 32 MB as photo-sized arrays are freed) stay in the
    process when freed: a process that had detected in three 24 Mpx photos kept 400 MB resident where 180 MB
    were live. Called after each detection batch, it keeps the heap's fast reuse during a photo (a low fixed mmap
    threshold cost 0.1-0.3 s a camera photo in page faults; limit_heap_retention fixes it at 16 MB by default)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def limit_heap_retention(mmap_threshold_mb: int) -> bool:
    """Once at the start of a long-running process (the bot, `python -m engine index`, an index worker): blocks of
    `mmap_threshold_mb` MB and more are mapped on their own and handed back to the system when freed (glibc's
    mallopt(M_MMAP_THRESHOLD); 0 leaves glibc's default). glibc otherwise raises the threshold to 32 MB as photo-sized
    arrays are freed, so a camera photo's decoded pixels and pyramid levels were kept in the heap: a process that
    indexed three 24 Mpx photos peaked at ~515 MB, ~450 MB with 16 MB (~420 MB with 4 MB, but twice the page faults:
    +0.3 s a camera photo). Smaller blocks keep the heap's fast reuse. True when it was set."""
    if _LIBC is None or mmap_threshold_mb <= 0:
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, mmap_threshold_mb * 2**20))


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def open_session(
    models_dir: Path, filename: str, config: SessionConfig, *, gpu: bool = False, arena: bool = True
) -> Any:
    """An ONNX Runtime session on a verified graph: `config.threads` intra-op threads, no spinning between runs
    (detection runs numpy between the networks' calls, on the same cores). Without `arena`, activations are freed
    after each run instead of kept in a pool sized by the largest batch so far (FaceNet: 395 against 428 MiB peak
    after a batch of 32, measured in a bare process)."""
    ort = onnxruntime_module()
    graph = verified_graph(models_dir, filename)  # ONNX Runtime reads the file itself: no second copy in memory
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena
    providers = ["CPUExecutionProvider"]
    if gpu and config.device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(graph), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own kinds for a graph it cannot load
        path = Path(models_dir) / filename
        raise ModelUnavailableError(f"ONNX Runtime cannot load {path} ({error}); {FETCH_HINT}") from None
    return_freed_memory()  # what parsing the graph left: 140 MB of FaceNet's stayed resident, freed but not returned
    return session


def source_sha256(models_dir: Path, name: str) -> str:
    """The sha256 of the weights a graph was converted from (the fingerprint's, under both runtimes)."""
    value = read_manifest(models_dir)["sources"].get(name)
    if not value:
        raise ModelUnavailableError(
            f"the manifest {manifest_path(models_dir)} names no source for {name}; {FETCH_HINT}"
        )
    return value
