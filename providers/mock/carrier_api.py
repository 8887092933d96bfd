"""The carriers' APIs: SMS and 5G rich messages (RCS chatbot), carrier style.

``POST /{carrier}/v1/sms/batch``, ``/rcs/capability`` and ``/rcs/batch``: signed,
and subject to the carrier's latency, failures and rate limit (``gate.admit``).
SMS and rich messages count as one provider and share one ``client_ref`` space.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from providers.mock.config import CARRIERS
from providers.mock.delivery import Incoming, accept, is_object, rejected, remember_callback
from providers.mock.devices import carrier_capable, hash_of_number
from providers.mock.events import CarrierReport
from providers.mock.gate import MAX_BATCH, MAX_LOOKUP, CallbackUrl, admit, per_request
from providers.mock.runtime import RUNTIME, answer
from providers.mock.state import is_e164


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SmsMessage(_Model):
    client_ref: str = Field(min_length=1)
    to: str
    text: str


class SmsBatch(_Model):
    callback_url: CallbackUrl
    messages: list[SmsMessage] = Field(min_length=1, max_length=MAX_BATCH)


class RcsMessage(_Model):
    client_ref: str = Field(min_length=1)
    to: str
    message: Any = None  # a GSMA chatbot message: any non-empty JSON object


class RcsBatch(_Model):
    callback_url: CallbackUrl
    messages: list[RcsMessage] = Field(min_length=1, max_length=MAX_BATCH)


class NumbersLookup(_Model):
    numbers: list[str] = Field(min_length=1, max_length=MAX_LOOKUP)


async def submit_sms(request: web.Request) -> web.Response:
    """``{"callback_url", "messages": [{"client_ref", "to", "text"}]}`` → ``{"results": [...]}``."""
    admitted = await admit(request, CARRIERS, SmsBatch, lambda b: len(b.messages))
    if isinstance(admitted, web.Response):
        return admitted
    carrier, batch = admitted.provider, admitted.body
    remember_callback(request.app, carrier, batch.callback_url)
    results = []
    for m in batch.messages:
        if not is_e164(m.to):
            results.append(rejected(m.client_ref, "invalid_number"))
            continue
        incoming = Incoming(m.client_ref, m.to, "sms", {"text": m.text})
        results.append(
            accept(
                request.app, carrier, batch.callback_url, incoming, CarrierReport, displayable=False
            )
        )
    return answer({"results": results})


async def rcs_capability(request: web.Request) -> web.Response:
    """``{"numbers": [...]}`` → ``{"results": {number as sent: bool}}``; counts nothing."""
    admitted = await admit(request, CARRIERS, NumbersLookup, per_request)
    if isinstance(admitted, web.Response):
        return admitted
    share = request.app[RUNTIME].behaviour(admitted.provider).capability_share
    results = {n: _capable(hash_of_number(n), share) for n in admitted.body.numbers}
    return answer({"results": results})


async def submit_rcs(request: web.Request) -> web.Response:
    """``{"callback_url", "messages": [{"client_ref", "to", "message"}]}`` → ``{"results"}``."""
    admitted = await admit(request, CARRIERS, RcsBatch, lambda b: len(b.messages))
    if isinstance(admitted, web.Response):
        return admitted
    carrier, batch = admitted.provider, admitted.body
    remember_callback(request.app, carrier, batch.callback_url)
    share = request.app[RUNTIME].behaviour(carrier).capability_share
    results = []
    for m in batch.messages:
        code = _rcs_refusal(m, share)
        if code is not None:
            results.append(rejected(m.client_ref, code))
            continue
        incoming = Incoming(m.client_ref, m.to, "carrier_rich", {"message": m.message})
        results.append(
            accept(
                request.app, carrier, batch.callback_url, incoming, CarrierReport, displayable=True
            )
        )
    return answer({"results": results})


def _rcs_refusal(m: RcsMessage, share: float) -> str | None:
    if not is_e164(m.to):
        return "invalid_number"
    if not is_object(m.message):
        return "bad_message"
    if not _capable(hash_of_number(m.to), share):
        return "not_capable"
    return None


def _capable(h: str | None, share: float) -> bool:
    return h is not None and carrier_capable(h, share)
