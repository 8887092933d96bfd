"""Per-provider health for operators: success rate, latency, circuit, current rate."""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from gateway.dispatch.circuit import CircuitBreaker

RATE_SECONDS = 10  # the current rate: messages submitted over the last ten whole seconds


@dataclass
class ProviderHealth:
    """A provider's last ``window`` batches (outcome and latency) and its recent rate.

    Its figures are kept in fixed arrays, with no object per batch. A campaign records tens
    of batches a second, and a float and a tuple a batch, each kept for the next 2,000
    batches or ten seconds, were among the few objects made during a campaign that outlive
    its messages: scattered over the memory its messages took, they kept those pages from
    being given back.
    """

    name: str
    breaker: CircuitBreaker
    window: int = 2000
    submitted: int = 0
    failed: int = 0
    recorded: int = field(default=0, init=False)  # batches ever; the next slot is this % window
    _ok: bytearray = field(init=False, repr=False)  # 1: the batch was taken
    _latencies: array[float] = field(init=False, repr=False)  # seconds
    _second: array[int] = field(init=False, repr=False)  # the whole second each slot counts
    _sent: array[int] = field(init=False, repr=False)  # messages taken in that second

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")
        self._ok = bytearray(self.window)
        self._latencies = array("d", bytes(8 * self.window))
        # one slot more than the seconds counted: the current second's, still filling
        self._second = array("q", [-1] * (RATE_SECONDS + 1))
        self._sent = array("q", bytes(8 * (RATE_SECONDS + 1)))

    def record(self, ok: bool, latency_s: float, messages: int) -> None:
        slot = self.recorded % self.window
        self._ok[slot] = ok
        self._latencies[slot] = latency_s
        self.recorded += 1
        if not ok:
            self.failed += messages
            return
        self.submitted += messages
        second = int(time.monotonic())
        at = second % (RATE_SECONDS + 1)
        if self._second[at] != second:
            self._second[at] = second
            self._sent[at] = 0
        self._sent[at] += messages

    def rate_per_s(self) -> float:
        """Messages taken a second over the last ten whole seconds (not the current one)."""
        now = int(time.monotonic())
        slots = zip(self._second, self._sent, strict=True)
        return sum(n for s, n in slots if 1 <= now - s <= RATE_SECONDS) / RATE_SECONDS

    def view(self) -> dict[str, Any]:
        kept = min(self.recorded, self.window)
        lat = sorted(self._latencies[:kept])

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

        return {
            "provider": self.name,
            "circuit": self.breaker.state,
            "success_rate": round(sum(self._ok[:kept]) / kept, 4) if kept else None,
            "latency_ms": {"p50": pct(0.50), "p99": pct(0.99)},
            "rate_per_s": round(self.rate_per_s(), 1),
            "submitted": self.submitted,
            "failed": self.failed,
        }
