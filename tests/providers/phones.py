"""Phone numbers with known device ownership, found by the mock's own deterministic rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from providers.mock.devices import (
    VENDOR_SALT,
    capable,
    carrier_capable,
    number_hash,
    shows_vendor_cards,
    vendor_of_hash,
)


def numbers(start: int = 0) -> Iterator[str]:
    """``+8613800000000``, ``+8613800000001``, …"""
    i = start
    while True:
        yield f"+86138{i:08d}"
        i += 1


def find(predicate: Callable[[str], bool], count: int = 1) -> list[str]:
    """The first ``count`` numbers whose hash satisfies ``predicate``."""
    found: list[str] = []
    for n in numbers():
        if predicate(number_hash(n)):
            found.append(n)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


def vendor_phone(vendor: str, *, share: float = 0.5) -> str:
    """A number that can show ``vendor``'s cards at ``share``."""
    return find(lambda h: shows_vendor_cards(h, vendor, share))[0]


def other_vendor_phone(vendor: str) -> str:
    """A number whose handset is not ``vendor``'s at all."""
    return find(lambda h: vendor_of_hash(h) not in (vendor, None))[0]


def uncapable_vendor_phone(vendor: str, *, share: float = 0.5) -> str:
    """A ``vendor`` handset that cannot show its cards at ``share``."""
    (number,) = find(lambda h: vendor_of_hash(h) == vendor and not capable(h, share, VENDOR_SALT))
    return number


def rcs_phone(*, capable: bool, share: float = 0.5) -> str:
    """A number that can (or cannot) receive a carrier's 5G messages at ``share``."""
    return find(lambda h: carrier_capable(h, share) is capable)[0]
