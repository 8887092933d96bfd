"""``/callbacks/{provider}/…``: signed events in from providers (no API key; HMAC instead)."""

from __future__ import annotations

from aiohttp import web

from gateway.api.endpoints import Endpoint
from gateway.api.json import respond
from gateway.keys import SERVICES
from gateway.usecases.reports import receive_replies, receive_reports, receive_reviews


async def delivery_reports(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await request.read()
    results = await receive_reports(
        services.store,
        services.providers,
        services.clock,
        services.metrics,
        request.match_info["provider"],
        body,
        request.headers.get("X-Signature"),
    )
    applied = sum(1 for r in results if r.applied)
    if any(r.status == "rerouted" for r in results):
        services.dispatcher.wake()  # a rich route failed: its SMS fallback goes now
    return respond({"received": len(results), "applied": applied})


async def replies(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    audience = services.audience
    matched = await receive_replies(
        services.store,
        audience.store if audience is not None else None,
        services.providers,
        services.clock,
        request.match_info["provider"],
        await request.read(),
        request.headers.get("X-Signature"),
    )
    return respond({"matched": matched})


async def reviews(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    applied = await receive_reviews(
        services.store,
        services.providers,
        services.catalog,
        services.clock,
        request.match_info["provider"],
        await request.read(),
        request.headers.get("X-Signature"),
    )
    return respond({"applied": applied})


ENDPOINTS = [
    Endpoint(
        "POST",
        "/callbacks/{provider}/dlr",
        delivery_reports,
        "Delivery reports from a provider, signed (X-Signature: HMAC-SHA256 of the body)",
        None,
        tag="callbacks",
    ),
    Endpoint(
        "POST",
        "/callbacks/{provider}/mo",
        replies,
        "Replies from phones (MO), signed; opt-out words opt the number out of marketing",
        None,
        tag="callbacks",
    ),
    Endpoint(
        "POST",
        "/callbacks/{provider}/review",
        reviews,
        "Template review verdicts from a handset vendor, signed",
        None,
        tag="callbacks",
    ),
]
