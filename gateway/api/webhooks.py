"""``/v1/webhook``: where a tenant's events go, and which."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.bodies import parse
from gateway.api.endpoints import READ, WRITE, Endpoint
from gateway.api.json import respond
from gateway.api.middlewares import PRINCIPAL
from gateway.dispatch.webhooks import EventType, UnsafeUrl, check_url, new_secret
from gateway.errors import InvalidInput, NotFound, Unavailable
from gateway.keys import SERVICES
from gateway.storage.webhooks import SqliteWebhooks


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    events: list[EventType] = Field(min_length=1)
    rotate_secret: bool = Field(default=False, description="a new secret even if one exists")


def _store(request: web.Request) -> SqliteWebhooks:
    webhooks = request.app[SERVICES].webhooks
    if webhooks is None:
        raise Unavailable("webhooks need the SQL store")
    return webhooks


async def put_webhook(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    tenant = request[PRINCIPAL].tenant_id
    body, _ = await parse(request, WebhookIn)
    try:
        await check_url(body.url, allow_private=services.settings.webhook_allow_private)
    except UnsafeUrl as exc:
        raise InvalidInput.field(["url"], str(exc)) from None
    existing = await _store(request).get(tenant)
    secret = existing.secret if existing and not body.rotate_secret else new_secret()
    events: list[str] = sorted(set(body.events))
    await _store(request).put(tenant, body.url, events, secret, services.clock.now())
    return respond({"url": body.url, "events": events, "secret": secret, "enabled": True})


async def get_webhook(request: web.Request) -> web.Response:
    tenant = request[PRINCIPAL].tenant_id
    endpoint = await _store(request).get(tenant)
    if endpoint is None:
        raise NotFound("no webhook set")
    return respond(
        {
            "url": endpoint.url,
            "events": endpoint.events,
            "enabled": endpoint.enabled,
            "disabled_reason": endpoint.disabled_reason,
            "recent_deliveries": await _store(request).deliveries(tenant, 20),
        }
    )


ENDPOINTS = [
    Endpoint(
        "PUT",
        "/v1/webhook",
        put_webhook,
        "Where events go (Standard Webhooks signing); answers the signing secret",
        WRITE,
        WebhookIn,
        tag="webhooks",
    ),
    Endpoint(
        "GET",
        "/v1/webhook",
        get_webhook,
        "The webhook, its state and recent deliveries",
        READ,
        tag="webhooks",
    ),
]
