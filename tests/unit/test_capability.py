"""The capability cache: answers kept for their TTL, failures briefly, memory bounded."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.clock import FrozenClock
from gateway.dispatch.capability import CapabilityCache
from gateway.domain.routing import Capability
from tests.fakes import FakeVendor

A, B = "+8613800000001", "+8613800000002"


@dataclass
class CountingVendor(FakeVendor):
    asked: list[list[str]] = field(default_factory=list)
    down: bool = False

    async def lookup_capability(self, numbers):  # type: ignore[no-untyped-def]
        self.asked.append(list(numbers))
        if self.down:
            raise RuntimeError("vendor down")
        return await super().lookup_capability(numbers)


def _cache(**kwargs: object) -> tuple[CapabilityCache, CountingVendor, FrozenClock]:
    huawei = CountingVendor("huawei", frozenset({"vendor_card"}), capable={A})
    clock = FrozenClock()
    return CapabilityCache({"huawei": huawei}, clock, **kwargs), huawei, clock  # type: ignore[arg-type]


async def test_answers_are_kept_for_their_ttl() -> None:
    cache, huawei, clock = _cache(ttl_s=100)
    got = await cache.resolve({A: "cmcc", B: "cmcc"})
    assert got == {A: Capability("huawei", False), B: Capability(None, False)}
    clock.advance(99)
    assert await cache.resolve({A: "cmcc", B: "cmcc"}) == got
    assert len(huawei.asked) == 1  # answered from the cache
    clock.advance(2)
    await cache.resolve({A: "cmcc"})
    assert huawei.asked[-1] == [A] and len(huawei.asked) == 2


async def test_a_failed_lookup_is_not_capable_briefly() -> None:
    cache, huawei, clock = _cache(ttl_s=100, failure_ttl_s=10)
    huawei.down = True
    assert await cache.resolve({A: None}) == {A: Capability(None, False)}
    huawei.down = False
    clock.advance(5)
    assert await cache.resolve({A: None}) == {A: Capability(None, False)}  # still cached
    clock.advance(6)
    assert await cache.resolve({A: None}) == {A: Capability("huawei", False)}  # asked again


async def test_forget_and_the_bound() -> None:
    cache, huawei, _ = _cache(max_entries=1)
    await cache.resolve({A: None})
    cache.forget(A)
    await cache.resolve({A: None})
    assert len(huawei.asked) == 2
    await cache.resolve({B: None})  # over the bound: A, the oldest, makes room
    await cache.resolve({A: None})
    assert len(huawei.asked) == 4


async def test_the_oldest_answers_go_first_when_full() -> None:
    numbers = [f"+86138000001{i:02d}" for i in range(30)]
    cache, huawei, _ = _cache(max_entries=20)
    await cache.resolve(dict.fromkeys(numbers[:10]))
    await cache.resolve(dict.fromkeys(numbers[10:20]))
    assert len(huawei.asked) == 2
    await cache.resolve(dict.fromkeys(numbers[20:25]))  # 5 over: the 5 oldest and 2 more go
    huawei.asked.clear()
    await cache.resolve(dict.fromkeys(numbers[:25]))
    assert huawei.asked == [numbers[:7]]  # the newer answers were kept, not all dropped


async def test_a_renewed_answer_counts_as_the_newest() -> None:
    a, b, c, d, e = (f"+861380000020{i}" for i in range(5))
    cache, huawei, clock = _cache(ttl_s=100, max_entries=4)
    await cache.resolve({a: None, b: None, c: None})
    clock.advance(101)  # all three expired
    await cache.resolve({a: None})  # a asked again: now the newest, not the oldest
    await cache.resolve({d: None})  # full
    await cache.resolve({e: None})  # one over the bound: the oldest (b) goes
    huawei.asked.clear()
    await cache.resolve({a: None})
    assert huawei.asked == []  # a's renewed answer was kept
