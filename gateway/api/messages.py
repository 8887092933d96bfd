"""``/v1/messages``: accept a send, read a message with its events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from cards.targets import route_payload
from gateway.api.bodies import idempotency_key, parse, path_id
from gateway.api.endpoints import IDEMPOTENCY_KEY, READ, WRITE, Endpoint
from gateway.api.json import respond
from gateway.api.middlewares import PRINCIPAL
from gateway.clock import event_json, to_rfc3339
from gateway.domain.messages import MessageView, Rendered
from gateway.domain.phones import mask
from gateway.errors import NotFound
from gateway.keys import SERVICES
from gateway.usecases.revoke import revoke
from gateway.usecases.sending import SendAccepted, SendRequest, request_hash


class MessageOut(BaseModel):
    """``GET /v1/messages/{message_id}``."""

    message_id: str
    to: str
    status: str
    reason: str | None
    route: str | None
    provider: str | None
    template_id: str
    template_version: int
    campaign_id: str | None
    client_ref: str | None
    rendered: dict[str, Any]
    events: list[dict[str, Any]]
    created_at: str
    updated_at: str
    expires_at: str


async def send(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    req, raw = await parse(request, SendRequest)
    key = idempotency_key(request)
    result = await services.sender.send(
        request[PRINCIPAL], req, idempotency_key=key, body_hash=request_hash(raw) if key else ""
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return respond({"message_id": result.message_id, "status": "accepted"}, 202, headers)


async def get_message(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    principal = request[PRINCIPAL]
    view = await services.store.get_message(principal.tenant_id, path_id(request, "message_id"))
    if view is None:
        raise NotFound("no such message")
    return respond(message_json(view, masked=principal.role != "campaign"))


async def revoke_message(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    out = await revoke(
        services.store,
        services.providers,
        services.clock,
        request[PRINCIPAL].tenant_id,
        path_id(request, "message_id"),
    )
    if out["status"] == "revoked":
        services.metrics.entered("revoked")
    return respond(out)


def _without_code(stored: Rendered) -> Rendered:
    """A one-time code is the recipient's alone: ops keys read its messages with the code
    blanked out wherever it appears (the text, the card, so the payloads built from it)."""
    code = (stored.card or {}).get("code")
    if stored.kind != "otp" or not isinstance(code, str) or not code:
        return stored
    blank = "•" * len(code)

    def hide(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(code, blank)
        if isinstance(value, dict):
            return {k: hide(v) for k, v in value.items()}
        if isinstance(value, list):
            return [hide(v) for v in value]
        return value

    return replace(stored, text=hide(stored.text), card=hide(stored.card))


def message_json(view: MessageView, *, masked: bool) -> dict[str, Any]:
    stored = Rendered.from_dict(view.rendered)
    if masked:
        stored = _without_code(stored)
    rendered: dict[str, Any] = {"text": stored.text}
    if stored.card is not None:
        rendered["card"] = stored.card
        if view.route in ("carrier_rich", "vendor_card") and view.provider:
            rendered["payload"] = route_payload(
                view.route, view.provider, stored.card, stored.kind, stored.brand
            )
    if stored.error:
        rendered["error"] = stored.error
    return {
        "message_id": view.id,
        "to": mask(view.to) if masked else view.to,
        "status": view.status,
        "reason": view.reason,
        "route": view.route,
        "provider": view.provider,
        "category": view.category,
        "template_id": view.template_id,
        "template_version": view.template_version,
        "campaign_id": view.campaign_id,
        "client_ref": view.client_ref,
        "rendered": rendered,
        "events": [event_json(e.type, e.at, e.data) for e in view.events],
        "created_at": to_rfc3339(view.created_at),
        "updated_at": to_rfc3339(view.updated_at),
        "expires_at": to_rfc3339(view.expires_at),
    }


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/messages/{message_id}/revoke",
        revoke_message,
        "Withdraw a message not yet delivered (the provider is asked if it has it)",
        WRITE,
        tag="messages",
    ),
    Endpoint(
        "POST",
        "/v1/messages",
        send,
        "Send one message",
        WRITE,
        SendRequest,
        SendAccepted,
        202,
        "messages",
        headers=(IDEMPOTENCY_KEY,),
    ),
    Endpoint(
        "GET",
        "/v1/messages/{message_id}",
        get_message,
        "A message and its events",
        READ,
        response=MessageOut,
        tag="messages",
    ),
]
