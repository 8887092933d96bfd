"""Webhooks out: events flow from the event log to each bank's endpoint, signed (Standard
Webhooks), retried with backoff and jitter for days, never lost across a restart.

The feed moves new events from the append-only event log into a durable outbox in one
transaction with its cursor; the sender posts due deliveries and records each answer.
2xx is done; 410 disables the endpoint; anything else is tried again later (honouring
``Retry-After``) until ``retry_for_s`` has passed. Only http(s) URLs to public
addresses are called, unless the operator allows private ones (tests, demos).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import random
import secrets
import socket
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
from standardwebhooks import Webhook

from gateway.clock import Clock, event_json, to_rfc3339
from gateway.dispatch.circuit import CircuitBreaker
from gateway.dispatch.worker import PollingWorker
from gateway.domain.retry import backoff
from gateway.ids import new_id
from gateway.logging import get_logger
from gateway.storage.webhooks import Delivery, Endpoint, SqliteWebhooks

log = get_logger("gateway.webhooks")

EventType = Literal[
    "submitted",
    "delivered",
    "failed",
    "expired",
    "revoked",
    "suppressed",
    "deferred",
    "displayed",
    "clicked",
    "replied",
    "fallback",
]


class UnsafeUrl(ValueError):
    pass


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuses what a webhook must never call: other schemes, and (unless allowed) loopback,
    private, link-local and other non-public addresses, by every address the name resolves to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("an http:// or https:// URL with a host")
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            raise UnsafeUrl(f"{host} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not is_public(address):
            raise UnsafeUrl(f"{host} is a private or reserved address ({address})")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: IPv4 in the last 32 bits
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # a site's own translation: never public


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global and not multicast; an IPv6 address that carries an IPv4 one (mapped,
    compatible, 6to4, NAT64) is judged by the IPv4 address too, since a network that routes
    it reaches that IPv4 host (``64:ff9b::7f00:1`` is 127.0.0.1 through NAT64)."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return False
        embedded = [address.ipv4_mapped, address.sixtofour]
        value = int(address)
        # ::a.b.c.d, ::ffff:0:a.b.c.d and NAT64 carry it in the last 32 bits
        if value >> 32 in (0, 0xFFFF0000) or address in _NAT64:
            embedded.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
        return all(v4 is None or is_public(v4) for v4 in embedded)
    return True


class PublicOnlyResolver(aiohttp.abc.AbstractResolver):
    """Resolves as usual, and refuses any non-public address, at connect time: a name that
    answered a public address to ``check_url`` and a private one now (DNS rebinding) fails."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> Any:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            address = ipaddress.ip_address(answer["host"])
            if not is_public(address):
                raise OSError(f"{host} resolves to a non-public address ({address})")
        return answers

    async def close(self) -> None:
        await self._inner.close()


def _payload(event: tuple[Any, ...], endpoint: Endpoint) -> tuple[str, str, str]:
    (
        _seq,
        message_id,
        kind,
        at,
        data,
        _tenant,
        to,
        status,
        client_ref,
        campaign_id,
        route,
        provider,
    ) = event
    body = {
        "type": f"message.{kind}",
        "timestamp": to_rfc3339(at),
        "data": {
            "message_id": message_id,
            "to": to,
            "status": status,
            "client_ref": client_ref,
            "campaign_id": campaign_id,
            "route": route,
            "provider": provider,
            "event": event_json(kind, at, json.loads(data)),
        },
    }
    return f"msg_{new_id(int(at * 1000))}", kind, json.dumps(body, ensure_ascii=False)


CIRCUIT_THRESHOLD = 5  # failed deliveries in a row before a tenant's endpoint is held
CIRCUIT_COOLDOWN_S = 30.0


