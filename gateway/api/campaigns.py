"""``/v1/campaigns``: create, read, pause, resume, cancel, and the funnel."""

from __future__ import annotations

from aiohttp import web

from gateway.api.bodies import idempotency_key, json_body, path_id
from gateway.api.endpoints import IDEMPOTENCY_KEY, READ, WRITE, Endpoint
from gateway.api.json import respond
from gateway.api.middlewares import PRINCIPAL
from gateway.errors import Unavailable
from gateway.keys import SERVICES
from gateway.usecases.campaigns import CampaignIn, Campaigns


def _campaigns(request: web.Request) -> Campaigns:
    campaigns = request.app[SERVICES].campaigns
    if campaigns is None:
        raise Unavailable("campaigns need the SQL store")
    return campaigns


async def create(request: web.Request) -> web.Response:
    key = idempotency_key(request)
    out, replayed = await _campaigns(request).create(
        request[PRINCIPAL].tenant_id, await json_body(request), idempotency_key=key
    )
    return respond(out, 202, {"Idempotent-Replayed": "true"} if replayed else None)


async def get(request: web.Request) -> web.Response:
    return respond(
        await _campaigns(request).view(
            request[PRINCIPAL].tenant_id,
            path_id(request, "campaign_id"),
            masked=request[PRINCIPAL].role != "campaign",
        )
    )


def _action(action: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        out = await _campaigns(request).transition(
            request[PRINCIPAL].tenant_id, path_id(request, "campaign_id"), action
        )
        return respond(out)

    handler.__name__ = action
    return handler


async def stats(request: web.Request) -> web.Response:
    return respond(
        await _campaigns(request).stats(
            request[PRINCIPAL].tenant_id, path_id(request, "campaign_id")
        )
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/campaigns",
        create,
        "Start (or schedule) a campaign",
        WRITE,
        CampaignIn,
        status=202,
        tag="campaigns",
        headers=(IDEMPOTENCY_KEY,),
    ),
    Endpoint(
        "GET",
        "/v1/campaigns/{campaign_id}",
        get,
        "A campaign's state and counts",
        READ,
        tag="campaigns",
    ),
    *(
        Endpoint(
            "POST",
            f"/v1/campaigns/{{campaign_id}}/{a}",
            _action(a),
            f"{a.title()} a campaign",
            WRITE,
            tag="campaigns",
        )
        for a in ("pause", "resume", "cancel")
    ),
    Endpoint(
        "GET",
        "/v1/campaigns/{campaign_id}/stats",
        stats,
        "The funnel: targeted → sent → delivered → displayed → clicked, per variant, route "
        "and provider",
        READ,
        tag="campaigns",
    ),
]
