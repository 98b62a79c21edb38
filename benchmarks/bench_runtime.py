"""ENGINE_RUNTIME=onnx against keras in one run: indexing images/s, per-photo search time, peak memory, same answers.

Each figure comes from real `python -m engine` processes, the two runtimes side by side:
  - index: `python -m engine index` of the first --gallery-size photos of LFW-1508 (the first 1,508
    deep-funneled A-L photos; the sample gallery without ../shared), a fresh DATA_DIR per runtime:
    images/s from its report, and the process's peak resident memory;
  - search: `python -m engine search` of --queries one-face photos in one call, and of one photo alone:
    per photo = (time of the many - time of the one) / (queries - 1), so start-up is not counted; the
    engine's own detect/embed/search split from --json; the CPU time per photo the same way (user + system of
    the processes: it moves far less with other work on the machine than the wall time does); peak resident
    memory of the one-photo process;
  - the bot: a process importing the bot's modules, warming the engine up and answering one photo: the time
    from its start to that answer (disk cache warm: the searches just ran), its CPU time, and its peak resident
    memory;
  - answers: the share of queries with the same top-1 photo on both runtimes (each on its own index).
Peak memory is the process's max RSS (wait4's rusage). Usage:
  python benchmarks/bench_runtime.py [--gallery-size 300] [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.images import list_gallery_images  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402

RUNTIMES = ("onnx", "keras")


# The process reports its own peak resident memory (max RSS) and CPU seconds (user + system) as it exits.
ENGINE_MAIN = (
    "import atexit, resource, sys; "
    "usage = lambda: resource.getrusage(resource.RUSAGE_SELF); "
    "atexit.register(lambda: print('PEAK_KB', usage().ru_maxrss, usage().ru_utime + usage().ru_stime, file=sys.stderr)); "
    "from engine.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def run_engine(args: list[str], runtime: str, data_dir: Path) -> tuple[float, float, str, float]:
    """(seconds, peak RSS in MiB, stdout, CPU seconds) of one `python -m engine` process."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in EngineSettings.model_fields}
    env.update(ENGINE_RUNTIME=runtime, DATA_DIR=str(data_dir), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", ENGINE_MAIN, *args], env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{runtime}: python -m engine {' '.join(args[:2])} failed:\n{done.stderr[-2000:]}")
    _, peak_kb, cpu_s = [line for line in done.stderr.splitlines() if line.startswith("PEAK_KB ")][-1].split()
    return seconds, int(peak_kb) / 1024, done.stdout, float(cpu_s)


# What the bot does before its first answer: its modules, the engine's warm-up, one search (no Telegram).
BOT_START = (
    "import resource, sys, time; started = time.perf_counter(); "
    "import bot.app, bot.handlers; from engine import Engine, EngineSettings; "
    "engine = Engine(EngineSettings()); engine.warm_up('facenet'); "
    "engine.search_bytes(open(sys.argv[1], 'rb').read()); "
    "usage = resource.getrusage(resource.RUSAGE_SELF); "
    "print(time.perf_counter() - started, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)"
)


