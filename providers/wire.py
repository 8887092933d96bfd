"""Answers and callbacks that carriers and vendors word alike, and their port types.

* batch answer: ``{"results": [{"client_ref", "msg_id", "status": "accepted"} |
  {"client_ref", "status": "rejected", "code"}]}``
* capability answer: ``{"results": {"<key as sent>": true | false}}``
* MO callback: ``{"messages": [{"mo_id", "from", "text", "received_at"}]}``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from gateway.dispatch.ports import InboundMessage, Submission, SubmitOutcome
from gateway.errors import PermanentProviderError, ProviderError, RetryableProviderError
from providers.http import parse_callback


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SubmitResult(WireModel):
    client_ref: str
    status: Literal["accepted", "rejected"]
    msg_id: str | None = None
    code: str | None = None


class SubmitResponse(WireModel):
    results: list[SubmitResult]


class CapabilityResponse(WireModel):
    results: dict[str, StrictBool]


class _Mo(WireModel):
    mo_id: str | None = None
    from_: str = Field(alias="from")
    text: str
    received_at: str | None = None
    in_reply_to: str | None = None  # the client_ref of the message the phone answered


class _MoBody(WireModel):
    messages: list[_Mo]


def outcomes(sent: Sequence[Submission], response: SubmitResponse) -> list[SubmitOutcome]:
    """One outcome per submission, in order, from the provider's results by ``client_ref``."""
    results = {r.client_ref: r for r in response.results}
    return [outcome(s.message_id, results.get(s.message_id)) for s in sent]


def outcome(message_id: str, result: SubmitResult | None) -> SubmitOutcome:
    """A rejection is permanent for that message; a missing or odd answer is retryable
    (resubmitting is safe: providers dedupe by ``client_ref``)."""
    error: ProviderError
    if result is None:
        error = RetryableProviderError("missing_result", "provider did not answer for it")
    elif result.status == "rejected":
        error = PermanentProviderError(result.code or "rejected")
    elif result.msg_id:
        return SubmitOutcome(message_id, provider_ref=result.msg_id)
    else:
        error = RetryableProviderError("bad_response", "accepted without msg_id")
    return SubmitOutcome(message_id, error=error)


def capability_answers(
    name: str, keys: Mapping[str, str], response: CapabilityResponse
) -> dict[str, bool]:
    """The answer for each number, from ``keys`` (number → key sent) and the response."""
    missing = [key for key in keys.values() if key not in response.results]
    if missing:
        raise RetryableProviderError(
            "bad_response", f"{name}: no capability answer for {len(missing)} of them"
        )
    return {number: response.results[key] for number, key in keys.items()}


def inbound(body: bytes) -> list[InboundMessage]:
    """Replies from phones in a verified MO callback body; ``ValueError`` if malformed."""
    parsed = parse_callback(_MoBody, body, "inbound messages")
    return [
        InboundMessage(
            from_number=m.from_,
            text=m.text,
            provider_ref=m.mo_id,
            at=m.received_at,
            in_reply_to=m.in_reply_to,
        )
        for m in parsed.messages
    ]
