"""Request middlewares: a canonical log line and metrics per request, auth, problem+json."""

from __future__ import annotations

import itertools
import os
import time

from aiohttp import web

from gateway import logging as logs
from gateway.api.endpoints import Endpoint, Handler, endpoint_of
from gateway.api.problems import from_gateway_error, from_http_exception, problem
from gateway.errors import GatewayError
from gateway.keys import SERVICES
from gateway.logging import get_logger
from gateway.usecases.tenants import Principal, require_role

log = get_logger("gateway.http")

# Request ids: a random per-process prefix and a counter, unique without a syscall per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def _route_info(
    request: web.Request, known: dict[object, tuple[Endpoint | None, str]]
) -> tuple[Endpoint | None, str]:
    """The matched route's endpoint and its name in metrics, asked once per route."""
    route = request.match_info.route
    info = known.get(route)
    if info is None:
        resource = route.resource
        info = (endpoint_of(request), resource.canonical if resource is not None else "unmatched")
        if resource is not None:  # not the 404/405 answers, which are new objects each time
            known[route] = info
    return info


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware: binds a request id, checks the key against the endpoint's roles,
    answers problems for every error, and writes one canonical line per request."""
    services = request.app[SERVICES]
    request_id = request.headers.get("X-Request-Id") or f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
    # Requests on one connection run one after another in its task: binding overwrites the
    # previous request's id, and nothing else is ever bound, so no clearing is needed.
    logs.REQUEST_ID.set(request_id)
    started = time.perf_counter()
    endpoint, route = _route_info(request, services.route_info)
    try:
        if endpoint is not None and endpoint.roles is not None:
            principal = await services.auth.authenticate(request.headers.get("Authorization"))
            require_role(principal, endpoint.roles)
            request[PRINCIPAL] = principal
        response = await handler(request)
    except GatewayError as exc:
        response = from_gateway_error(exc)
    except ConnectionResetError:
        # The client hung up mid-answer (a CSV download cut short): nothing more can reach
        # it, and it is not the server's error. 499, as nginx counts a request so ended.
        response = web.Response(status=499)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = from_http_exception(exc)
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        response = problem(500, "an internal error; it is logged with this request id")
    elapsed = time.perf_counter() - started
    if not response.prepared:  # a streamed response sent its headers already
        response.headers["X-Request-Id"] = request_id
    services.metrics.observe_request(request.method, route, response.status, elapsed)
    if not logs.INFO_ENABLED:
        return response
    who = request.get(PRINCIPAL)
    log.info(
        "request",
        method=request.method,
        path=request.path,
        route=route,
        status=response.status,
        ms=round(elapsed * 1000, 2),
        tenant=who.tenant_id if who else None,
    )
    return response
