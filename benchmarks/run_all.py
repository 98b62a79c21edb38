"""Run every benchmark in turn (`make bench`); each prints its own figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_store.py", "bench_index.py", "bench_resume.py", "bench_query.py", "bench_bot.py"]

if __name__ == "__main__":
    failed = 0
    for script in SCRIPTS:
        if not (HERE / script).is_file():
            continue
        print(f"\n=== {script} ===", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / script)]).returncode
    sys.exit(1 if failed else 0)
