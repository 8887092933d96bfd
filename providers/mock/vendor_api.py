"""The handset vendors' smart-message APIs, vendor style: ``/{vendor}/v1/…``.

``POST /capability``, ``/messages/batch`` and ``/templates/review``: signed, and
subject to the vendor's latency, failures and rate limit (``gate.admit``).
Delivery comes back as ``{"events": [...]}``, verdicts as ``{"reviews": [...]}``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from providers.mock.config import VENDORS
from providers.mock.delivery import Incoming, accept, is_object, rejected, remember_callback
from providers.mock.devices import hash_of_number, shows_vendor_cards
from providers.mock.events import ReviewVerdict, VendorEvent
from providers.mock.gate import MAX_BATCH, MAX_LOOKUP, CallbackUrl, admit, per_request
from providers.mock.review import rule_verdict
from providers.mock.runtime import OUTBOX, RUNTIME, answer
from providers.mock.state import is_e164

HashHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CapabilityLookup(_Model):
    """Exactly one of ``hashes`` (SHA-256 hex of E.164 numbers) or ``numbers``."""

    hashes: list[HashHex] | None = Field(default=None, min_length=1, max_length=MAX_LOOKUP)
    numbers: list[str] | None = Field(default=None, min_length=1, max_length=MAX_LOOKUP)

    @model_validator(mode="after")
    def _exactly_one(self) -> CapabilityLookup:
        if (self.hashes is None) == (self.numbers is None):
            raise ValueError("give either hashes or numbers")
        return self

    def keyed_hashes(self) -> list[tuple[str, str | None]]:
        """(key as sent, its hash or ``None`` for a non-number)."""
        if self.hashes is not None:
            return [(h, h.lower()) for h in self.hashes]
        return [(n, hash_of_number(n)) for n in self.numbers or ()]


class CardMessage(_Model):
    client_ref: str = Field(min_length=1)
    to: str
    card: Any = None  # the vendor's card payload: any non-empty JSON object
    template_ref: str | None = None


class CardBatch(_Model):
    callback_url: CallbackUrl
    messages: list[CardMessage] = Field(min_length=1, max_length=MAX_BATCH)


class ReviewRequest(_Model):
    callback_url: CallbackUrl
    template_ref: str = Field(min_length=1)
    category: Literal["marketing", "transactional"]
    card: dict[str, Any]
    sms_text: str


async def capability(request: web.Request) -> web.Response:
    """``{"hashes": [...]}`` or ``{"numbers": [...]}`` → ``{"results": {key: bool}}``."""
    admitted = await admit(request, VENDORS, CapabilityLookup, per_request)
    if isinstance(admitted, web.Response):
        return admitted
    vendor = admitted.provider
    share = request.app[RUNTIME].behaviour(vendor).capability_share
    results = {
        key: h is not None and shows_vendor_cards(h, vendor, share)
        for key, h in admitted.body.keyed_hashes()
    }
    return answer({"results": results})


async def submit_cards(request: web.Request) -> web.Response:
    """``{"callback_url", "messages": [{"client_ref", "to", "card", "template_ref"}]}``."""
    admitted = await admit(request, VENDORS, CardBatch, lambda b: len(b.messages))
    if isinstance(admitted, web.Response):
        return admitted
    vendor, batch = admitted.provider, admitted.body
    remember_callback(request.app, vendor, batch.callback_url)
    share = request.app[RUNTIME].behaviour(vendor).capability_share
    results = []
    for m in batch.messages:
        code = _refusal(vendor, share, m)
        if code is not None:
            results.append(rejected(m.client_ref, code))
            continue
        content = {"card": m.card, "template_ref": m.template_ref}
        incoming = Incoming(m.client_ref, m.to, "vendor_card", content)
        results.append(
            accept(request.app, vendor, batch.callback_url, incoming, VendorEvent, displayable=True)
        )
    return answer({"results": results})


async def review(request: web.Request) -> web.Response:
    """Take one template version for review: 202 ``{"review_id"}``, verdict called back later."""
    admitted = await admit(request, VENDORS, ReviewRequest, per_request)
    if isinstance(admitted, web.Response):
        return admitted
    vendor, req = admitted.provider, admitted.body
    rt = request.app[RUNTIME]
    behaviour = rt.behaviour(vendor)
    reason = rule_verdict(req.category, req.card, req.sms_text)
    if reason is None and rt.chance(behaviour.review_reject_rate):
        reason = "manual_review_failed"
    review_id = f"rev-{uuid.uuid4().hex}"
    verdict = ReviewVerdict(
        review_id, req.template_ref, "approved" if reason is None else "rejected", reason
    )
    request.app[OUTBOX].schedule(
        behaviour.review_delay_ms / 1000, vendor, req.callback_url, verdict
    )
    return web.json_response({"review_id": review_id}, status=202)


def _refusal(vendor: str, share: float, m: CardMessage) -> str | None:
    if not is_e164(m.to):
        return "invalid_number"
    if not is_object(m.card):
        return "bad_card"
    h = hash_of_number(m.to)
    if h is None or not shows_vendor_cards(h, vendor, share):
        return "not_capable"
    return None
