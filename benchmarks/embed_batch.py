"""FaceNet on ONNX Runtime: time a face and peak memory by batch size (EMBED_BATCH_SIZE).

Each batch size runs in a fresh child process: the session is loaded (its own peak: parsing the graph), then the
same crops are embedded three times; it prints the median time a face and how far the peak (VmHWM) rose above the
session's load. What a face holds does not change FaceNet's work, so the crops are drawn at random.
Usage: python benchmarks/embed_batch.py [--faces 96] [--sizes 8,16,32,64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def status_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def child(batch: int, faces: int) -> None:
    import numpy as np

    from engine.models.facenet_onnx import OnnxFaceNet
    from engine.runtime.device import cpu_cores
    from engine.runtime.onnx import SessionConfig, limit_heap_retention
    from engine.settings import EngineSettings

    settings = EngineSettings()
    limit_heap_retention(settings.heap_mmap_threshold_mb)
    network = OnnxFaceNet(settings.models_dir, SessionConfig(threads=cpu_cores()), batch_size=batch)
    network.load()
    loaded, loaded_peak = status_mb("VmRSS"), status_mb("VmHWM")
    crops = np.random.default_rng(0).integers(0, 256, (faces, 160, 160, 3), dtype=np.uint8)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        network.embed(crops)
        times.append(time.perf_counter() - started)
    per_face = sorted(times)[1] / faces * 1000
    print(
        f"batch {batch:3d}: {per_face:5.1f} ms a face; resident after loading {loaded:.0f} MB, loading's peak "
        f"{loaded_peak:.0f} MB, peak after embedding {status_mb('VmHWM'):.0f} MB "
        f"(+{status_mb('VmHWM') - loaded_peak:.0f})",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=96)
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.faces)
        return 0
    print(f"FaceNet (ONNX Runtime) on {os.cpu_count()} cores, {args.faces} faces, median of 3 runs", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "--child", str(size), "--faces", str(args.faces)]
        subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
