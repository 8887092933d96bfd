"""How phone numbers are hashed for privacy-preserving capability lookups."""

from __future__ import annotations

import hashlib
from functools import lru_cache


@lru_cache(maxsize=16384)  # one lookup round asks five vendors about the same numbers
def number_hash(e164: str) -> str:
    """The lowercase hex SHA-256 of an E.164 number, as vendors ask for it."""
    return hashlib.sha256(e164.encode()).hexdigest()
