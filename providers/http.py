"""What every provider client shares: signed JSON over HTTP, and one mapping of failures.

Every request is a JSON ``POST`` signed with ``X-Signature`` (hex HMAC-SHA256 of
the body with the provider's secret). How its failures map to the port's errors:

====================================  ==========================================
timeout                               ``RetryableProviderError("timeout")``
connection refused / reset / DNS      ``RetryableProviderError("connection")``
429                                   ``RetryableProviderError("rate_limited",
                                      defer=Retry-After seconds, 1.0 if absent)``
5xx                                   ``RetryableProviderError("unavailable")``
any other non-2xx                     ``PermanentProviderError("http_<status>")``
2xx with a body of the wrong shape    ``RetryableProviderError("bad_response")``
====================================  ==========================================
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.clock import from_rfc3339
from gateway.errors import PermanentProviderError, RetryableProviderError
from providers import signing

M = TypeVar("M", bound=BaseModel)


class SignedJsonApi:
    """One provider's HTTP API under ``{base_url}/{name}/v1``, signed with its secret."""

    def __init__(
        self,
        name: str,
        base_url: str,
        secret: bytes,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float,
    ) -> None:
        self.name = name
        self.base = f"{base_url.rstrip('/')}/{name}/v1"
        self._secret = secret
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def post(self, path: str, payload: Any, answer: type[M]) -> M:
        """POST ``payload`` to ``path`` and parse the 2xx answer as ``answer``."""
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Signature": signing.sign(self._secret, body),
        }
        try:
            async with self._session.post(
                self.base + path, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise RetryableProviderError("timeout", f"{self.name}: no answer") from exc
        except aiohttp.ClientError as exc:
            raise RetryableProviderError("connection", f"{self.name}: {exc}") from exc
        check_status(self.name, status, retry_after)
        try:
            return answer.model_validate_json(raw)
        except ValidationError as exc:
            raise RetryableProviderError(
                "bad_response", f"{self.name}: {exc}", {"status": status}
            ) from exc

    def verify(self, body: bytes, signature: str | None) -> bool:
        """Whether ``signature`` is this provider's HMAC of ``body`` (constant time)."""
        return signing.verify(self._secret, body, signature)


def check_status(name: str, status: int, retry_after: str | None) -> None:
    """Raise the port's error for a non-2xx ``status`` (see the module doc)."""
    if 200 <= status < 300:
        return
    detail = f"{name}: http {status}"
    extra = {"status": status}
    if status == 429:
        raise RetryableProviderError(
            "rate_limited", detail, extra, defer=retry_after_seconds(retry_after)
        )
    if status >= 500:
        raise RetryableProviderError("unavailable", detail, extra)
    raise PermanentProviderError(f"http_{status}", detail, extra)


def retry_after_seconds(retry_after: str | None) -> float:
    """``Retry-After`` in seconds; 1.0 when absent, a date, or nonsense."""
    try:
        value = float(retry_after or "")
    except ValueError:
        return 1.0
    return value if value > 0 and math.isfinite(value) else 1.0


def reported_at(text: str | None) -> str | None:
    """A provider's time for a report, if it is RFC 3339 with an offset; otherwise none
    (the report still counts: its status matters, not a clock the provider garbled)."""
    if text is None:
        return None
    try:
        from_rfc3339(text)
    except ValueError:
        return None
    return text


def parse_callback(model: type[M], body: bytes, what: str) -> M:
    """A verified callback body as ``model``; ``ValueError`` naming ``what`` if malformed."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ValueError(f"malformed {what}: {exc.error_count()} error(s)") from exc


class RecallAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    client_ref: str
    recalled: bool
    reason: str | None = None


async def recall(api: SignedJsonApi, client_ref: str) -> tuple[bool, str | None]:
    """Asks the provider to withdraw a message it has not delivered yet."""
    answer = await api.post("/recall", {"client_ref": client_ref}, RecallAnswer)
    return answer.recalled, answer.reason


class HttpProvider:
    """What every HTTP provider client shares: its signed API, recall, signature check.

    Subclasses add ``submit``, the lookups and the callback parsers of their API style.
    """

    max_batch = 100
    max_lookup = 10_000

    def __init__(
        self,
        name: str,
        base_url: str,
        secret: bytes,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self._api = SignedJsonApi(name, base_url, secret, session, timeout_s=timeout_s)

    async def recall(self, client_ref: str) -> tuple[bool, str | None]:
        """Withdraws a message not yet delivered: (recalled, why not)."""
        return await recall(self._api, client_ref)

    def verify(self, body: bytes, signature: str | None) -> bool:
        return self._api.verify(body, signature)

    async def close(self) -> None:
        """Nothing to do: the session belongs to the caller."""
