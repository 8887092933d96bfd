"""Giving freed memory back to the system after a bulk job."""

from __future__ import annotations

import gc
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
