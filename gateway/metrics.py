"""Prometheus metrics, in a registry of the app's own (tests build many apps)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "gateway_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
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

    def update_providers(self, views: list[dict[str, Any]]) -> None:
        for v in views:
            name = v["provider"]
            self.provider_circuit.labels(name).set(0 if v["circuit"] == "closed" else 1)
            if v["success_rate"] is not None:
                self.provider_success.labels(name).set(v["success_rate"])
            self.provider_rate.labels(name).set(v["rate_per_s"])

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Counts a request; the labelled children are cached (``labels()`` is not free)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.request_seconds.labels(route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
