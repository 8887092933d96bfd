"""``/v1/recipients``, ``/v1/segments`` and ``/v1/settings``."""

from __future__ import annotations

from aiohttp import web

from gateway.api.bodies import json_body, parse, path_id
from gateway.api.endpoints import READ, WRITE, Endpoint
from gateway.api.json import respond
from gateway.api.middlewares import PRINCIPAL
from gateway.domain.phones import mask
from gateway.errors import Unavailable, UnsupportedMediaType
from gateway.keys import SERVICES
from gateway.usecases.audience import Audience, RecipientIn, TenantSettings, lines_of


def _audience(request: web.Request) -> Audience:
    audience = request.app[SERVICES].audience
    if audience is None:
        raise Unavailable("audiences need the SQL store")
    return audience


async def put_recipient(request: web.Request) -> web.Response:
    body, _ = await parse(request, RecipientIn)
    out = await _audience(request).put_recipient(
        request[PRINCIPAL].tenant_id, request.match_info["phone"], body
    )
    return respond(out, 201 if out.pop("created") else 200)


async def get_recipient(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    out = await _audience(request).get_recipient(principal.tenant_id, request.match_info["phone"])
    if principal.role != "campaign":  # numbers are masked for every other role, as in the logs
        out["phone"] = mask(out["phone"])
    return respond(out)


async def import_recipients(request: web.Request) -> web.Response:
    """NDJSON or CSV, streamed: the body is read line by line as it arrives."""
    kind = {"application/x-ndjson": "ndjson", "application/jsonl": "ndjson", "text/csv": "csv"}.get(
        request.content_type
    )
    if kind is None:
        raise UnsupportedMediaType(
            f"send application/x-ndjson or text/csv, not {request.content_type or 'nothing'}"
        )
    result = await _audience(request).import_lines(
        request[PRINCIPAL].tenant_id, lines_of(request.content), kind, request.charset
    )
    return respond(result.as_dict())


async def put_segment(request: web.Request) -> web.Response:
    segment_id = path_id(request, "segment_id")
    out = await _audience(request).put_segment(
        request[PRINCIPAL].tenant_id, segment_id, await json_body(request)
    )
    return respond(out)


async def get_segment(request: web.Request) -> web.Response:
    from gateway.domain.segments import dump_rule

    segment_id = path_id(request, "segment_id")
    rule = await _audience(request).segment_rule(request[PRINCIPAL].tenant_id, segment_id)
    return respond({"segment_id": segment_id, "rule": dump_rule(rule)})


async def count_segment(request: web.Request) -> web.Response:
    segment_id = path_id(request, "segment_id")
    return respond(
        {"count": await _audience(request).count(request[PRINCIPAL].tenant_id, segment_id)}
    )


async def get_settings(request: web.Request) -> web.Response:
    return respond(await _audience(request).settings(request[PRINCIPAL].tenant_id))


async def put_settings(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    tenant = request[PRINCIPAL].tenant_id
    audience = _audience(request)
    before = await audience.settings(tenant)
    out = await audience.put_settings(tenant, await json_body(request))
    if services.dispatcher.policy is not None:
        services.dispatcher.policy.forget(tenant)
    # messages deferred under the old quiet hours are judged again under the new ones
    if out["quiet_hours"] != before["quiet_hours"] and await audience.wake_deferred(tenant):
        services.dispatcher.wake()
    return respond(out)


ENDPOINTS = [
    Endpoint(
        "PUT",
        "/v1/recipients/{phone}",
        put_recipient,
        "Create or replace a recipient",
        WRITE,
        RecipientIn,
        tag="audience",
        also=((201, "Created"),),
    ),
    Endpoint("GET", "/v1/recipients/{phone}", get_recipient, "A recipient", READ, tag="audience"),
    Endpoint(
        "POST",
        "/v1/recipients:import",
        import_recipients,
        "Upsert recipients from NDJSON or CSV (UTF-8, with or without BOM, or GBK), streamed",
        WRITE,
        tag="audience",
        media=("application/x-ndjson", "text/csv"),
    ),
    Endpoint(
        "PUT",
        "/v1/segments/{segment_id}",
        put_segment,
        "Create or replace a segment rule",
        WRITE,
        tag="audience",
    ),
    Endpoint("GET", "/v1/segments/{segment_id}", get_segment, "A segment", READ, tag="audience"),
    Endpoint(
        "GET",
        "/v1/segments/{segment_id}/count",
        count_segment,
        "How many recipients a segment has now",
        READ,
        tag="audience",
    ),
    Endpoint(
        "GET",
        "/v1/settings",
        get_settings,
        "The tenant's sending policy",
        READ,
        response=TenantSettings,
        tag="settings",
    ),
    Endpoint(
        "PUT",
        "/v1/settings",
        put_settings,
        "Quiet hours and the default frequency cap; null turns either off",
        WRITE,
        TenantSettings,
        TenantSettings,
        tag="settings",
    ),
]
