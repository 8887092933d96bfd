"""What each number's handset and network can show, from batch lookups, cached with a TTL.

Each vendor answers for its own devices (the numbers go out SHA-256-hashed), each
carrier for 5G rich messaging on its own numbers. A lookup that fails counts as
"not capable" for that provider and is cached briefly, so a dead provider is asked
again soon but never holds a message back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from itertools import islice
from typing import Any

from gateway.clock import Clock
from gateway.dispatch.ports import CapabilityProvider
from gateway.domain.routing import CARRIERS, VENDORS, Capability
from gateway.logging import get_logger

log = get_logger("gateway.capability")

# Every capability there can be (a vendor or none, 5G or not): the cache keeps a code per
# number, packed with its expiry into one int, not an object and a tuple per number
# (~95 bytes a number less: a million-recipient campaign asks about a million numbers).
_CAPABILITIES = tuple(Capability(v, rich) for v in (None, *VENDORS) for rich in (False, True))
_CODE = {c: i for i, c in enumerate(_CAPABILITIES)}
_BITS = (len(_CAPABILITIES) - 1).bit_length()
_MASK = (1 << _BITS) - 1


class CapabilityCache:
    def __init__(
        self,
        providers: Mapping[str, Any],
        clock: Clock,
        *,
        ttl_s: float = 86400.0,
        failure_ttl_s: float = 60.0,
        max_entries: int = 100_000,
    ) -> None:
        self._providers = providers
        self._clock = clock
        self._ttl_s = ttl_s
        self._failure_ttl_s = failure_ttl_s
        self._max = max_entries
        # bounded: a million-recipient campaign must not keep a million answers in memory
        # (~130 bytes an entry with its number); number → (expiry in whole seconds << _BITS)
        # | the capability's code, in the order answered (the oldest go first when full)
        self._cache: dict[str, int] = {}
        self.lookups = 0

    def forget(self, number: str) -> None:
        self._cache.pop(number, None)

    async def resolve(self, numbers: Mapping[str, str | None]) -> dict[str, Capability]:
        """``numbers`` maps each E.164 number to its carrier; answers every number's capability."""
        now = self._clock.now()
        out: dict[str, Capability] = {}
        missing: dict[str, str | None] = {}
        for number, carrier in numbers.items():
            hit = self._cache.get(number)
            if hit is not None and hit >> _BITS > now:
                out[number] = _CAPABILITIES[hit & _MASK]
                continue
            if hit is not None:  # expired: its new answer goes to the back, as the newest
                del self._cache[number]
            missing[number] = carrier
        if not missing:
            return out
        vendor_answers, carrier_answers, failed = await self._lookup(missing)
        self._make_room(len(missing))
        vendor_of: dict[str, str] = {}  # the first vendor, in VENDORS' order, that can show it
        for v in VENDORS:
            for number, capable in vendor_answers.get(v, {}).items():
                if capable:
                    vendor_of.setdefault(number, v)
        for number, carrier in missing.items():
            vendor = vendor_of.get(number)
            rich = bool(carrier and carrier_answers.get(carrier, {}).get(number))
            capability = _CAPABILITIES[_CODE[Capability(vendor, rich)]]
            ttl = self._failure_ttl_s if failed else self._ttl_s
            self._cache[number] = int(now + ttl) << _BITS | _CODE[capability]
            out[number] = capability
        return out

    def _make_room(self, coming: int) -> None:
        """Drops the oldest answers (and a tenth more, so this is not done every round)
        when ``coming`` new ones would pass the bound: the table keeps its size, where
        starting afresh made a campaign ask again about every number it had just asked."""
        over = len(self._cache) + coming - self._max
        if over <= 0:
            return
        for number in list(islice(self._cache, over + self._max // 10)):
            del self._cache[number]

    async def _lookup(
        self, missing: Mapping[str, str | None]
    ) -> tuple[dict[str, dict[str, bool]], dict[str, dict[str, bool]], bool]:
        calls: list[tuple[str, str, list[str]]] = []  # (kind, provider, numbers)
        for vendor in VENDORS:
            if hasattr(self._providers.get(vendor), "lookup_capability"):
                calls.append(("vendor", vendor, list(missing)))
        by_carrier: dict[str, list[str]] = {}
        for number, carrier in missing.items():
            if carrier in CARRIERS and hasattr(self._providers.get(carrier), "lookup_capability"):
                by_carrier.setdefault(carrier, []).append(number)
        calls += [("carrier", c, nums) for c, nums in by_carrier.items()]

        async def one(name: str, nums: list[str]) -> dict[str, bool]:
            provider: CapabilityProvider = self._providers[name]
            answers: dict[str, bool] = {}
            for start in range(0, len(nums), provider.max_lookup):
                answers.update(
                    await provider.lookup_capability(nums[start : start + provider.max_lookup])
                )
            return answers

        self.lookups += len(calls)
        results = await asyncio.gather(
            *(one(n, nums) for _, n, nums in calls), return_exceptions=True
        )
        vendors: dict[str, dict[str, bool]] = {}
        carriers: dict[str, dict[str, bool]] = {}
        failed = False
        for (kind, name, _), result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                failed = True
                log.warning("capability_lookup_failed", provider=name, error=str(result))
                continue
            (vendors if kind == "vendor" else carriers)[name] = result
        return vendors, carriers, failed
