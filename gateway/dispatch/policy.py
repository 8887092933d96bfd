"""What may be sent now: opt-outs, send windows and quiet hours, frequency caps.

Marketing only: transactional messages (an OTP, a card alert) ignore all three.
A message outside its window is deferred to the next opening (or expires, if its
TTL runs out first); an opted-out number or one over its cap is suppressed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from gateway.domain.messages import Deferred, Expired, Outcome, QueuedMessage, Suppressed
from gateway.domain.windows import (
    DAYS,
    Interval,
    Window,
    next_opening,
    parse_days,
    stored_hhmm,
    stored_zone,
)
from gateway.storage.audience import SqliteAudience
from gateway.storage.base import Store

DEFAULT_TZ = "Asia/Shanghai"
DEFAULT_SETTINGS: dict[str, Any] = {
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "frequency_cap": {"max": 3, "per_hours": 24},
}


def window_of(spec: dict[str, Any] | None) -> Window | None:
    if not spec:
        return None
    return Window(
        Interval(stored_hhmm(spec["start"]), stored_hhmm(spec["end"])),
        parse_days(spec.get("days") or list(DAYS)),
    )


def interval_of(spec: dict[str, Any] | None) -> Interval | None:
    return Interval(stored_hhmm(spec["start"]), stored_hhmm(spec["end"])) if spec else None


class SendPolicy:
    def __init__(self, store: Store, audience: SqliteAudience, ttl_s: float = 5.0) -> None:
        self._store = store
        self._audience = audience
        self._ttl_s = ttl_s
        self._settings: dict[str, tuple[dict[str, Any], float]] = {}
        # Marketing messages that passed their cap and are on their way but not yet recorded
        # as submitted: counted too, so concurrent batches cannot exceed a cap between them.
        self._in_flight: dict[tuple[str, str], int] = {}
        self._reserved: set[str] = set()

    async def tenant_settings(self, tenant_id: str) -> dict[str, Any]:
        hit = self._settings.get(tenant_id)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        settings = DEFAULT_SETTINGS | await self._store.get_settings(tenant_id)
        self._settings[tenant_id] = (settings, time.monotonic() + self._ttl_s)
        return settings

    def forget(self, tenant_id: str) -> None:
        self._settings.pop(tenant_id, None)

    async def hold(self, messages: Sequence[QueuedMessage], now: float) -> dict[str, Outcome]:
        """The messages that may not go now, each with what happens to it instead."""
        marketing = [q for q in messages if q.category == "marketing"]
        if not marketing:
            return {}
        held: dict[str, Outcome] = {}
        by_tenant: dict[str, list[QueuedMessage]] = defaultdict(list)
        for q in marketing:
            by_tenant[q.tenant_id].append(q)
        for tenant_id, qs in by_tenant.items():
            settings = await self.tenant_settings(tenant_id)
            opted = await self._audience.opted_out(tenant_id, [q.to for q in qs])
            quiet = interval_of(settings.get("quiet_hours"))
            # a single send carries no time zone (nor a window): for its quiet hours, the
            # recipient's own if the tenant has it
            unzoned = [q.to for q in qs if q.timezone is None] if quiet is not None else []
            zones = await self._audience.timezones(tenant_id, unzoned) if unzoned else {}
            capped: list[tuple[QueuedMessage, dict[str, Any]]] = []
            for q in qs:
                if q.to in opted:
                    held[q.id] = Suppressed(q.id, "opted_out", now)
                    continue
                policy = q.policy or {}
                tz = q.timezone or zones.get(q.to) or DEFAULT_TZ
                opening = next_opening(now, stored_zone(tz), window_of(policy.get("window")), quiet)
                if opening is None or opening >= q.expires_at:
                    held[q.id] = Expired(q.id, now)
                elif opening > now:
                    held[q.id] = Deferred(q.id, opening, now)
                else:
                    cap = (
                        policy["frequency_cap"]
                        if "frequency_cap" in policy
                        else settings.get("frequency_cap")
                    )
                    if cap:
                        capped.append((q, cap))
            held.update(await self._over_cap(tenant_id, capped, now))
        return held

    async def _over_cap(
        self, tenant_id: str, capped: list[tuple[QueuedMessage, dict[str, Any]]], now: float
    ) -> dict[str, Outcome]:
        by_window: dict[float, list[tuple[QueuedMessage, dict[str, Any]]]] = defaultdict(list)
        for q, cap in capped:
            by_window[float(cap["per_hours"])].append((q, cap))
        out: dict[str, Outcome] = {}
        for hours, items in by_window.items():
            sent = await self._audience.marketing_sent_since(
                tenant_id, list({q.to for q, _ in items}), now - hours * 3600
            )
            for q, cap in items:  # this batch counts too: two sends of one batch are two
                key = (tenant_id, q.to)
                if sent.get(q.to, 0) + self._in_flight.get(key, 0) >= int(cap["max"]):
                    out[q.id] = Suppressed(q.id, "frequency_cap", now)
                else:
                    self._in_flight[key] = self._in_flight.get(key, 0) + 1
                    self._reserved.add(q.id)
        return out

    def release(self, messages: Sequence[QueuedMessage]) -> None:
        """The messages' outcomes are recorded: the database counts them from now on."""
        for q in messages:
            if q.id not in self._reserved:
                continue
            self._reserved.discard(q.id)
            key = (q.tenant_id, q.to)
            left = self._in_flight.get(key, 0) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)
