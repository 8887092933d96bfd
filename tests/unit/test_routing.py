"""The routing policy, table-driven, and the circuit breaker (pure)."""

from __future__ import annotations

import pytest

from gateway.clock import FrozenClock
from gateway.dispatch.circuit import CircuitBreaker
from gateway.domain.routing import Capability, plan_route

DEFAULT = ("vendor_card", "carrier_rich", "sms")
HUAWEI_5G = Capability("huawei", True)


@pytest.mark.parametrize(
    ("case", "kwargs", "first", "skipped"),
    [
        (
            "vendor card when capable and approved",
            dict(capability=HUAWEI_5G, approved_vendors=frozenset({"huawei"})),
            ("vendor_card", "huawei"),
            (),
        ),
        (
            "5G message when the vendor has not approved",
            dict(capability=HUAWEI_5G),
            ("carrier_rich", "cmcc"),
            (("vendor_card", "not_approved"),),
        ),
        (
            "5G message when no vendor shows cards",
            dict(capability=Capability(None, True)),
            ("carrier_rich", "cmcc"),
            (("vendor_card", "not_capable"),),
        ),
        (
            "SMS when nothing rich is possible",
            dict(capability=Capability(None, False)),
            ("sms", "cmcc"),
            (("vendor_card", "not_capable"), ("carrier_rich", "not_capable")),
        ),
        (
            "SMS when the template has no card",
            dict(capability=HUAWEI_5G, has_card=False),
            ("sms", "cmcc"),
            (("vendor_card", "no_card"), ("carrier_rich", "no_card")),
        ),
        (
            "SMS when capability is unknown",
            dict(capability=None),
            ("sms", "cmcc"),
            (("vendor_card", "capability_unknown"), ("carrier_rich", "capability_unknown")),
        ),
        (
            "an open circuit is passed over",
            dict(
                capability=HUAWEI_5G,
                approved_vendors=frozenset({"huawei"}),
                open_circuits=frozenset({"huawei"}),
            ),
            ("carrier_rich", "cmcc"),
            (("vendor_card", "circuit_open"),),
        ),
        (
            "an excluded route is not tried again",
            dict(
                capability=HUAWEI_5G,
                approved_vendors=frozenset({"huawei"}),
                exclude=frozenset({"vendor_card"}),
            ),
            ("carrier_rich", "cmcc"),
            (),
        ),
        (
            "the SMS goes even through an open circuit (it waits there)",
            dict(capability=None, open_circuits=frozenset({"cmcc"})),
            ("sms", "cmcc"),
            (("vendor_card", "capability_unknown"), ("carrier_rich", "capability_unknown")),
        ),
        (
            "no carrier, no route",
            dict(capability=None, carrier=None),
            None,
            (
                ("vendor_card", "capability_unknown"),
                ("carrier_rich", "capability_unknown"),
                ("sms", "no_carrier"),
            ),
        ),
    ],
)
def test_plan_route(case: str, kwargs: dict, first: tuple[str, str] | None, skipped: tuple) -> None:  # type: ignore[type-arg]
    """The first candidate and the reasons for what was passed over before it."""
    args = {"carrier": "cmcc", "has_card": True} | kwargs
    plan = plan_route(DEFAULT, **args)
    got = (plan.first.route, plan.first.provider) if plan.first else None
    assert got == first, case
    if first is not None:
        before = DEFAULT.index(first[0])
        skipped_before = tuple(s for s in plan.skipped if DEFAULT.index(s[0]) < before)
        assert skipped_before == skipped, case
    else:
        assert plan.skipped == skipped, case


def test_preference_order_is_respected() -> None:
    """A send preferring the 5G message over the vendor card gets the 5G message."""
    plan = plan_route(
        ("carrier_rich", "vendor_card", "sms"),
        carrier="ctcc",
        capability=HUAWEI_5G,
        has_card=True,
        approved_vendors=frozenset({"huawei"}),
    )
    assert [c.route for c in plan.candidates] == ["carrier_rich", "vendor_card", "sms"]


def test_circuit_breaker_opens_probes_and_closes() -> None:
    """Closed → open after N failures → half-open after the cooldown, one probe → closed."""
    clock = FrozenClock()
    cb = CircuitBreaker(clock, threshold=3, cooldown_s=10)
    for _ in range(2):
        cb.failure()
    assert cb.state == "closed" and cb.allow()
    cb.failure()
    assert cb.state == "open" and not cb.allow() and cb.blocked()
    assert cb.retry_in() == 10
    clock.advance(10)
    assert cb.state == "half_open" and not cb.blocked()
    assert cb.allow() and not cb.allow()  # one probe at a time
    cb.success()
    assert cb.state == "closed" and cb.failures == 0


def test_failed_probe_reopens() -> None:
    """A failing probe opens the circuit for another cooldown."""
    clock = FrozenClock()
    cb = CircuitBreaker(clock, threshold=1, cooldown_s=5)
    cb.failure()
    clock.advance(5)
    assert cb.allow()
    cb.failure()
    assert cb.state == "open" and cb.retry_in() == 5
