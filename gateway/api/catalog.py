"""``/v1/brands`` and ``/v1/templates``: the bank's brand and its versioned card templates."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cards.models import TemplateSpec
from gateway.api.bodies import json_body, parse, path_id
from gateway.api.endpoints import READ, WRITE, Endpoint
from gateway.api.json import respond
from gateway.api.middlewares import PRINCIPAL
from gateway.clock import to_rfc3339
from gateway.errors import InvalidInput, NotFound
from gateway.keys import SERVICES
from gateway.storage.base import ReviewState
from gateway.usecases.catalog import Brand, LoadedTemplate
from gateway.usecases.preview import PreviewOut, PreviewRequest, preview


async def put_brand(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    brand_id = path_id(request, "brand_id")
    body = await _object(request)
    brand = await services.catalog.put_brand(request[PRINCIPAL].tenant_id, brand_id, body)
    return respond({"brand_id": brand_id, **brand.model_dump(mode="json")})


async def get_brand(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    brand_id = path_id(request, "brand_id")
    brand = await services.catalog.brand(request[PRINCIPAL].tenant_id, brand_id)
    if brand is None:
        raise NotFound(f"no brand {brand_id!r}")
    return respond({"brand_id": brand_id, **brand.model_dump(mode="json")})


async def list_brands(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    brands = await services.catalog.list_brands(request[PRINCIPAL].tenant_id)
    return respond({"items": [{"brand_id": b, **v.model_dump(mode="json")} for b, v in brands]})


async def put_template(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    template_id = path_id(request, "template_id")
    body = await _object(request)
    loaded = await services.catalog.put_template(request[PRINCIPAL].tenant_id, template_id, body)
    return respond(template_json(loaded, await services.catalog.reviews(loaded)))


async def get_template(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    template_id = path_id(request, "template_id")
    version = request.query.get("version")
    if version is not None and (not version.isdigit() or not 1 <= int(version) < 2**31):
        raise InvalidInput.field(["query", "version"], "must be a positive integer")
    loaded = await services.catalog.template(
        request[PRINCIPAL].tenant_id, template_id, int(version) if version else None
    )
    if loaded is None:
        raise NotFound(f"no template {template_id!r}")
    return respond(template_json(loaded, await services.catalog.reviews(loaded)))


async def list_templates(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    loaded = await services.catalog.list_templates(request[PRINCIPAL].tenant_id)
    return respond({"items": [template_json(t) for t in loaded]})


def template_json(
    loaded: LoadedTemplate, reviews: list[ReviewState] | None = None
) -> dict[str, Any]:
    out = {
        "template_id": loaded.record.template_id,
        "version": loaded.record.version,
        "created_at": to_rfc3339(loaded.record.created_at),
        **loaded.record.body,
    }
    if reviews is not None:
        out["reviews"] = {
            r.vendor: {"state": r.state, "reason": r.reason, "updated_at": to_rfc3339(r.updated_at)}
            for r in reviews
        }
    return out


async def preview_template(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    template_id = path_id(request, "template_id")
    req, _ = await parse(request, PreviewRequest)
    return respond(
        await preview(
            services.catalog,
            request[PRINCIPAL].tenant_id,
            template_id,
            req,
            services.settings.links_base_url,
        )
    )


async def _object(request: web.Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput.field(["body"], "must be a JSON object")
    return body


ENDPOINTS = [
    Endpoint(
        "PUT",
        "/v1/brands/{brand_id}",
        put_brand,
        "Create or replace a brand",
        WRITE,
        Brand,
        Brand,
        tag="brands",
    ),
    Endpoint(
        "GET", "/v1/brands/{brand_id}", get_brand, "A brand", READ, response=Brand, tag="brands"
    ),
    Endpoint("GET", "/v1/brands", list_brands, "All brands", READ, tag="brands"),
    Endpoint(
        "PUT",
        "/v1/templates/{template_id}",
        put_template,
        "Create a new version of a card template",
        WRITE,
        TemplateSpec,
        TemplateSpec,
        tag="templates",
    ),
    Endpoint(
        "GET",
        "/v1/templates/{template_id}",
        get_template,
        "The latest version of a template (or ?version=n)",
        READ,
        response=TemplateSpec,
        tag="templates",
    ),
    Endpoint(
        "POST",
        "/v1/templates/{template_id}/preview",
        preview_template,
        "Render every target of a template for a set of variables",
        READ,
        PreviewRequest,
        PreviewOut,
        tag="templates",
    ),
    Endpoint(
        "GET",
        "/v1/templates",
        list_templates,
        "All templates, latest versions",
        READ,
        tag="templates",
    ),
]
