"""Phone numbers: parse any common form into E.164, mask for display and logs.

Chinese mobile numbers in their common forms take a fast path (a regex and no
allocation-heavy parsing); everything else goes through ``phonenumbers``.
"""

from __future__ import annotations

import importlib
import re
import sys
from functools import lru_cache
from typing import Any

import phonenumbers

DEFAULT_REGION = "CN"

_CN_MOBILE = re.compile(r"(?:\+?86|0086)?(1[3-9]\d{9})")
_STRIP = re.compile(r"[\s\-().]")
_E164_IN_TEXT = re.compile(r"\+?\d{11,15}")


class InvalidNumber(ValueError):
    pass


def to_e164(raw: str, region: str = DEFAULT_REGION) -> str:
    """``13812345678``, ``+86 138 1234 5678``, ``008613812345678`` → ``+8613812345678``."""
    if len(raw) == 11 and raw[0] == "1" and raw.isdigit() and raw[1] in "3456789":
        return "+86" + raw  # the commonest form of all, checked without a regex
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidNumber("phone number is empty")
    compact = _STRIP.sub("", raw)
    m = _CN_MOBILE.fullmatch(compact)
    if m is not None:
        return "+86" + m.group(1)
    return _parse_slow(compact, region)


@lru_cache(maxsize=65536)
def _parse_slow(compact: str, region: str) -> str:
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(e164: str) -> str:
    """``+8613812345678`` → ``+86138****5678``: enough to tell numbers apart, not to dial."""
    if len(e164) < 9:
        return "*" * len(e164)
    return e164[:-8] + "****" + e164[-4:]


def mask_in_text(text: str) -> str:
    """Masks every phone-number-looking run of digits in free text (log lines)."""
    return _E164_IN_TEXT.sub(lambda m: mask(m.group(0)), text)


def _cn_carrier_data() -> dict[str, str]:
    """phonenumbers' carrier ranges for China (+86): each prefix (``86`` and the first
    national digits) and its carrier's English name.

    The library keeps every country's ranges in one table (~60,000 prefixes, ~7 MB of
    objects for the life of the process). The gateway asks about +86 numbers only (see
    ``routing.carrier_for``), so it copies China's ranges (64 prefixes) and unloads the
    table's modules again; anything that imports them later loads them afresh.
    """
    modules = ("phonenumbers.carrier", "phonenumbers.carrierdata")
    loaded = {name for name in sys.modules if name.startswith(modules)}
    table: Any = importlib.import_module("phonenumbers.carrierdata").CARRIER_DATA
    china = {k: v["en"] for k, v in table.items() if k.startswith("86") and "en" in v}
    del table
    for name in [n for n in sys.modules if n.startswith(modules) and n not in loaded]:
        del sys.modules[name]
        if name.count(".") == 1:
            vars(phonenumbers).pop(name.partition(".")[2], None)
    return china


_CN_CARRIERS = _cn_carrier_data()
# how many national digits the ranges ever look at
_CN_DIGITS = max((len(k) - 2 for k in _CN_CARRIERS), default=8)
_MOBILE = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.PAGER,
    }
)


def carrier_name(e164: str) -> str:
    """A Chinese number's original carrier, its English name as phonenumbers knows it
    ('' if unknown, or not a +86 number).

    phonenumbers decides a Chinese number's carrier by its first few digits only, so the
    answer is cached per prefix: a million distinct numbers cost a few hundred parses.
    """
    if not e164.startswith("+86"):
        return ""
    prefix = e164[: 3 + _CN_DIGITS]
    name = _BY_PREFIX.get(prefix)
    if name is None:
        name = _BY_PREFIX[prefix] = _carrier_of(e164)
    return name


_BY_PREFIX: dict[str, str] = {}  # at most 10^4 prefixes


def _carrier_of(e164: str) -> str:
    """What ``phonenumbers.carrier.name_for_number`` answers, on China's ranges only: for
    a mobile number, the name of its longest matching prefix."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ""
    if phonenumbers.number_type(number) not in _MOBILE:
        return ""
    digits = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    for length in range(min(len(digits), 2 + _CN_DIGITS), 2, -1):
        name = _CN_CARRIERS.get(digits[:length])
        if name is not None:
            return name
    return ""
