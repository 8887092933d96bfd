"""``/v1/providers`` (their health, for operators) and ``/v1/portability`` (ported numbers)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gateway.api.bodies import parse
from gateway.api.endpoints import READ, WRITE, Endpoint
from gateway.api.json import respond
from gateway.api.middlewares import PRINCIPAL
from gateway.domain.phones import InvalidNumber, to_e164
from gateway.errors import InvalidInput
from gateway.keys import SERVICES


class PortabilityIn(BaseModel):
    """The carrier that serves a ported number now."""

    model_config = ConfigDict(extra="forbid")

    carrier: Literal["cmcc", "cucc", "ctcc"]


async def list_providers(request: web.Request) -> web.Response:
    return respond({"items": request.app[SERVICES].dispatcher.provider_views()})


def _number(request: web.Request) -> str:
    try:
        return to_e164(request.match_info["phone"])
    except InvalidNumber as exc:
        raise InvalidInput.field(["path", "phone"], str(exc)) from None


async def put_portability(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    number = _number(request)
    body, _ = await parse(request, PortabilityIn)
    await services.store.set_portability(
        request[PRINCIPAL].tenant_id, number, body.carrier, services.clock.now()
    )
    return respond({"number": number, "carrier": body.carrier})


async def delete_portability(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    number = _number(request)
    await services.store.set_portability(
        request[PRINCIPAL].tenant_id, number, None, services.clock.now()
    )
    return respond({"number": number, "carrier": None})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/providers",
        list_providers,
        "Each provider's success rate, latency p50/p99, circuit state and current rate",
        READ,
        tag="ops",
    ),
    Endpoint(
        "PUT",
        "/v1/portability/{phone}",
        put_portability,
        "Override the carrier of a number that moved (number portability)",
        WRITE,
        PortabilityIn,
        tag="routing",
    ),
    Endpoint(
        "DELETE",
        "/v1/portability/{phone}",
        delete_portability,
        "Forget a portability override",
        WRITE,
        tag="routing",
    ),
]
