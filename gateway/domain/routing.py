"""Which carrier a number belongs to, and which route a message takes (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
