"""A killed `index` run resumes instead of starting over: clean run time vs. killed-at-half + resumed run.

Each run is a real `python -m engine index --json` process (models loaded in each, as a user
would run it) on its own DATA_DIR. The killed run gets SIGKILL at half the clean run's time;
the resumed run's time is compared with the clean run's. Needs ../shared/data/lfw (LFW A-L).

    python benchmarks/bench_resume.py [--variant deepfunneled] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def index_command(gallery: Path, data_dir: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return [sys.executable, "-m", "engine", "index", "--gallery", str(gallery), "--json"], env


def run_index(gallery: Path, data_dir: Path, kill_after: float | None = None) -> tuple[float, dict | None]:
    command, env = index_command(gallery, data_dir)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return time.perf_counter() - started, None
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"index failed with exit code {process.returncode}")
    return time.perf_counter() - started, json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="deepfunneled")
    parser.add_argument("--limit", type=int, help="index only the first N people's folders' photos (a smaller gallery)")
    args = parser.parse_args()
    source = REPO.parent / "shared" / "data" / "lfw" / args.variant
    if not source.is_dir():
        print(f"{source} not found: this benchmark needs ../shared")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    try:
        gallery = source
        if args.limit:
            gallery = work / "gallery"
            count = 0
            for person in sorted(source.iterdir()):
                if count >= args.limit:
                    break
                shutil.copytree(person, gallery / person.name)
                count += len(list(person.iterdir()))
        clean_s, clean = run_index(gallery, work / "clean")
        killed_s, _ = run_index(gallery, work / "resumed", kill_after=clean_s / 2)
        resumed_s, resumed = run_index(gallery, work / "resumed")
        print(
            json.dumps(
                {
                    "images": clean["images"],
                    "clean_s": round(clean_s, 1),
                    "killed_at_s": round(killed_s, 1),
                    "resumed_s": round(resumed_s, 1),
                    "resumed_over_clean": round(resumed_s / clean_s, 3),
                    "resumed_unchanged": resumed["unchanged"],
                    "resumed_embedded": resumed["embedded_images"],
                    "faces_clean": clean["faces_indexed"],
                    "faces_resumed": resumed["faces_indexed"],
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
