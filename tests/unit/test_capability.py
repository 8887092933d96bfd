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


async def test_forget() -> None:
    cache, huawei, _ = _cache()
    await cache.resolve({A: None})
    await cache.resolve({A: None})
    assert len(huawei.asked) == 1
    cache.forget(A)
    cache.forget(B)  # not there: nothing happens
    await cache.resolve({A: None})
    assert len(huawei.asked) == 2


async def test_its_memory_is_a_fixed_number_of_slots() -> None:
    """Slots are the power of two at or above the bound; a thousand numbers in 16 slots
    keep 16 answers at most, each number's newest answer in its slot."""
    cache, huawei, _ = _cache(max_entries=10)
    assert cache.slots == 16
    numbers = [f"+86138{i:08d}" for i in range(1000)]
    await cache.resolve(dict.fromkeys(numbers))
    huawei.asked.clear()
    again = await cache.resolve(dict.fromkeys(numbers))
    assert again == {n: Capability("huawei" if n == A else None, False) for n in numbers}
    asked = huawei.asked[0]
    assert 1000 - 16 <= len(asked) < 1000  # at most 16 kept, and some were


async def test_a_number_keeps_its_slot_until_another_takes_it() -> None:
    """Numbers spread over the slots: 20 near numbers in 1,024 slots all stay."""
    numbers = [f"+86138000001{i:02d}" for i in range(20)]
    cache, huawei, _ = _cache(max_entries=1024)
    await cache.resolve(dict.fromkeys(numbers))
    await cache.resolve(dict.fromkeys(numbers))
    assert len(huawei.asked) == 1


async def test_a_newer_answer_takes_the_slot_of_an_older_one() -> None:
    """Two numbers that map to one slot: the one answered last is kept, the other asked
    again (a cache that kept the first comer would answer it and ask the second)."""
    cache, huawei, _ = _cache(max_entries=16)
    first = A
    slot = cache._slot(int(first[1:]))
    second = next(
        n for n in (f"+86139{i:08d}" for i in range(100_000)) if cache._slot(int(n[1:])) == slot
    )
    await cache.resolve({first: None})
    await cache.resolve({second: None})
    huawei.asked.clear()
    await cache.resolve({second: None})
    assert huawei.asked == []  # the newer answer holds the slot
    await cache.resolve({first: None})
    assert huawei.asked == [[first]]  # the older one was taken


async def test_what_is_not_an_e164_number_is_asked_every_time() -> None:
    cache, huawei, _ = _cache()
    for _ in range(2):
        assert await cache.resolve({"+86 138": None, "+٣٣": None}) == {
            "+86 138": Capability(None, False),
            "+٣٣": Capability(None, False),
        }
    assert len(huawei.asked) == 2


async def test_a_renewed_answer_is_kept() -> None:
    cache, huawei, clock = _cache(ttl_s=100)
    await cache.resolve({A: None, B: None})
    clock.advance(101)  # both expired
    await cache.resolve({A: None})  # asked again
    huawei.asked.clear()
    clock.advance(50)
    await cache.resolve({A: None, B: None})
    assert huawei.asked == [[B]]  # A's renewed answer was kept, B's had expired