class WebhookSender(PollingWorker):
    name = "webhooks"
    idle_s = 0.5

    def __init__(
        self,
        webhooks: SqliteWebhooks,
        clock: Clock,
        *,
        allow_private: bool,
        retry_for_s: float = 3 * 86400,
        timeout_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self._webhooks = webhooks
        self._clock = clock
        self._allow_private = allow_private
        self._retry_for_s = retry_for_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        # one per tenant: a bank whose endpoint keeps failing (or hangs till the timeout)
        # is tried one delivery at a time until it answers again, so its deliveries do not
        # fill the rounds that every other bank's deliveries share
        self._circuits: dict[str, CircuitBreaker] = {}

    def circuit(self, tenant_id: str) -> CircuitBreaker:
        breaker = self._circuits.get(tenant_id)
        if breaker is None:
            breaker = self._circuits[tenant_id] = CircuitBreaker(
                self._clock, threshold=CIRCUIT_THRESHOLD, cooldown_s=CIRCUIT_COOLDOWN_S
            )
        return breaker

    async def stop(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run_once(self) -> bool:
        """Feeds new events into the outbox and sends what is due; answers whether it did any."""
        fed = await self._webhooks.feed(500, _payload)
        due = await self._webhooks.due(self._clock.now(), 50)
        if due:
            endpoints: dict[str, Endpoint | None] = {}
            for d in due:
                if d.tenant_id not in endpoints:
                    endpoints[d.tenant_id] = await self._webhooks.get(d.tenant_id)
            await asyncio.gather(*(self._send(d, endpoints[d.tenant_id]) for d in due))
        return bool(fed) or bool(due)

    async def _send(self, d: Delivery, endpoint: Endpoint | None) -> None:
        now = self._clock.now()
        breaker = self.circuit(d.tenant_id)
        if endpoint is not None and endpoint.enabled and not breaker.allow():
            await self._webhooks.record(  # held, not tried: the endpoint is failing
                d.delivery_id,
                state="pending",
                attempts=d.attempts,
                next_at=now + max(1.0, breaker.retry_in()),
                status=None,
                error="held: the endpoint keeps failing",
            )
            return
        if endpoint is None or not endpoint.enabled:
            await self._webhooks.record(
                d.delivery_id,
                state="disabled",
                attempts=d.attempts,
                next_at=now,
                status=None,
                error="endpoint disabled",
            )
            return
        status: int | None = None
        retry_after: float | None = None
        try:
            await check_url(endpoint.url, allow_private=self._allow_private)
            sent_at = datetime.fromtimestamp(now, UTC)
            signature = Webhook(endpoint.secret).sign(d.delivery_id, sent_at, d.payload)
            headers = {
                "content-type": "application/json",
                "webhook-id": d.delivery_id,
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": signature,
            }
            if self._session is None:
                connector = (
                    None
                    if self._allow_private
                    else aiohttp.TCPConnector(resolver=PublicOnlyResolver())
                )
                self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
            async with self._session.post(
                endpoint.url, data=d.payload.encode(), headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            error = None if 200 <= status < 300 else f"http {status}"
        except UnsafeUrl as exc:
            error = f"refused: {exc}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        attempts = d.attempts + 1
        if error is None:
            breaker.success()
        else:
            breaker.failure()
        log.info(
            "webhook_attempt",
            tenant=d.tenant_id,
            delivery=d.delivery_id,
            status=status,
            error=error,
            attempt=attempts,
        )
        next_at = now
        if error is None:
            state = "delivered"
        elif status == 410:  # the endpoint is gone: stop calling it
            state = "disabled"
            await self._webhooks.disable(d.tenant_id, "410 Gone")
        elif now - d.created_at >= self._retry_for_s:
            state = "failed"
        else:
            state = "pending"
            next_at += backoff(attempts, base_s=5.0, max_s=3600.0, defer=retry_after, rng=self._rng)
        await self._webhooks.record(
            d.delivery_id,
            state=state,
            attempts=attempts,
            next_at=next_at,
            status=status,
            error=error,
        )
        if state == "disabled":
            await self._webhooks.hold_tenant(d.tenant_id, "disabled")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
