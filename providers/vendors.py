"""Handset vendors' smart-message APIs over HTTP: the ``vendor_card`` route.

Wire formats (all JSON, signed with ``X-Signature`` both ways):

* ``POST /{vendor}/v1/messages/batch`` ``{"callback_url", "messages": [{"client_ref", "to",
  "card": {vendor payload}, "template_ref"?}]}`` → ``{"results": [...]}`` (``providers.wire``)
* ``POST /{vendor}/v1/capability`` ``{"hashes": [sha256 hex of E.164]}`` →
  ``{"results": {hash: bool}}``; numbers never leave the gateway
* ``POST /{vendor}/v1/templates/review`` ``{"callback_url", "template_ref", "category",
  "card", "sms_text"}`` → 202 ``{"review_id"}``
* delivery events ``{"events": [{"ref", "id", "state", "reason", "timestamp"}]}`` with
  ``state`` ``DELIVERED`` / ``FAILED`` / ``DISPLAYED``
* review verdicts ``{"reviews": [{"review_id", "template_ref", "status", "reason"}]}``
* MO: vendors' phones reply through the same shape as carriers'
  (``{"messages": [{"mo_id", "from", "text", "received_at"}]}``), so ``parse_inbound``
  reads it like ``HttpCarrier`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from gateway.dispatch.ports import (
    DeliveryReport,
    InboundMessage,
    ReportStatus,
    ReviewResult,
    RouteKind,
    Submission,
    SubmitOutcome,
)
from providers.batching import check_batch, payload_required, post_batch
from providers.http import HttpProvider, parse_callback, reported_at
from providers.numbers import number_hash
from providers.wire import CapabilityResponse, WireModel, capability_answers, inbound

if TYPE_CHECKING:
    from gateway.dispatch.ports import CapabilityProvider, Provider, TemplateReviewer

_STATES: dict[str, ReportStatus] = {
    "DELIVERED": "delivered",
    "FAILED": "failed",
    "DISPLAYED": "displayed",
}


class _Event(WireModel):
    ref: str
    id: str
    state: Literal["DELIVERED", "FAILED", "DISPLAYED"]
    reason: str | None = None
    timestamp: str | None = None


class _EventsBody(WireModel):
    events: list[_Event]


class _Review(WireModel):
    review_id: str
    template_ref: str
    status: Literal["approved", "rejected"]
    reason: str | None = None


class _ReviewsBody(WireModel):
    reviews: list[_Review]


class _ReviewTaken(WireModel):
    review_id: str


class HttpVendor(HttpProvider):
    """One handset vendor: cards in batches of up to 100, lookups, template reviews.

    A submission's ``payload`` is the vendor's card; one without a payload fails
    with ``missing_payload``. If the card has a top-level string ``template_ref``
    it is also sent as the message's ``template_ref``. A number that cannot show
    this vendor's cards comes back as ``PermanentProviderError("not_capable")``.
    """

    routes: frozenset[RouteKind] = frozenset({"vendor_card"})

    async def submit(self, batch: Sequence[Submission], callback_url: str) -> list[SubmitOutcome]:
        check_batch(self.name, self.routes, self.max_batch, batch)
        if not batch:
            return []
        return await payload_required(
            batch,
            lambda sendable: post_batch(
                self._api, "/messages/batch", sendable, callback_url, _card_fields
            ),
        )

    async def lookup_capability(self, numbers: Sequence[str]) -> dict[str, bool]:
        """Which numbers can show this vendor's cards; only their SHA-256 hashes are sent."""
        if len(numbers) > self.max_lookup:
            raise ValueError(f"{self.name}: lookup of {len(numbers)} over {self.max_lookup}")
        if not numbers:
            return {}
        keys = {n: number_hash(n) for n in numbers}
        hashes = list(dict.fromkeys(keys.values()))
        answer = await self._api.post("/capability", {"hashes": hashes}, CapabilityResponse)
        return capability_answers(self.name, keys, answer)

    async def submit_review(
        self,
        template_ref: str,
        category: str,
        card: dict[str, Any],
        sms_text: str,
        callback_url: str,
    ) -> str:
        payload = {
            "callback_url": callback_url,
            "template_ref": template_ref,
            "category": category,
            "card": card,
            "sms_text": sms_text,
        }
        return (await self._api.post("/templates/review", payload, _ReviewTaken)).review_id

    def parse_reports(self, body: bytes) -> list[DeliveryReport]:
        """Delivery events; an unknown ``state`` makes the whole body malformed."""
        parsed = parse_callback(_EventsBody, body, "delivery events")
        return [
            DeliveryReport(
                message_id=e.ref,
                provider_ref=e.id,
                status=_STATES[e.state],
                at=reported_at(e.timestamp),
                error_code=e.reason,
            )
            for e in parsed.events
        ]

    def parse_reviews(self, body: bytes) -> list[ReviewResult]:
        parsed = parse_callback(_ReviewsBody, body, "review verdicts")
        return [
            ReviewResult(
                template_ref=r.template_ref, status=r.status, reason=r.reason, review_id=r.review_id
            )
            for r in parsed.reviews
        ]

    def parse_inbound(self, body: bytes) -> list[InboundMessage]:
        return inbound(body)


def _card_fields(s: Submission) -> dict[str, Any]:
    fields: dict[str, Any] = {"card": s.payload}
    template_ref = (s.payload or {}).get("template_ref")
    if isinstance(template_ref, str):
        fields["template_ref"] = template_ref
    return fields


if TYPE_CHECKING:

    def _conforms(v: HttpVendor) -> tuple[Provider, CapabilityProvider, TemplateReviewer]:
        return v, v, v
