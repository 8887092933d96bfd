"""Errors to ``application/problem+json``, in one place (RFC 9457)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway import errors

PROBLEM = "application/problem+json"

STATUS: dict[type[errors.GatewayError], int] = {
    errors.MalformedBody: 400,
    errors.InvalidInput: 422,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.Unavailable: 503,
}

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def status_for(exc: errors.GatewayError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    field_errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"https://errors.smartsms.example/{status}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field_errors:
        body["errors"] = field_errors
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=PROBLEM,
        headers=headers,
    )


def from_gateway_error(exc: errors.GatewayError) -> web.Response:
    status = status_for(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="gateway"'} if status == 401 else None
    return problem(
        status,
        exc.detail,
        title=exc.title,
        field_errors=[e.as_dict() for e in exc.errors] or None,
        headers=headers,
    )


def from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    detail = exc.text or exc.reason
    if status == 413:
        detail = "request body is too large"
        fields = [{"loc": ["body"], "msg": detail}]
    else:
        fields = None
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return problem(status, detail, field_errors=fields, headers=headers or None)
