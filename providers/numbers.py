"""How phone numbers are hashed for privacy-preserving capability lookups."""

from __future__ import annotations

import hashlib


def number_hash(e164: str) -> str:
    """The lowercase hex SHA-256 of an E.164 number, as vendors ask for it."""
    return hashlib.sha256(e164.encode()).hexdigest()
