"""The endpoint table: one declaration per endpoint drives routing, auth and ``/openapi.json``."""

from __future__ import annotations

import keyword
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READ = ("campaign", "ops")
WRITE = ("campaign",)


@dataclass(frozen=True)
class Param:
    """A query parameter, as ``/openapi.json`` documents it."""

    name: str
    schema: dict[str, object]
    description: str = ""


IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255},
    "the same key with the same body answers the first response again (Idempotent-Replayed:"
    " true) and makes nothing; with another body, 409; kept at least 24 hours",
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[str, ...] | None  # None: no API key (public, or signed by a provider)
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    tag: str = "gateway"
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()  # request headers it reads, beyond Authorization
    media: tuple[str, ...] = ()  # a body that is not JSON: the media types it may come in
    also: tuple[tuple[int, str], ...] = ()  # other answers than ``status``: (status, meaning)

    @property
    def name(self) -> str:
        """A route name aiohttp accepts: ``get.v1.messages.message_id``."""
        parts = re.sub(r"[^A-Za-z0-9_]+", ".", f"{self.method.lower()}.{self.path}").strip(".")
        # a Python keyword ("import") is no part of a route name: suffix every part
        return ".".join(f"{p}_" if keyword.iskeyword(p) else p for p in parts.split("."))


ENDPOINTS: dict[str, Endpoint] = {}


def register(app: web.Application, endpoints: list[Endpoint]) -> None:
    for ep in endpoints:
        if ep.method == "GET":  # and HEAD, as HTTP expects
            app.router.add_get(ep.path, ep.handler, name=ep.name)
        else:
            app.router.add_route(ep.method, ep.path, ep.handler, name=ep.name)
        ENDPOINTS[ep.name] = ep


def endpoint_of(request: web.Request) -> Endpoint | None:
    route = request.match_info.route
    name = getattr(route, "name", None)
    return ENDPOINTS.get(name) if name else None
