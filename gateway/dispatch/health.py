"""Per-provider health for operators: success rate, latency, circuit, current rate."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.dispatch.circuit import CircuitBreaker


@dataclass
class ProviderHealth:
    name: str
    breaker: CircuitBreaker
    window: int = 2000
    submitted: int = 0
    failed: int = 0
    _results: deque[bool] = field(default_factory=lambda: deque(maxlen=2000))
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    _sent: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic, messages)

    def record(self, ok: bool, latency_s: float, messages: int) -> None:
        self._results.append(ok)
        self._latencies.append(latency_s)
        if ok:
            self.submitted += messages
            now = time.monotonic()
            self._sent.append((now, messages))
            while self._sent and self._sent[0][0] < now - 10:
                self._sent.popleft()
        else:
            self.failed += messages

    def rate_per_s(self) -> float:
        now = time.monotonic()
        return sum(n for t, n in self._sent if t >= now - 10) / 10.0

    def view(self) -> dict[str, Any]:
        lat = sorted(self._latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

        return {
            "provider": self.name,
            "circuit": self.breaker.state,
            "success_rate": round(statistics.fmean(self._results), 4) if self._results else None,
            "latency_ms": {"p50": pct(0.50), "p99": pct(0.99)},
            "rate_per_s": round(self.rate_per_s(), 1),
            "submitted": self.submitted,
            "failed": self.failed,
        }
