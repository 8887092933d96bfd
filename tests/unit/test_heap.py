"""Giving freed memory back to the system after a bulk job."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import heap
from gateway.heap import return_free_memory


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(heap._TRIM is None, reason="glibc's malloc_trim (and /proc): Linux")
def test_freed_pages_go_back_to_the_system() -> None:
    # 10 KiB blocks come from malloc's heap (not pymalloc, not mmap); keeping every 64th
    # pins the heap's top, so only a trim (not free()) can hand the rest back
    blocks = [bytearray(10 * 1024) for _ in range(8_000)]
    kept = blocks[::64]
    del blocks
    gc.collect()
    before = _rss_mb()
    assert return_free_memory()
    after = _rss_mb()
    assert before - after > 40, (before, after)  # ~77 MB were freed
    assert len(kept) == 125


_PINNED_HEAP = """
import gc, sys
from pathlib import Path
from gateway import heap

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "tuned":
    assert heap.tune_allocator()
# 100 KiB blocks: under glibc's default threshold (128 KiB), they come from its heap
blocks = [bytearray(100 * 1024) for _ in range(400)]
kept = blocks[::50]  # pins a heap's pages: only blocks of their own can all go back
del blocks
gc.collect()
print(round(rss_mb(), 1), len(kept))
"""


@pytest.mark.skipif(heap._MALLOPT is None, reason="glibc's mallopt (and /proc): Linux")
@pytest.mark.parametrize("mode", ["tuned", "default"])
def test_large_blocks_go_back_when_freed_once_tuned(mode: str) -> None:
    # in a process of its own: the thresholds are process-wide and cannot be set back
    start = subprocess.run(
        [sys.executable, "-c", _PINNED_HEAP.replace("del blocks", "pass"), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    end = subprocess.run(
        [sys.executable, "-c", _PINNED_HEAP, mode], capture_output=True, text=True, check=True
    )
    held = float(start.stdout.split()[0])  # all 400 blocks (~40 MB) alive
    left = float(end.stdout.split()[0])  # 8 of them alive
    if mode == "tuned":
        assert held - left > 30, (held, left)
    else:  # glibc's default keeps them: the reason for tuning
        assert held - left < 10, (held, left)
