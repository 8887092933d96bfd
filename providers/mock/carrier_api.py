"""The carriers' SMS submission API: ``POST /{carrier}/v1/sms/batch``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from yarl import URL

from providers.mock.config import CARRIERS
from providers.mock.outbox import Report
from providers.mock.runtime import OUTBOX, RUNTIME, Runtime, describe, error
from providers.mock.state import is_e164, retry_after
from providers.signing import verify

MAX_BATCH = 100


class BatchMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    client_ref: str = Field(min_length=1)
    to: str
    text: str


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    callback_url: str
    messages: list[BatchMessage] = Field(min_length=1, max_length=MAX_BATCH)

    @field_validator("callback_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an absolute http(s) URL")
        return value


async def submit_batch(request: web.Request) -> web.Response:
    """Check signature and body, apply the carrier's behaviour, accept each message."""
    rt = request.app[RUNTIME]
    carrier = request.match_info["carrier"]
    if carrier not in CARRIERS:
        return error(404, f"unknown carrier {carrier!r}")
    body = await request.read()
    if not verify(rt.secret(carrier), body, request.headers.get("X-Signature")):
        return error(401, "bad signature")
    try:
        batch = BatchRequest.model_validate_json(body)
    except ValidationError as exc:
        return error(400, describe(exc))
    rt.state.callback_bases[carrier] = str(URL(batch.callback_url).origin())

    behaviour = rt.behaviour(carrier)
    if behaviour.latency_ms > 0:
        await asyncio.sleep(behaviour.latency_ms / 1000)
    if rt.chance(behaviour.failure_rate):
        return error(503, "unavailable")
    wait_s = rt.take(carrier, len(batch.messages))
    if wait_s > 0:
        return error(429, "rate limited", headers={"Retry-After": str(retry_after(wait_s))})

    results = [_accept(request.app, rt, carrier, batch.callback_url, m) for m in batch.messages]
    return web.json_response({"results": results})


def _accept(
    app: web.Application, rt: Runtime, carrier: str, callback_url: str, message: BatchMessage
) -> dict[str, Any]:
    if not is_e164(message.to):
        return {"client_ref": message.client_ref, "status": "rejected", "code": "invalid_number"}
    accepted = rt.state.accept(carrier, message.client_ref, message.to, message.text)
    if accepted.is_new:
        behaviour = rt.behaviour(carrier)
        if rt.chance(behaviour.dlr_failure_rate):
            report = Report(message.client_ref, accepted.msg_id, "UNDELIV", "UNDELIV:001")
        else:
            report = Report(message.client_ref, accepted.msg_id, "DELIVRD")
        app[OUTBOX].schedule(behaviour.dlr_delay_ms / 1000, carrier, callback_url, report)
    return {"client_ref": message.client_ref, "msg_id": accepted.msg_id, "status": "accepted"}
