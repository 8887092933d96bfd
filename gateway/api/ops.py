"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api import endpoints as registry
from gateway.api.endpoints import Endpoint
from gateway.api.json import respond
from gateway.api.problems import problem
from gateway.keys import SERVICES


async def healthz(request: web.Request) -> web.Response:
    return respond({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    try:
        await services.store.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    dispatcher = services.dispatcher
    if not services.settings.dispatcher_enabled:
        checks["dispatcher"] = "disabled"
    elif dispatcher.alive and time.monotonic() - dispatcher.last_tick < 30:
        checks["dispatcher"] = "ok"
    else:
        checks["dispatcher"] = "stalled" if dispatcher.alive else "stopped"
    if services.draining:
        checks["draining"] = "yes"
    ready = (
        all(v in ("ok", "disabled") for k, v in checks.items() if k != "draining")
        and not services.draining
    )
    if not ready:
        return problem(503, f"not ready: {checks}", title="Not ready")
    return respond({"status": "ready", "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    services.metrics.update_providers(services.dispatcher.provider_views())
    body = generate_latest(services.metrics.registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def openapi(request: web.Request) -> web.Response:
    return respond(openapi_document(list(registry.ENDPOINTS.values())))


def openapi_document(eps: list[Endpoint]) -> dict[str, Any]:
    """Built from the endpoint table and its pydantic models, never written by hand."""
    components: dict[str, Any] = {}

    def ref(model: Any) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    problem_schema = {"$ref": "#/components/schemas/Problem"}
    components["Problem"] = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "loc": {"type": "array", "items": {}},
                        "msg": {"type": "string"},
                    },
                },
            },
        },
    }
    paths: dict[str, Any] = {}
    for ep in eps:
        op: dict[str, Any] = {"summary": ep.summary, "tags": [ep.tag], "responses": {}}
        params = [
            {"name": p.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for p in ep.path.split("/")
            if p.startswith("{")
        ]
        params += [
            {"name": q.name, "in": "query", "schema": q.schema, "description": q.description}
            for q in ep.query
        ]
        params += [
            {"name": h.name, "in": "header", "schema": h.schema, "description": h.description}
            for h in ep.headers
        ]
        if params:
            op["parameters"] = params
        if ep.roles is not None:
            op["security"] = [{"apiKey": []}]
            op["description"] = f"Roles: {', '.join(ep.roles)}"
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(ep.body)}},
            }
        elif ep.media:
            op["requestBody"] = {
                "required": True,
                "content": {m: {"schema": {"type": "string"}} for m in ep.media},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if ep.response is not None:
            ok["content"] = {"application/json": {"schema": ref(ep.response)}}
        op["responses"][str(ep.status)] = ok
        for status, meaning in ep.also:
            op["responses"][str(status)] = {"description": meaning}
        op["responses"]["default"] = {
            "description": "A problem",
            "content": {"application/problem+json": {"schema": problem_schema}},
        }
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Smart SMS gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


ENDPOINTS = [
    Endpoint("GET", "/healthz", healthz, "Liveness", None, tag="ops"),
    Endpoint(
        "GET", "/readyz", readyz, "Readiness: database reachable, dispatcher alive", None, tag="ops"
    ),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", None, tag="ops"),
    Endpoint("GET", "/openapi.json", openapi, "This document", None, tag="ops"),
]
