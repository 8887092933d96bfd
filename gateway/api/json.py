"""JSON responses: UTF-8 as it is (Chinese text stays readable), compact."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def respond(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=dumps(value), status=status, content_type="application/json", headers=headers
    )
