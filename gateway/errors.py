"""One error hierarchy for the whole gateway.

Domain errors carry no HTTP status codes; ``gateway.api.problems`` maps them
to ``application/problem+json`` in one place::

    GatewayError
    ├── InvalidInput          bad input; ``errors`` names each field
    │   ├── MalformedBody     not JSON at all
    │   └── UnsupportedMediaType
    ├── NotFound              unknown id, or an id of another tenant
    ├── Conflict              e.g. an Idempotency-Key reused with another body
    ├── Unauthenticated       no key or a wrong key
    ├── Forbidden             right key, wrong role
    ├── PayloadTooLarge       body over the limit
    └── Unavailable           not ready (draining, database down)

    ProviderError             raised by provider adapters, seen only by the dispatcher
    ├── RetryableProviderError(defer=…)   try again later
    └── PermanentProviderError            this message will never go through this provider
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    loc: tuple[str | int, ...]
    msg: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg}


class GatewayError(Exception):
    title = "Gateway error"

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)


class InvalidInput(GatewayError):
    title = "Invalid input"

    @classmethod
    def field(cls, loc: Sequence[str | int], msg: str) -> InvalidInput:
        return cls(f"{'.'.join(map(str, loc))}: {msg}", [FieldError(tuple(loc), msg)])


class MalformedBody(InvalidInput):
    title = "Malformed request body"


class UnsupportedMediaType(InvalidInput):
    title = "Unsupported media type"


class NotFound(GatewayError):
    title = "Not found"


class Conflict(GatewayError):
    title = "Conflict"


class Unauthenticated(GatewayError):
    title = "Unauthenticated"


class Forbidden(GatewayError):
    title = "Forbidden"


class PayloadTooLarge(GatewayError):
    title = "Payload too large"


class Unavailable(GatewayError):
    title = "Service unavailable"


@dataclass
class ProviderError(Exception):
    """A provider refused or failed a submission; ``code`` is the provider's word for it."""

    code: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


@dataclass
class RetryableProviderError(ProviderError):
    """Try again; ``defer`` (seconds) is the provider's own hint, e.g. ``Retry-After``."""

    defer: float | None = None


@dataclass
class PermanentProviderError(ProviderError):
    """This message will never go through this provider."""
