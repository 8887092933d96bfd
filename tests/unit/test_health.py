"""A provider's health: the last batches' outcomes and latencies, and its recent rate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.clock import FrozenClock
from gateway.dispatch import health
from gateway.dispatch.circuit import CircuitBreaker


def _health(window: int = 2000) -> health.ProviderHealth:
    return health.ProviderHealth("cmcc", CircuitBreaker(FrozenClock()), window=window)


class _Monotonic:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_nothing_recorded_reads_as_unknown() -> None:
    view = _health().view()
    assert view["success_rate"] is None and view["latency_ms"] == {"p50": None, "p99": None}
    assert view["rate_per_s"] == 0.0 and view["submitted"] == view["failed"] == 0


def test_the_view_covers_the_last_window_of_batches_only() -> None:
    h = _health(window=10)
    for _ in range(10):
        h.record(False, 5.0, 3)  # ten slow failures, then pushed out
    for i in range(10):
        h.record(i != 9, (i + 1) / 1000, 100)
    view = h.view()
    assert view["success_rate"] == 0.9
    assert view["latency_ms"] == {"p50": 6.0, "p99": 10.0}
    assert (view["submitted"], view["failed"]) == (900, 130)  # counts are for ever


def test_a_partly_filled_window_counts_what_it_holds() -> None:
    h = _health()
    h.record(True, 0.002, 1)
    h.record(False, 0.004, 1)
    view = h.view()
    assert view["success_rate"] == 0.5 and view["latency_ms"] == {"p50": 4.0, "p99": 4.0}


def test_the_rate_is_over_the_last_ten_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Monotonic(1000.2)
    monkeypatch.setattr(health, "time", SimpleNamespace(monotonic=clock))
    h = _health()
    h.record(True, 0.001, 50)  # second 1000
    assert h.rate_per_s() == 0.0  # the current second is not over yet
    clock.at = 1004.9
    h.record(True, 0.001, 30)  # second 1004
    h.record(False, 0.001, 999)  # a failed batch sent nothing
    assert h.rate_per_s() == 5.0
    clock.at = 1005.0
    assert h.rate_per_s() == 8.0
    clock.at = 1010.99  # second 1000 is still one of the last ten whole ones
    assert h.rate_per_s() == 8.0
    clock.at = 1011.0
    assert h.rate_per_s() == 3.0
    h.record(True, 0.001, 20)  # second 1011 takes the slot second 1000 had
    clock.at = 1012.5
    assert h.rate_per_s() == 5.0
    clock.at = 1030.0
    assert h.rate_per_s() == 0.0


def test_a_window_must_hold_a_batch() -> None:
    with pytest.raises(ValueError, match="window"):
        _health(window=0)
