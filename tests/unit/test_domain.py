"""Pure domain logic: numbers, statuses, retry policy, ids, carriers."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from gateway.domain.messages import can_move
from gateway.domain.phones import InvalidNumber, carrier_name, mask, mask_in_text, to_e164
from gateway.domain.retry import backoff
from gateway.domain.routing import carrier_for, preference
from gateway.ids import id_time_ms, new_id


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "+86 138 1234 5678",
        "+8613812345678",
        "008613812345678",
        "86-138-1234-5678",
        "(+86) 138.1234.5678",
    ],
)
def test_common_forms_become_e164(raw: str) -> None:
    """Every common way of writing a Chinese mobile number gives the same E.164."""
    assert to_e164(raw) == "+8613812345678"


def test_other_countries_use_phonenumbers() -> None:
    """Numbers outside the fast path are parsed and validated by phonenumbers."""
    assert to_e164("+1 415 555 0123") == "+14155550123"
    assert to_e164("+852 6123 4567") == "+85261234567"


@pytest.mark.parametrize("raw", ["", "   ", "12345", "abc", "+86 000", "1381234567", "+999123"])
def test_invalid_numbers(raw: str) -> None:
    """Things that are not dialable numbers are refused."""
    with pytest.raises(InvalidNumber):
        to_e164(raw)


def test_masking() -> None:
    """Masks keep the country, the first digits and the last four."""
    assert mask("+8613812345678") == "+86138****5678"
    assert mask_in_text("to +8613812345678 and 13912345678") == "to +86138****5678 and 139****5678"


@pytest.mark.parametrize(
    ("current", "new", "ok"),
    [
        ("accepted", "submitted", True),
        ("accepted", "deferred", True),
        ("deferred", "accepted", True),
        ("submitted", "delivered", True),
        ("accepted", "delivered", True),
        ("submitted", "accepted", False),
        ("delivered", "submitted", False),
        ("delivered", "failed", False),
        ("failed", "delivered", False),
        ("expired", "submitted", False),
        ("suppressed", "accepted", False),
        ("submitted", "submitted", False),
    ],
)
def test_status_ladder_only_moves_forward(current: str, new: str, ok: bool) -> None:
    """A final status is never left and nothing moves backwards."""
    assert can_move(current, new) is ok


def test_backoff_grows_with_jitter_and_cap() -> None:
    """Delays double per attempt within [step/2, step], capped, with Retry-After as a floor."""
    rng = random.Random(1)
    for attempt in range(1, 12):
        step = min(60.0, 2.0 ** (attempt - 1))
        d = backoff(attempt, base_s=1.0, max_s=60.0, rng=rng)
        assert step / 2 <= d <= step
    assert backoff(1, base_s=1.0, max_s=60.0, defer=30.0, rng=rng) >= 30.0
    delays = {round(backoff(5, base_s=1.0, max_s=60.0, rng=rng), 6) for _ in range(20)}
    assert len(delays) > 10  # jitter spreads a burst


def test_ids_are_time_ordered_and_unique() -> None:
    """Ids sort in creation order, even within one millisecond, and carry their time."""
    ids = [new_id(4_000_000_000_000) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert id_time_ms(ids[0]) == 4_000_000_000_000
    assert len(ids[0]) == 26
    later = new_id(4_000_000_000_001)
    assert later > ids[-1]


@pytest.mark.parametrize(
    ("number", "carrier"),
    [
        ("+8613812345678", "cmcc"),
        ("+8613012345678", "cucc"),
        ("+8618912345678", "ctcc"),
        ("+8619212345678", "cmcc"),
        ("+14155550123", None),
    ],
)
def test_carrier_from_number(number: str, carrier: str | None) -> None:
    """The carrier comes from the number's range; Broadnet rides China Mobile."""
    assert carrier_for(number) == carrier


def test_chinese_carriers_match_phonenumbers_own_lookup() -> None:
    """China's ranges, copied out of phonenumbers' table, name the carrier the library
    names, for a number in every range it has (and numbers just past them)."""
    import phonenumbers
    from phonenumbers import carrier
    from phonenumbers.carrierdata import CARRIER_DATA

    rng = random.Random(7)
    numbers = []
    for prefix in (k for k in CARRIER_DATA if k.startswith("86")):
        digits = prefix[2:]
        for _ in range(3):
            rest = "".join(rng.choice("0123456789") for _ in range(11 - len(digits)))
            numbers.append("+86" + (digits + rest)[:11])
    numbers += [f"+86{n}" for n in ("10012345678", "2012345678", "19212345678", "1000")]
    assert len(numbers) > 150
    for number in numbers:
        expected = carrier.name_for_number(phonenumbers.parse(number, None), "en")
        assert carrier_name(number) == expected, number
    assert carrier_name("+14155550123") == ""  # only +86 numbers are asked about


def test_the_world_table_is_not_kept() -> None:
    """The all-countries carrier table (~7 MB) is unloaded once China's ranges are copied."""
    code = (
        "import sys; import gateway.domain.routing; "
        "print(sorted(m for m in sys.modules if 'carrier' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_portability_override() -> None:
    """A ported number goes to its new carrier."""
    assert carrier_for("+8613812345678", {"+8613812345678": "ctcc"}) == "ctcc"


def test_route_preference() -> None:
    """The send's preference beats the template's, which beats the default."""
    assert preference(None, None) == ("vendor_card", "carrier_rich", "sms")
    assert preference(None, ["sms"]) == ("sms",)
    assert preference(["carrier_rich", "sms"], ["sms"]) == ("carrier_rich", "sms")


def test_backoff_never_overflows() -> None:
    """Thousands of attempts (a carrier down for days) still give the capped delay."""
    assert backoff(5000, base_s=1.0, max_s=300.0, rng=random.Random(1)) <= 300.0
