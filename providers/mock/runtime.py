"""What every mock handler shares, and the typed keys it is stored under."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from pydantic import ValidationError

from providers.mock.config import Behaviour
from providers.mock.outbox import ReportOutbox
from providers.mock.state import MockState, TokenBucket
from providers.settings import MockSettings
from providers.signing import provider_secret


@dataclass(slots=True)
class Runtime:
    """Settings, behaviours, secrets and state of one mock-providers app."""

    settings: MockSettings
    behaviours: dict[str, Behaviour]
    rng: random.Random
    master: bytes
    state: MockState = field(default_factory=MockState)
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def behaviour(self, provider: str) -> Behaviour:
        return self.behaviours.get(provider) or Behaviour()

    def secret(self, provider: str) -> bytes:
        return provider_secret(self.master, provider)

    def chance(self, probability: float) -> bool:
        """True with ``probability`` (never for 0, always for 1)."""
        return probability > 0 and self.rng.random() < probability

    def take(self, provider: str, n: int) -> float:
        """Charge ``n`` messages to ``provider``'s rate limit; seconds to wait, or 0."""
        rate = self.behaviour(provider).rate_limit_per_s
        if not rate:
            return 0.0
        bucket = self._buckets.get(provider)
        if bucket is None:
            bucket = self._buckets[provider] = TokenBucket(rate)
        return bucket.take(n)


RUNTIME = web.AppKey("mock_runtime", Runtime)
SESSION = web.AppKey("mock_session", aiohttp.ClientSession)
OUTBOX = web.AppKey("mock_outbox", ReportOutbox)


def answer(body: Any, status: int = 200) -> web.Response:
    """A JSON answer, serialised with orjson: the standard library's encoder was 5-8 % of the
    mock's time in a drain, and the mock shares the machine with the gateway it serves."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error answer: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def describe(exc: ValidationError) -> str:
    """A pydantic error in one short line."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}" if loc else first["msg"]
