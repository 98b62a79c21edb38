"""HEAP_MMAP_THRESHOLD_MB: once set at a process's start, photo-sized blocks are mapped on their own (handed back
to the system when freed) instead of kept in glibc's heap. Each case runs in a fresh process: the setting is
process-wide."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runtime.onnx import limit_heap_retention

REPO = Path(__file__).resolve().parents[2]

# After a 20 MB block is freed, glibc's own threshold has risen past 8 MB: is the next 8 MB block mapped on its own?
PROBE = """
import ctypes, sys
import numpy as np
from engine.runtime.onnx import limit_heap_retention

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
print(limit_heap_retention(int(sys.argv[1])))
big = np.ones(20 * 2**20, np.uint8)
del big
before = libc.mallinfo2().hblks
block = np.ones(8 * 2**20, np.uint8)
print(libc.mallinfo2().hblks - before)
"""


def _glibc_has_mallinfo2() -> bool:
    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 (glibc 2.33+)
    except (OSError, AttributeError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _glibc_has_mallinfo2(), reason="glibc 2.33+ only")


def _probe(threshold_mb: int) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold_mb)], cwd=REPO, capture_output=True, text=True, check=True
    )
    was_set, mapped = result.stdout.split()
    return was_set, int(mapped)


def test_a_threshold_maps_photo_sized_blocks_on_their_own() -> None:
    assert _probe(4) == ("True", 1)


def test_zero_leaves_glibc_default() -> None:
    assert _probe(0) == ("False", 0)  # glibc's threshold rose to 20 MB: the 8 MB block came from the heap


def test_zero_sets_nothing_here() -> None:
    assert limit_heap_retention(0) is False
