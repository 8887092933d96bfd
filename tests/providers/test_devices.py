"""Device ownership and capability (pure, deterministic), and the vendors' review rules."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from providers.mock.devices import (
    capable,
    carrier_capable,
    hash_of_number,
    number_hash,
    shows_vendor_cards,
    vendor_of_hash,
)
from providers.mock.review import rule_verdict
from tests.providers.phones import numbers

SAMPLE = 20_000
EXPECTED_SHARES = {
    "huawei": 0.30,
    "honor": 0.12,
    "xiaomi": 0.16,
    "oppo": 0.15,
    "vivo": 0.15,
    None: 0.12,
}


def sample_hashes(start: int = 0) -> list[str]:
    gen = numbers(start)
    return [number_hash(next(gen)) for _ in range(SAMPLE)]


def test_number_hash_is_sha256_hex_of_the_e164() -> None:
    """The hash is the lowercase hex SHA-256 of the number's UTF-8 bytes."""
    assert number_hash("+8613812345678") == hashlib.sha256(b"+8613812345678").hexdigest()
    assert len(number_hash("+8613812345678")) == 64


def test_ownership_is_deterministic() -> None:
    """The same number always has the same vendor and the same capabilities."""
    h = number_hash("+8613812345678")
    assert vendor_of_hash(h) == vendor_of_hash(number_hash("+8613812345678"))
    assert [capable(h, 0.5, s) for s in range(3)] == [capable(h, 0.5, s) for s in range(3)]


def test_buckets_follow_the_documented_ranges() -> None:
    """The first 8 hex digits mod 1000 pick the vendor by range."""
    cases = {0: "huawei", 299: "huawei", 300: "honor", 419: "honor", 420: "xiaomi",
             579: "xiaomi", 580: "oppo", 729: "oppo", 730: "vivo", 879: "vivo",
             880: None, 999: None}  # fmt: skip
    for bucket, vendor in cases.items():
        assert vendor_of_hash(f"{bucket:08x}" + "0" * 56) == vendor


def test_vendor_shares_over_20000_numbers_are_within_3_points() -> None:
    """Over 20,000 numbers each vendor's share is within ±3 points of its market share."""
    counts = Counter(vendor_of_hash(h) for h in sample_hashes())
    for vendor, expected in EXPECTED_SHARES.items():
        assert counts[vendor] / SAMPLE == pytest.approx(expected, abs=0.03), vendor


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
def test_capability_share_is_respected(share: float) -> None:
    """About ``share`` of numbers are capable, for vendors' and carriers' slices alike."""
    hashes = sample_hashes(50_000)
    for salt in (0, 1):
        rate = sum(capable(h, share, salt) for h in hashes) / SAMPLE
        assert rate == pytest.approx(share, abs=0.03)


def test_vendor_and_carrier_capability_are_independent() -> None:
    """The carrier slice differs from the vendor slice: about a quarter are capable at both."""
    hashes = sample_hashes()
    both = sum(capable(h, 0.5, 0) and carrier_capable(h, 0.5) for h in hashes) / SAMPLE
    assert both == pytest.approx(0.25, abs=0.03)


def test_only_the_vendors_own_capable_phones_show_its_cards() -> None:
    """A number shows vendor X's cards iff X made it and it is within X's share."""
    hashes = sample_hashes()
    for h in hashes[:2000]:
        for vendor in ("huawei", "honor", "xiaomi", "oppo", "vivo"):
            expected = vendor_of_hash(h) == vendor and capable(h, 0.6, 0)
            assert shows_vendor_cards(h, vendor, 0.6) is expected
    huawei = sum(shows_vendor_cards(h, "huawei", 0.5) for h in hashes) / SAMPLE
    assert huawei == pytest.approx(0.15, abs=0.03)


def test_hash_of_number_normalises_and_refuses_non_numbers() -> None:
    """Any common form of a number hashes like its E.164; junk has no hash."""
    assert hash_of_number("138 1234 5678") == number_hash("+8613812345678")
    assert hash_of_number("not a number") is None


def test_salt_outside_the_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="salt"):
        capable(number_hash("+1"), 0.5, 7)


# review rules

OPTOUT = "回T退订"


@pytest.mark.parametrize(
    ("category", "card", "sms_text", "reason"),
    [
        ("transactional", {"title": "账单"}, "您的账单已出", None),
        ("marketing", {"title": "理财"}, f"新品上线，{OPTOUT}", None),
        ("marketing", {"footer": "拒收请回复R"}, "新品上线", None),
        ("marketing", {"title": "理财"}, "新品上线", "missing_optout"),
        ("marketing", {"body": [{"text": "稳赚不赔"}]}, OPTOUT, "banned_claim: 稳赚"),
        ("transactional", {"t": "x"}, "本产品保本", "banned_claim: 保本"),
        (
            "marketing",
            {"x": "A GUARANTEED RETURN of 5%"},
            OPTOUT,
            "banned_claim: guaranteed return",
        ),
        ("marketing", {"无风险": "key"}, "x", "banned_claim: 无风险"),
    ],
)
def test_review_rules(
    category: str, card: dict[str, object], sms_text: str, reason: str | None
) -> None:
    """Banned claims anywhere reject first; then marketing needs an opt-out hint."""
    assert rule_verdict(category, card, sms_text) == reason
