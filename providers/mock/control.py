"""The test and demo controls: ``/_mock/*`` and ``/healthz``."""

from __future__ import annotations

import json
import uuid

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from providers.mock.config import PROVIDERS, Behaviour
from providers.mock.runtime import OUTBOX, RUNTIME, SESSION, describe, error
from providers.mock.state import normalise_number, utc_now
from providers.signing import sign


class MoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    provider: str
    from_: str = Field(alias="from")
    text: str
    callback_url: str | None = None


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    """Per provider: every submission accepted, and how many distinct client refs."""
    return web.json_response(request.app[RUNTIME].state.stats())


async def inbox(request: web.Request) -> web.Response:
    """What one phone has received, oldest first."""
    to = normalise_number(request.query.get("to", ""))
    if to is None:
        return error(400, "to: a phone number is required")
    return web.json_response({"messages": request.app[RUNTIME].state.inbox(to)})


async def reset(request: web.Request) -> web.Response:
    request.app[RUNTIME].state.reset()
    return web.json_response({"status": "ok"})


async def send_mo(request: web.Request) -> web.Response:
    """Make a provider send the gateway a signed reply from a phone."""
    rt = request.app[RUNTIME]
    try:
        mo = MoRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return error(400, describe(exc))
    if mo.provider not in PROVIDERS:
        return error(400, f"provider: unknown provider {mo.provider!r}")
    from_number = normalise_number(mo.from_)
    if from_number is None:
        return error(400, "from: not a phone number")

    base = rt.state.callback_bases.get(mo.provider, f"http://127.0.0.1:{rt.settings.port}")
    url = mo.callback_url or f"{base}/callbacks/{mo.provider}/mo"
    message = {
        "mo_id": f"mo-{uuid.uuid4().hex}",
        "from": from_number,
        "text": mo.text,
        "received_at": utc_now(),
        # the phone answers the thread of the last message it got
        "in_reply_to": rt.state.last_ref_to(from_number),
    }
    body = json.dumps({"messages": [message]}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Signature": sign(rt.secret(mo.provider), body),
    }
    try:
        async with request.app[SESSION].post(url, data=body, headers=headers) as resp:
            return web.json_response({"status": resp.status})
    except (aiohttp.ClientError, TimeoutError) as exc:
        return error(502, f"gateway unreachable at {url}: {type(exc).__name__}")


async def set_behaviour(request: web.Request) -> web.Response:
    """Change one provider's behaviour while running (a provider dies, then recovers).

    Body: ``{"provider": "huawei", "failure_rate": 1.0, …}`` with any ``Behaviour`` keys;
    the rest stay as they were. Answers the provider's behaviour now.
    """
    rt = request.app[RUNTIME]
    try:
        data = json.loads(await request.read())
        name = data.pop("provider")
    except (ValueError, KeyError, TypeError, AttributeError):
        return error(400, 'send {"provider": name, <behaviour keys>}')
    if name not in PROVIDERS:
        return error(400, f"provider: unknown provider {name!r}")
    try:
        updated = Behaviour.model_validate(rt.behaviour(name).model_dump() | data)
    except ValidationError as exc:
        return error(400, describe(exc))
    rt.behaviours[name] = updated
    return web.json_response({name: updated.model_dump()})


class RecallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_ref: str


async def recall(request: web.Request) -> web.Response:
    """``POST /{provider}/v1/recall`` ``{"client_ref"}``: withdraw a message not yet delivered.

    Answers ``{"client_ref", "recalled": true}`` if the phone had not got it yet (its
    reports are cancelled), else ``"recalled": false`` with a reason."""
    from providers.mock.gate import admit, per_request

    admitted = await admit(request, PROVIDERS, RecallRequest, per_request)
    if isinstance(admitted, web.Response):
        return admitted
    ref = admitted.body.client_ref
    rt = request.app[RUNTIME]
    if (admitted.provider, ref) not in rt.state.seen_refs():
        return web.json_response({"client_ref": ref, "recalled": False, "reason": "unknown"})
    recalled = request.app[OUTBOX].recall(admitted.provider, ref)
    reason = None if recalled else "already_delivered"
    return web.json_response({"client_ref": ref, "recalled": recalled, "reason": reason})
