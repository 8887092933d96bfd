"""Time-ordered ids (ULID layout): 48 bits of milliseconds, 80 bits monotonic randomness.

Sequential keys keep SQLite's B-tree inserts at the right edge (about ten times
faster than random UUIDs here) and make ``ORDER BY id`` the creation order.
"""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
# Ids need to be unique and ordered, not secret (tokens are minted elsewhere, from the CSPRNG):
# a generator seeded from the OS saves a system call per id.
_random = random.Random(os.urandom(32))
_last_ms = 0
_last_rand = 0


# Two Crockford characters per 10 bits: 13 lookups encode the 130 bits of a whole id.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _encode(value: int) -> str:
    """``value`` (< 2**130) as 26 characters, most significant first."""
    p = _PAIRS
    return "".join([p[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def new_id(now_ms: int | None = None) -> str:
    """A 26-character id, strictly increasing within this process."""
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_rand + 1
        else:
            rand = _random.getrandbits(79)  # room to increment
        _last_ms, _last_rand = ms, rand
    return _encode(ms << 80 | rand)


def id_time_ms(value: str) -> int:
    ms = 0
    for ch in value[:10]:
        ms = ms * 32 + _ALPHABET.index(ch)
    return ms
