"""Which carrier a number belongs to, and which route a message takes (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.domain.phones import carrier_name

CARRIERS = ("cmcc", "cucc", "ctcc")
VENDORS = ("huawei", "xiaomi", "oppo", "vivo", "honor")
ROUTE_KINDS = ("vendor_card", "carrier_rich", "sms")
DEFAULT_PREFERENCE: tuple[str, ...] = ROUTE_KINDS

_BY_NAME = {
    "China Mobile": "cmcc",
    "China Unicom": "cucc",
    "China Telecom": "ctcc",
    # China Broadnet (192…) runs on China Mobile's radio network and is reached through it.
    "China Broadnet": "cmcc",
}


def carrier_for(e164: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """The carrier that serves ``e164`` now: a portability override first, else its range."""
    if overrides and e164 in overrides:
        return overrides[e164]
    if not e164.startswith("+86"):
        return None
    return _BY_NAME.get(carrier_name(e164))


def preference(
    requested: Sequence[str] | None, template_routes: Sequence[str] | None
) -> tuple[str, ...]:
    """The route preference for one send: the send's own, else the template's, else the default."""
    if requested:
        return tuple(requested)
    if template_routes:
        return tuple(template_routes)
    return DEFAULT_PREFERENCE


@dataclass(frozen=True, slots=True)
class Capability:
    """What we know of one number's handset and network, from the providers' lookups."""

    vendor: str | None  # the handset vendor that can show its cards on this number, if any
    carrier_rich: bool  # whether the number's carrier can deliver 5G rich messages to it


@dataclass(frozen=True, slots=True)
class Candidate:
    route: str
    provider: str


_CANDIDATES: dict[tuple[str, str], Candidate] = {}


def _candidate(route: str, provider: str) -> Candidate:
    """The one ``Candidate`` of each (route, provider): few, and planned thousands a second."""
    found = _CANDIDATES.get((route, provider))
    if found is None:
        found = _CANDIDATES.setdefault((route, provider), Candidate(route, provider))
    return found


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The routes to try, in order, and why each preferred route before them was passed over."""

    candidates: tuple[Candidate, ...]
    skipped: tuple[tuple[str, str], ...]  # (route, reason)

    @property
    def first(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def plan_route(
    preference: Sequence[str],
    *,
    carrier: str | None,
    capability: Capability | None,
    has_card: bool,
    approved_vendors: frozenset[str] = frozenset(),
    open_circuits: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
) -> RoutePlan:
    """Every route the preference allows for one message, best first (pure).

    ``capability`` None means unknown (lookups failed): rich routes are passed over.
    ``exclude`` holds routes this message already gave up on (a fallback).
    """
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    for route in preference:
        if route in exclude:
            continue
        reason: str | None
        provider: str | None = None
        if route == "sms":
            provider, reason = carrier, None if carrier else "no_carrier"
        elif not has_card:
            reason = "no_card"
        elif capability is None:
            reason = "capability_unknown"
        elif route == "vendor_card":
            provider = capability.vendor
            if provider is None:
                reason = "not_capable"
            elif provider not in approved_vendors:
                reason = "not_approved"
            else:
                reason = None
        else:  # carrier_rich
            provider = carrier
            reason = None if carrier and capability.carrier_rich else "not_capable"
        if reason is None and provider in open_circuits and route != "sms":
            reason = "circuit_open"
        if reason is None and provider is not None:
            candidates.append(_candidate(route, provider))
        else:
            skipped.append((route, reason or "no_provider"))
    return RoutePlan(tuple(candidates), tuple(skipped))
