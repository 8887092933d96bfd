"""Prometheus metrics, in a registry of the app's own (tests build many apps)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = RequestStats()
        self.registry.register(self.http)
        self.messages = Counter(
            "gateway_messages_total",
            "Messages entering a status",
            ["status"],
            registry=self.registry,
        )
        self.dispatch_seconds = Histogram(
            "gateway_dispatch_seconds",
            "Provider submission latency per batch",
            ["provider"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.dispatch_attempts = Counter(
            "gateway_dispatch_attempts_total",
            "Provider submissions per outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.queue_claimed = Counter(
            "gateway_queue_claimed_total",
            "Messages claimed from the dispatch queue",
            registry=self.registry,
        )
        self.reports = Counter(
            "gateway_delivery_reports_total",
            "Delivery reports received",
            ["provider", "result"],
            registry=self.registry,
        )
        self.provider_circuit = Gauge(
            "gateway_provider_circuit_open",
            "1 while a provider's circuit is open or half-open",
            ["provider"],
            registry=self.registry,
        )
        self.provider_success = Gauge(
            "gateway_provider_success_ratio",
            "Share of recent submissions a provider accepted",
            ["provider"],
            registry=self.registry,
        )
        self.provider_rate = Gauge(
            "gateway_provider_rate_per_second",
            "Messages submitted to a provider per second, last 10 s",
            ["provider"],
            registry=self.registry,
        )
        self.inflight = Gauge(
            "gateway_dispatch_inflight", "Provider submissions in flight", registry=self.registry
        )

        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._status_children: dict[str, Any] = {}

    def entered(self, status: str, count: int = 1) -> None:
        """``count`` messages entered ``status`` (the labelled child looked up once)."""
        child = self._status_children.get(status)
        if child is None:
            child = self._status_children[status] = self.messages.labels(status)
        child.inc(count)

    def update_providers(self, views: list[dict[str, Any]]) -> None:
        for v in views:
            name = v["provider"]
            self.provider_circuit.labels(name).set(0 if v["circuit"] == "closed" else 1)
            if v["success_rate"] is not None:
                self.provider_success.labels(name).set(v["success_rate"])
            self.provider_rate.labels(name).set(v["rate_per_s"])

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.observe(method, route, status, seconds)


BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class RequestStats:
    """Request counts and latencies in plain numbers, turned into Prometheus families only
    when scraped: on the request path this costs a dict lookup and a bisect, not the
    locks ``prometheus_client``'s own metrics take on every update (the event loop is the
    only writer, so none are needed)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # per route: bucket counts…, +Inf, sum

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        row = self.latency.get(route)
        if row is None:
            row = self.latency[route] = [0.0] * (len(BUCKETS) + 2)
        row[bisect.bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            "gateway_http_requests", "HTTP requests", labels=["method", "route", "status"]
        )
        for (method, route, status), n in sorted(self.counts.items()):
            counter.add_metric([method, route, str(status)], n)
        yield counter
        histogram = HistogramMetricFamily(
            "gateway_http_request_seconds", "HTTP request latency", labels=["route"]
        )
        for route, row in sorted(self.latency.items()):
            cumulative: float = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip((*BUCKETS, float("inf")), row[:-1], strict=True):
                cumulative += in_bucket
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            histogram.add_metric([route], buckets, row[-1])
        yield histogram
