"""What every provider API does before it looks at a request: the shared front door.

In order: the provider must exist in the endpoint's family (else 404), the
body must carry its HMAC (401), parse as the endpoint's model (400), survive
the provider's latency and failure rate (503) and fit its rate limit (429 with
``Retry-After``). Only then does the endpoint act, so a refused request
changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import AfterValidator, BaseModel, ValidationError
from yarl import URL

from providers.mock.runtime import RUNTIME, describe, error
from providers.mock.state import retry_after
from providers.signing import verify

M = TypeVar("M", bound=BaseModel)

MAX_BATCH = 100
MAX_LOOKUP = 10_000


def _absolute_http_url(value: str) -> str:
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http(s) URL")
    return value


CallbackUrl = Annotated[str, AfterValidator(_absolute_http_url)]


@dataclass(frozen=True, slots=True)
class Admitted(Generic[M]):
    """A request that got through: whose API it is, and its parsed body."""

    provider: str
    body: M


def per_request(_body: BaseModel) -> int:
    """Rate-limit cost of a lookup or a review: one token per request."""
    return 1


async def admit(
    request: web.Request,
    family: Collection[str],
    model: type[M],
    cost: Callable[[M], int],
) -> Admitted[M] | web.Response:
    """The parsed request, or the error answer that refuses it (see the module doc)."""
    rt = request.app[RUNTIME]
    provider = request.match_info["provider"]
    if provider not in family:
        return error(404, f"{provider!r} has no such API")
    raw = await request.read()
    if not verify(rt.secret(provider), raw, request.headers.get("X-Signature")):
        return error(401, "bad signature")
    try:  # orjson, then the model: half the cost of pydantic's own JSON parse of a batch
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:  # not JSON, or JSON orjson refuses (NaN, Infinity):
            body = model.model_validate_json(raw)  # pydantic's parser, which said before
        else:
            body = model.model_validate(parsed)  # (an integer past 64 bits becomes a float)
    except ValidationError as exc:
        return error(400, describe(exc))

    behaviour = rt.behaviour(provider)
    if behaviour.latency_ms > 0:
        await asyncio.sleep(behaviour.latency_ms / 1000)
    if rt.chance(behaviour.failure_rate):
        return error(503, "unavailable")
    wait_s = rt.take(provider, cost(body))
    if wait_s > 0:
        return error(429, "rate limited", headers={"Retry-After": str(retry_after(wait_s))})
    return Admitted(provider, body)
