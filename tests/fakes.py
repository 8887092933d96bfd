"""In-repo fakes of the gateway's ports, handed to ``create_app`` instead of monkeypatching."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.dispatch.ports import (
    DeliveryReport,
    InboundMessage,
    ReviewResult,
    RouteKind,
    Submission,
    SubmitOutcome,
)
from gateway.errors import ProviderError
from providers import signing

SECRET = b"test-secret"


@dataclass
class FakeProvider:
    """A provider that records submissions; ``fail_next`` raises errors for the next batches;
    while ``hold`` is an unset event, every batch waits for it (a provider that hangs)."""

    name: str
    routes: frozenset[RouteKind] = frozenset({"sms"})
    max_batch: int = 100
    submitted: list[Submission] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    fail_next: list[ProviderError] = field(default_factory=list)
    reject: dict[str, ProviderError] = field(default_factory=dict)
    delivered: set[str] = field(default_factory=set)
    recalled: set[str] = field(default_factory=set)
    hold: asyncio.Event | None = None

    async def submit(self, batch: Sequence[Submission], callback_url: str) -> list[SubmitOutcome]:
        assert len(batch) <= self.max_batch
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.callbacks.append(callback_url)
        out = []
        for s in batch:
            if s.to in self.reject:
                out.append(SubmitOutcome(s.message_id, error=self.reject[s.to]))
            else:
                self.submitted.append(s)
                out.append(SubmitOutcome(s.message_id, provider_ref=f"{self.name}-{s.message_id}"))
        return out

    async def recall(self, client_ref: str) -> tuple[bool, str | None]:
        if client_ref in self.delivered:
            return False, "already_delivered"
        self.recalled.add(client_ref)
        return True, None

    def verify(self, body: bytes, signature: str | None) -> bool:
        return signing.verify(SECRET, body, signature)

    def parse_reports(self, body: bytes) -> list[DeliveryReport]:
        data = json.loads(body)
        try:
            return [
                DeliveryReport(r["client_ref"], r["msg_id"], r["status"], r.get("done_at"))
                for r in data["reports"]
            ]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed: {exc}") from None

    def parse_inbound(self, body: bytes) -> list[InboundMessage]:
        data = json.loads(body)
        return [
            InboundMessage(
                m["from"], m["text"], provider_ref=m.get("mo_id"), in_reply_to=m.get("in_reply_to")
            )
            for m in data["messages"]
        ]

    async def close(self) -> None:
        pass


def report_body(*reports: tuple[str, str, str]) -> tuple[bytes, str]:
    """A signed fake delivery-report body from ``(message_id, provider_ref, status)`` tuples."""
    body = json.dumps(
        {"reports": [{"client_ref": m, "msg_id": r, "status": s} for m, r, s in reports]}
    ).encode()
    return body, signing.sign(SECRET, body)


@dataclass
class FakeVendor(FakeProvider):
    """A handset vendor: card messages, capability lookups and template review."""

    routes: frozenset[RouteKind] = frozenset({"vendor_card"})
    max_lookup: int = 10_000
    capable: set[str] = field(default_factory=set)
    review_requests: list[dict[str, Any]] = field(default_factory=list)
    review_fail_next: list[ProviderError] = field(default_factory=list)

    async def lookup_capability(self, numbers: Sequence[str]) -> dict[str, bool]:
        return {n: n in self.capable for n in numbers}

    async def submit_review(
        self,
        template_ref: str,
        category: str,
        card: dict[str, Any],
        sms_text: str,
        callback_url: str,
    ) -> str:
        if self.review_fail_next:
            raise self.review_fail_next.pop(0)
        review_id = f"{self.name}-r{len(self.review_requests) + 1}"
        self.review_requests.append(
            {
                "review_id": review_id,
                "template_ref": template_ref,
                "category": category,
                "card": card,
                "sms_text": sms_text,
                "callback_url": callback_url,
            }
        )
        return review_id

    def parse_reviews(self, body: bytes) -> list[ReviewResult]:
        data = json.loads(body)
        return [
            ReviewResult(r["template_ref"], r["status"], r.get("reason"), r.get("review_id"))
            for r in data["reviews"]
        ]


def review_body(*verdicts: tuple[str, str, str, str | None]) -> tuple[bytes, str]:
    """A signed verdict batch from ``(review_id, template_ref, status, reason)`` tuples."""
    body = json.dumps(
        {
            "reviews": [
                {"review_id": i, "template_ref": ref, "status": s, "reason": r}
                for i, ref, s, r in verdicts
            ]
        }
    ).encode()
    return body, signing.sign(SECRET, body)
