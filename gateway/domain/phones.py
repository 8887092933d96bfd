"""Phone numbers: parse any common form into E.164, mask for display and logs.

Chinese mobile numbers in their common forms take a fast path (a regex and no
allocation-heavy parsing); everything else goes through ``phonenumbers``.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import carrier as pn_carrier

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


def _cn_prefix_digits() -> int:
    """How many national digits phonenumbers' carrier data ever looks at for China (+86)."""
    from phonenumbers.carrierdata import CARRIER_DATA

    return max((len(k) - 2 for k in CARRIER_DATA if k.startswith("86")), default=8)


_CN_DIGITS = _cn_prefix_digits()


def carrier_name(e164: str) -> str:
    """The original carrier's English name as phonenumbers knows it ('' if unknown).

    phonenumbers decides a Chinese number's carrier by its first few digits only, so the
    answer is cached per prefix: a million distinct numbers cost a few hundred parses.
    """
    if not e164.startswith("+86"):
        return _carrier_of(e164)
    prefix = e164[: 3 + _CN_DIGITS]
    name = _BY_PREFIX.get(prefix)
    if name is None:
        name = _BY_PREFIX[prefix] = _carrier_of(e164)
    return name


_BY_PREFIX: dict[str, str] = {}  # at most 10^4 prefixes


@lru_cache(maxsize=65536)
def _carrier_of(e164: str) -> str:
    number = phonenumbers.parse(e164, None)
    return pn_carrier.name_for_number(number, "en")
