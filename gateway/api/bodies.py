"""Reading request bodies into pydantic models, every failure a 4xx naming the field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.errors import InvalidInput, MalformedBody, UnsupportedMediaType
from gateway.usecases.catalog import invalid_from_pydantic

M = TypeVar("M", bound=BaseModel)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


async def json_body(request: web.Request) -> Any:
    if request.content_type not in ("application/json", "") and not request.content_type.endswith(
        "+json"
    ):
        raise UnsupportedMediaType(
            f"send application/json, not {request.content_type}",
        )
    raw = await request.read()  # bounded by client_max_size: over it aiohttp answers 413
    if not raw:
        raise MalformedBody.field(["body"], "request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody.field(["body"], f"not valid JSON: {exc}") from None


async def parse(request: web.Request, model: type[M]) -> tuple[M, Any]:
    """The body as ``model``, and the decoded JSON it came from."""
    data = await json_body(request)
    if not isinstance(data, dict):
        raise InvalidInput.field(["body"], "must be a JSON object")
    try:
        return model.model_validate(data), data
    except ValidationError as exc:
        raise invalid_from_pydantic(exc) from None


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not _ID.fullmatch(value):  # not match with $: that allows a trailing newline
        raise InvalidInput.field(
            ["path", name],
            "1 to 64 letters, digits, '.', '-' or '_', starting with a letter or digit",
        )
    return value


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key`` (1 to 255 characters), if it sent one."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidInput.field(["header", "Idempotency-Key"], "must be 1 to 255 characters")
    return key
