"""Carriers' SMS APIs over HTTP: the ``sms`` route of the provider port."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.dispatch.ports import (
    DeliveryReport,
    InboundMessage,
    RouteKind,
    Submission,
    SubmitOutcome,
)
from gateway.errors import PermanentProviderError, ProviderError, RetryableProviderError
from providers import signing

_M = TypeVar("_M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Result(_Model):
    client_ref: str
    status: Literal["accepted", "rejected"]
    msg_id: str | None = None
    code: str | None = None


class _SubmitResponse(_Model):
    results: list[_Result]


class _Report(_Model):
    client_ref: str
    msg_id: str
    status: str
    error_code: str | None = None
    done_at: str | None = None


class _ReportsBody(_Model):
    reports: list[_Report]


class _Mo(_Model):
    mo_id: str | None = None
    from_: str = Field(alias="from")
    text: str
    received_at: str | None = None


class _MoBody(_Model):
    messages: list[_Mo]


class HttpCarrier:
    """One carrier's SMS API: batches of up to 100, signed both ways."""

    routes: frozenset[RouteKind] = frozenset({"sms"})
    max_batch = 100

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
        self._url = f"{base_url.rstrip('/')}/{name}/v1/sms/batch"
        self._secret = secret
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def submit(self, batch: Sequence[Submission], callback_url: str) -> list[SubmitOutcome]:
        if not batch:
            return []
        if len(batch) > self.max_batch:
            raise ValueError(f"{self.name}: batch of {len(batch)} over {self.max_batch}")
        body = json.dumps(
            {
                "callback_url": callback_url,
                "messages": [
                    {"client_ref": s.message_id, "to": s.to, "text": s.text} for s in batch
                ],
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Signature": signing.sign(self._secret, body),
        }
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise RetryableProviderError("timeout", f"{self.name}: no answer") from exc
        except aiohttp.ClientError as exc:
            raise RetryableProviderError("connection", f"{self.name}: {exc}") from exc
        return self._outcomes(batch, status, raw, retry_after)

    def _outcomes(
        self, batch: Sequence[Submission], status: int, raw: bytes, retry_after: str | None
    ) -> list[SubmitOutcome]:
        detail = f"{self.name}: http {status}"
        extra = {"status": status}
        if status == 429:
            raise RetryableProviderError("rate_limited", detail, extra, defer=_seconds(retry_after))
        if status >= 500:
            raise RetryableProviderError("unavailable", detail, extra)
        if not 200 <= status < 300:
            raise PermanentProviderError(f"http_{status}", detail, extra)
        try:
            results = {r.client_ref: r for r in _SubmitResponse.model_validate_json(raw).results}
        except ValidationError as exc:
            # Resubmitting is safe: the carrier dedupes by client_ref.
            raise RetryableProviderError("bad_response", f"{self.name}: {exc}", extra) from exc
        return [_outcome(s.message_id, results.get(s.message_id)) for s in batch]

    def verify(self, body: bytes, signature: str | None) -> bool:
        return signing.verify(self._secret, body, signature)

    def parse_reports(self, body: bytes) -> list[DeliveryReport]:
        parsed = _parse(_ReportsBody, body, "delivery reports")
        return [
            DeliveryReport(
                message_id=r.client_ref,
                provider_ref=r.msg_id,
                status="delivered" if r.status == "DELIVRD" else "failed",
                at=r.done_at,
                error_code=r.error_code,
            )
            for r in parsed.reports
        ]

    def parse_inbound(self, body: bytes) -> list[InboundMessage]:
        parsed = _parse(_MoBody, body, "inbound messages")
        return [
            InboundMessage(from_number=m.from_, text=m.text, provider_ref=m.mo_id, at=m.received_at)
            for m in parsed.messages
        ]

    async def close(self) -> None:
        """Nothing to do: the session belongs to the caller."""


def _outcome(message_id: str, result: _Result | None) -> SubmitOutcome:
    error: ProviderError
    if result is None:
        error = RetryableProviderError("missing_result", "carrier did not answer for it")
    elif result.status == "rejected":
        error = PermanentProviderError(result.code or "rejected")
    elif result.msg_id:
        return SubmitOutcome(message_id, provider_ref=result.msg_id)
    else:
        error = RetryableProviderError("bad_response", "accepted without msg_id")
    return SubmitOutcome(message_id, error=error)


def _seconds(retry_after: str | None) -> float:
    """``Retry-After`` in seconds; 1.0 when absent, a date, or nonsense."""
    try:
        value = float(retry_after or "")
    except ValueError:
        return 1.0
    return value if value > 0 and math.isfinite(value) else 1.0


def _parse(model: type[_M], body: bytes, what: str) -> _M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ValueError(f"malformed {what}: {exc.error_count()} error(s)") from exc