def bot_start(runtime: str, data_dir: Path, photo: str) -> tuple[float, float, float]:
    """(seconds from interpreter start to the first answer, peak RSS in MiB, CPU seconds) of a bot-like process."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in EngineSettings.model_fields}
    env.update(ENGINE_RUNTIME=runtime, DATA_DIR=str(data_dir), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", BOT_START, photo], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{runtime}: the bot start failed:\n{done.stderr[-2000:]}")
    _, peak, cpu = (float(v) for v in done.stdout.split())
    return time.perf_counter() - started, peak, cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--gallery-size", type=int, default=300, help="photos of LFW-1508 indexed per runtime (1508: all)"
    )
    parser.add_argument("--queries", type=int, default=100, help="one-face photos searched in one call")
    args = parser.parse_args()

    lfw = REPO.parent / "shared" / "data" / "lfw" / "deepfunneled"
    root = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    if lfw.is_dir():
        photos = list_gallery_images(lfw)[: min(args.gallery_size, 1508)]
        source = f"the first {len(photos)} photos of LFW-1508 (deep-funneled, 250x250)"
    else:
        photos = list_gallery_images(REPO / "data" / "sample-gallery")[: args.gallery_size]
        source = f"{len(photos)} sample-gallery photos (../shared is absent)"
    gallery = root / "gallery"
    for photo in photos:
        target = gallery / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(photo)
    queries = [
        str(gallery / p.parent.name / p.name) for p in photos[:: max(1, len(photos) // args.queries)][: args.queries]
    ]
    print(f"gallery: {source}; {len(queries)} queries from it; {os.cpu_count()} cores; runtimes side by side")

    figures: dict[str, dict] = {}
    answers: dict[str, list] = {}
    for runtime in RUNTIMES:
        data = root / f"data-{runtime}"
        seconds, peak, out, _ = run_engine(
            ["index", "--gallery", str(gallery), "--json", "--workers", "0"], runtime, data
        )
        report = json.loads(out.strip().splitlines()[-1])
        figures[runtime] = {
            "index_images_per_s": report["images_per_second"],
            "index_peak_mib": peak,
            "index_s": seconds,
        }
    for runtime in RUNTIMES:  # searches after both indexes: the two runtimes see the same disk cache
        data = root / f"data-{runtime}"
        one_s, one_peak, _, one_cpu = run_engine(["search", queries[0], "--json"], runtime, data)
        many_s, many_peak, out, many_cpu = run_engine(["search", *queries, "--json"], runtime, data)
        results = [json.loads(line) for line in out.strip().splitlines()]
        split = {key: sum(r["ms"][key] for r in results) / len(results) for key in ("detect", "embed", "search")}
        answers[runtime] = [r["faces"][0]["matches"][0]["path"] if r["faces"] else None for r in results]
        start_s, start_peak, start_cpu = bot_start(runtime, data, queries[0])
        figures[runtime].update(
            bot_first_answer_s=start_s, bot_peak_mib=start_peak, bot_cpu_s=start_cpu,
            search_one_s=one_s, search_one_peak_mib=one_peak, search_many_peak_mib=many_peak,
            per_photo_ms=(many_s - one_s) / (len(queries) - 1) * 1000, **{f"{k}_ms": v for k, v in split.items()},
            cpu_per_photo_ms=(many_cpu - one_cpu) / (len(queries) - 1) * 1000,
        )  # fmt: skip

    print(f"{'':34}{'onnx':>10}{'keras':>10}{'onnx/keras':>12}")
    rows = [
        ("index: images/s", "index_images_per_s", "{:10.2f}"),
        ("index: peak RSS (MiB)", "index_peak_mib", "{:10.0f}"),
        ("search: per photo (ms, many)", "per_photo_ms", "{:10.1f}"),
        ("  engine's detect (ms)", "detect_ms", "{:10.1f}"),
        ("  engine's embed (ms)", "embed_ms", "{:10.1f}"),
        ("  engine's search (ms)", "search_ms", "{:10.1f}"),
        ("search: CPU per photo (ms, many)", "cpu_per_photo_ms", "{:10.1f}"),
        ("search: one-photo process (s)", "search_one_s", "{:10.2f}"),
        ("search: one-photo peak RSS (MiB)", "search_one_peak_mib", "{:10.0f}"),
        (f"search: {len(queries)}-photo peak RSS (MiB)", "search_many_peak_mib", "{:10.0f}"),
        ("bot: start to first answer (s)", "bot_first_answer_s", "{:10.2f}"),
        ("bot: CPU to first answer (s)", "bot_cpu_s", "{:10.2f}"),
        ("bot: peak RSS after it (MiB)", "bot_peak_mib", "{:10.0f}"),
    ]
    for label, key, fmt in rows:
        onnx, keras = figures["onnx"][key], figures["keras"][key]
        print(f"{label:34}{fmt.format(onnx)}{fmt.format(keras)}{onnx / keras if keras else float('nan'):12.2f}")
    same = sum(a == b for a, b in zip(answers["onnx"], answers["keras"], strict=True))
    print(f"same top-1 photo on both runtimes: {same}/{len(queries)}")
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
