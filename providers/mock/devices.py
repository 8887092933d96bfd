"""Which phone can show which rich messages: decided by the number's SHA-256 alone.

Pure and deterministic, so every process (and every test) agrees on it:

* ``vendor_of_hash``: the handset's maker, from ``int(h[:8], 16) % 1000`` in
  rough market shares (huawei 30 %, honor 12 %, xiaomi 16 %, oppo 15 %,
  vivo 15 %, other brands 12 %);
* ``capable``: whether it is among a provider's ``capability_share`` of
  capable phones, from another 8 hex digits of the hash chosen by ``salt``
  (vendors and carriers use different slices, so the two are independent).
"""

from __future__ import annotations

from functools import lru_cache

from providers.mock.state import normalise_number
from providers.numbers import number_hash

__all__ = [
    "CARRIER_SALT",
    "VENDOR_BUCKETS",
    "VENDOR_SALT",
    "capable",
    "card_vendor",
    "carrier_capable",
    "hash_of_number",
    "number_hash",
    "shows_vendor_cards",
    "vendor_of_hash",
]

# (exclusive upper bound of the bucket range, vendor); None is every other brand.
VENDOR_BUCKETS: tuple[tuple[int, str | None], ...] = (
    (300, "huawei"),
    (420, "honor"),
    (580, "xiaomi"),
    (730, "oppo"),
    (880, "vivo"),
    (1000, None),
)
VENDOR_SALT = 0  # h[8:16]
CARRIER_SALT = 1  # h[16:24]
_MAX_SALT = 6  # the last whole 8-digit slice of 64 hex digits


@lru_cache(maxsize=65536)  # each vendor asks about every number
def vendor_of_hash(h: str) -> str | None:
    """The maker of the phone whose number hashes to ``h``; ``None`` for other brands."""
    bucket = int(h[:8], 16) % 1000
    for upper, vendor in VENDOR_BUCKETS:
        if bucket < upper:
            return vendor
    raise AssertionError("unreachable: buckets cover 0..999")


def capable(h: str, share: float, salt: int = VENDOR_SALT) -> bool:
    """Whether the phone is among the ``share`` (0..1) of capable ones, by slice ``salt``."""
    if not 0 <= salt <= _MAX_SALT:
        raise ValueError(f"salt must be 0..{_MAX_SALT}, not {salt}")
    start = 8 + 8 * salt
    return (int(h[start : start + 8], 16) % 10000) / 10000 < share


def shows_vendor_cards(h: str, vendor: str, share: float) -> bool:
    """Whether the phone is ``vendor``'s and can show its cards (``share``: its capability)."""
    return card_vendor(h, share) == vendor


@lru_cache(maxsize=65536)  # five vendors ask about every number, most with one share
def card_vendor(h: str, share: float) -> str | None:
    """The maker of the phone hashing to ``h`` if it is among the ``share`` that show its
    cards, else ``None``: one answer for all five vendors' lookups of the number."""
    vendor = vendor_of_hash(h)
    return vendor if vendor is not None and capable(h, share, VENDOR_SALT) else None


def carrier_capable(h: str, share: float) -> bool:
    """Whether the phone can receive its carrier's 5G rich messages."""
    return capable(h, share, CARRIER_SALT)


@lru_cache(maxsize=65536)  # a number is hashed by its lookup, then by its submission
def hash_of_number(raw: str) -> str | None:
    """The hash of ``raw`` once in E.164, or ``None`` when it is not a phone number."""
    number = normalise_number(raw)
    return None if number is None else number_hash(number)
