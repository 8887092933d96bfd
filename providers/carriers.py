"""Carriers' APIs over HTTP: the ``sms`` and ``carrier_rich`` (5G message) routes.

Wire formats (all JSON, signed with ``X-Signature`` both ways):

* ``POST /{carrier}/v1/sms/batch`` ``{"callback_url", "messages": [{"client_ref", "to", "text"}]}``
* ``POST /{carrier}/v1/rcs/batch`` ``{"callback_url", "messages": [{"client_ref", "to",
  "message": {GSMA chatbot message}}]}``; both answer ``{"results": [...]}`` (``providers.wire``)
* ``POST /{carrier}/v1/rcs/capability`` ``{"numbers": [...]}`` → ``{"results": {number: bool}}``
* delivery reports ``{"reports": [{"client_ref", "msg_id", "status", "error_code", "done_at"}]}``
  with ``status`` ``DELIVRD`` (delivered), ``DISPLAYED`` (displayed), anything else failed
* MO ``{"messages": [{"mo_id", "from", "text", "received_at"}]}``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.dispatch.ports import (
    DeliveryReport,
    InboundMessage,
    ReportStatus,
    RouteKind,
    Submission,
    SubmitOutcome,
)
from providers.batching import by_route, check_batch, payload_required, post_batch
from providers.http import HttpProvider, parse_callback, reported_at
from providers.wire import CapabilityResponse, WireModel, capability_answers, inbound

if TYPE_CHECKING:
    from gateway.dispatch.ports import CapabilityProvider, Provider

# SMPP's final states (a DLR's ``stat``), and the carriers' own display receipt. A state
# not named here (ACCEPTD, ENROUTE: on its way; a code we do not know) settles nothing: a
# message is never failed by a report that does not say it failed.
_STATUSES: dict[str, ReportStatus] = {
    "DELIVRD": "delivered",
    "DISPLAYED": "displayed",
    "UNDELIV": "failed",
    "REJECTD": "failed",
    "EXPIRED": "failed",
    "DELETED": "failed",
    "UNKNOWN": "failed",
}


class _Report(WireModel):
    client_ref: str
    msg_id: str
    status: str
    error_code: str | None = None
    done_at: str | None = None


class _ReportsBody(WireModel):
    reports: list[_Report]


class HttpCarrier(HttpProvider):
    """One carrier: SMS and 5G rich messages in batches of up to 100, signed both ways.

    A batch may mix ``sms`` and ``carrier_rich``: it is split into one request
    per route, sent concurrently (see ``providers.batching.by_route`` for how
    errors of a part come back). A ``carrier_rich`` submission's ``payload`` is
    the chatbot message; one without a payload fails with ``missing_payload``.
    """

    routes: frozenset[RouteKind] = frozenset({"sms", "carrier_rich"})

    async def submit(self, batch: Sequence[Submission], callback_url: str) -> list[SubmitOutcome]:
        check_batch(self.name, self.routes, self.max_batch, batch)

        async def send(route: RouteKind, part: Sequence[Submission]) -> list[SubmitOutcome]:
            if route == "sms":
                return await post_batch(
                    self._api, "/sms/batch", part, callback_url, lambda s: {"text": s.text}
                )
            return await payload_required(
                part,
                lambda sendable: post_batch(
                    self._api,
                    "/rcs/batch",
                    sendable,
                    callback_url,
                    lambda s: {"message": s.payload},
                ),
            )

        return await by_route(batch, send)

    async def lookup_capability(self, numbers: Sequence[str]) -> dict[str, bool]:
        """Which numbers can receive this carrier's 5G messages (sent as numbers)."""
        if len(numbers) > self.max_lookup:
            raise ValueError(f"{self.name}: lookup of {len(numbers)} over {self.max_lookup}")
        if not numbers:
            return {}
        keys = {n: n for n in numbers}
        answer = await self._api.post(
            "/rcs/capability", {"numbers": list(keys)}, CapabilityResponse
        )
        return capability_answers(self.name, keys, answer)

    def parse_reports(self, body: bytes) -> list[DeliveryReport]:
        parsed = parse_callback(_ReportsBody, body, "delivery reports")
        return [
            DeliveryReport(
                message_id=r.client_ref,
                provider_ref=r.msg_id,
                status=_STATUSES[r.status],
                at=reported_at(r.done_at),
                error_code=r.error_code,
            )
            for r in parsed.reports
            if r.status in _STATUSES
        ]

    def parse_inbound(self, body: bytes) -> list[InboundMessage]:
        return inbound(body)


if TYPE_CHECKING:

    def _conforms(c: HttpCarrier) -> tuple[Provider, CapabilityProvider]:
        return c, c
