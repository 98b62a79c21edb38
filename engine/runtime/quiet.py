"""TensorFlow's C++ start-up chatter kept off the terminal of a CPU machine.

When TensorFlow's shared libraries load, and when it first looks for a GPU, its C++ side writes
straight to file descriptor 2 — "Could not find cuda drivers on your machine", absl's "All log
messages before absl::InitializeLog() is called…", "failed call to cuInit" — before and beside the
logging that `TF_CPP_MIN_LOG_LEVEL` controls. A newcomer reads those as errors before the result.

`filtered_stderr()` sends file descriptor 2 to a temporary file while such a step runs and writes
back every line that is not one of those known start-up lines, so nothing else is lost (another
thread's log line, a real error). `TF_CPP_MIN_LOG_LEVEL` below 2 (the user asked for TensorFlow's
own messages) turns the filter off.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import ModuleType

# Start-up lines that say only "no GPU here" or describe TensorFlow's own set-up.
_NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda_executor|cuInit|Could not find cuda drivers|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation_placer|TF-TRT Warning|oneDNN custom operations|"
    r"This TensorFlow binary is optimized to use available CPU instructions|"
    r"rebuild TensorFlow with the appropriate compiler flags|cpu_feature_guard|"
    r"All log messages before absl|E0000 00:00|I0000 00:00|W0000 00:00"
)
_lock = threading.Lock()


def _wanted() -> bool:
    """Whether to filter: TF_CPP_MIN_LOG_LEVEL (default 2 here) at 2 or more."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")) >= 2
    except ValueError:
        return True


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Run the block with file descriptor 2 captured; write back all but TensorFlow's start-up lines."""
    if not _wanted():
        yield
        return
    with _lock, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().decode(errors="replace").splitlines(True) if not _NOISE.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_quietly(name: str) -> ModuleType:
    """Import `tensorflow` or `keras` (which imports TensorFlow) without its start-up chatter."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr():
        return importlib.import_module(name)
