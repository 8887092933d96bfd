"""JSON responses: UTF-8 as it is (Chinese text stays readable), compact, via orjson."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def respond(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(value), status=status, content_type="application/json", headers=headers
    )
