"""Webhooks out: signed per Standard Webhooks, retried, disabled by 410, SSRF-guarded, durable."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from gateway.app import create_app
from gateway.keys import SERVICES
from gateway.storage.sqlite import SqliteStore
from tests.conftest import Gateway, GatewayFactory
from tests.fakes import report_body


class Receiver:
    """A bank's endpoint: answers the statuses it is given, in turn, and keeps what came."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return web.Response(status=status, headers=headers)


@pytest.fixture(name="receiver")
async def _receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[Receiver, str]:  # type: ignore[misc]
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return receiver, str(server.make_url("/hook"))


async def _setup(gw: Gateway, url: str, events: list[str] | None = None) -> str:
    resp = await gw.client.put(
        "/v1/webhook",
        json={"url": url, "events": events or ["delivered", "failed"]},
        headers=gw.auth(),
    )
    assert resp.status == 200, await resp.text()
    secret = (await resp.json())["secret"]
    assert secret.startswith("whsec_")
    assert gw.services.webhook_sender is not None
    await gw.services.webhook_sender.run_once()  # sets the event cursor: from now on
    return str(secret)


async def _deliver(gw: Gateway) -> str:
    message_id = await gw.send()
    await gw.services.dispatcher.run_once()
    body, sig = report_body((message_id, f"cmcc-{message_id}", "delivered"))
    await gw.client.post("/callbacks/cmcc/dlr", data=body, headers={"X-Signature": sig})
    return message_id


async def test_delivered_event_is_signed_and_verifies(
    make_gateway: GatewayFactory, receiver: Any
) -> None:
    """A delivery report reaches the bank, signed so the reference library verifies it."""
    gw = await make_gateway(webhook_allow_private=True)
    gw.clock.set(time.time())  # the library checks the signature's age against the real clock
    rec, url = receiver
    secret = await _setup(gw, url)
    message_id = await _deliver(gw)
    assert gw.services.webhook_sender is not None
    await gw.services.webhook_sender.run_once()
    [(headers, body)] = rec.received
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "message.delivered"
    assert payload["data"]["message_id"] == message_id and payload["data"]["status"] == "delivered"
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type
        Webhook(secret).verify(body.replace(b"delivered", b"failed"), headers)
    assert headers["webhook-id"].startswith("msg_")
    await gw.client.close()


async def test_unsubscribed_events_do_not_go(make_gateway: GatewayFactory, receiver: Any) -> None:
    """Only the event types asked for are sent."""
    gw = await make_gateway(webhook_allow_private=True)
    rec, url = receiver
    await _setup(gw, url, ["clicked"])
    await _deliver(gw)
    assert gw.services.webhook_sender is not None
    await gw.services.webhook_sender.run_once()
    assert rec.received == []


async def test_failures_are_retried_with_backoff_honouring_retry_after(
    make_gateway: GatewayFactory, receiver: Any
) -> None:
    """A 500 and a 429 with Retry-After are retried later; the same webhook-id every time."""
    gw = await make_gateway(webhook_allow_private=True)
    rec, url = receiver
    await _setup(gw, url)
    rec.answers = [(500, {}), (429, {"Retry-After": "120"})]
    await _deliver(gw)
    sender = gw.services.webhook_sender
    assert sender is not None
    await sender.run_once()
    assert len(rec.received) == 1
    await sender.run_once()
    assert len(rec.received) == 1  # not due yet
    gw.clock.advance(10)
    await sender.run_once()
    assert len(rec.received) == 2  # the 429
    gw.clock.advance(60)
    await sender.run_once()
    assert len(rec.received) == 2  # Retry-After: 120 holds it
    gw.clock.advance(70)
    await sender.run_once()
    assert len(rec.received) == 3
    assert len({h["webhook-id"] for h, _ in rec.received}) == 1
    state = await (await gw.client.get("/v1/webhook", headers=gw.auth())).json()
    assert state["recent_deliveries"][0]["state"] == "delivered"
    assert state["recent_deliveries"][0]["created_at"].endswith("+00:00")  # RFC 3339


async def test_410_disables_the_endpoint(make_gateway: GatewayFactory, receiver: Any) -> None:
    """An endpoint answering 410 Gone is disabled and called no more."""
    gw = await make_gateway(webhook_allow_private=True)
    rec, url = receiver
    await _setup(gw, url)
    rec.answers = [(410, {})]
    await _deliver(gw)
    sender = gw.services.webhook_sender
    assert sender is not None
    await sender.run_once()
    await _deliver(gw)
    gw.clock.advance(3600)
    await sender.run_once()
    assert len(rec.received) == 1
    state = await (await gw.client.get("/v1/webhook", headers=gw.auth())).json()
    assert state["enabled"] is False and state["disabled_reason"] == "410 Gone"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        # IPv6 addresses that carry an IPv4 one: NAT64, 6to4, compatible, mapped forms
        "http://[64:ff9b::7f00:1]/x",
        "http://[64:ff9b:1::a00:1]/x",
        "http://[2002:7f00:1::1]/x",
        "http://[::127.0.0.1]/x",
        "http://[::ffff:0:7f00:1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "ftp://example.com/x",
        "http://localhost/x",
        "not a url",
    ],
)
async def test_ssrf_guard(gw: Gateway, url: str) -> None:
    """Private, loopback, link-local and non-http URLs are refused unless the operator allows."""
    resp = await gw.client.put(
        "/v1/webhook", json={"url": url, "events": ["delivered"]}, headers=gw.auth()
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["url"]


@pytest.mark.parametrize("url", ["http://[2606:4700::1111]/h", "http://[64:ff9b::808:808]/h"])
async def test_public_ipv6_addresses_are_let_through(gw: Gateway, url: str) -> None:
    """An IPv6 address is judged by the IPv4 one it carries, not refused for carrying one."""
    resp = await gw.client.put(
        "/v1/webhook", json={"url": url, "events": ["delivered"]}, headers=gw.auth()
    )
    assert resp.status == 200, await resp.text()


async def test_bad_event_type_is_named(gw: Gateway) -> None:
    """An unknown event type is a 422 naming it."""
    resp = await gw.client.put(
        "/v1/webhook",
        json={"url": "https://bank.example/h", "events": ["exploded"]},
        headers=gw.auth(),
    )
    assert resp.status == 422 and (await resp.json())["errors"][0]["loc"][:2] == ["events", 0]


async def test_not_lost_across_a_restart(
    make_gateway: GatewayFactory, receiver: Any, aiohttp_client: Any
) -> None:
    """Events recorded before a restart are delivered after it."""
    gw = await make_gateway(webhook_allow_private=True)
    rec, url = receiver
    await _setup(gw, url)
    rec.answers = [(503, {})]
    await _deliver(gw)
    sender = gw.services.webhook_sender
    assert sender is not None
    await sender.run_once()  # fed and tried once: 503
    await gw.client.close()
    settings = gw.services.settings
    app = create_app(
        settings, store=SqliteStore(settings.sqlite_path), providers=gw.providers, clock=gw.clock
    )
    client = await aiohttp_client(app)
    gw.clock.advance(3600)
    assert app[SERVICES].webhook_sender is not None
    await app[SERVICES].webhook_sender.run_once()
    assert len(rec.received) == 2
    assert json.loads(rec.received[1][1])["type"] == "message.delivered"
    await client.close()


async def test_a_failing_endpoint_is_held_and_other_banks_deliveries_go_on(
    make_gateway: GatewayFactory,
    receiver: Any,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """Bank A's endpoint fails every time: after five failures in a row its deliveries are
    held (not tried) while bank B's go on; after the cooldown one probe goes to A."""
    gw = await make_gateway(webhook_allow_private=True)
    rec_a, url_a = receiver
    rec_a.answers = [(500, {})] * 100
    rec_b = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec_b.handle)
    url_b = str((await aiohttp_server(app)).make_url("/hook"))
    await _setup(gw, url_a)
    resp = await gw.client.put(
        "/v1/webhook", json={"url": url_b, "events": ["delivered"]}, headers=gw.auth("bank_b")
    )
    assert resp.status == 200
    sender = gw.services.webhook_sender
    assert sender is not None

    async def deliver(tenant: str) -> None:
        message_id = await gw.send(tenant)
        await gw.services.dispatcher.run_once()
        body, sig = report_body((message_id, f"cmcc-{message_id}", "delivered"))
        await gw.client.post("/callbacks/cmcc/dlr", data=body, headers={"X-Signature": sig})

    for _ in range(5):
        await deliver("bank_a")
    await sender.run_once()
    assert (
        len(rec_a.received) == 5 and sender.circuit(gw.keys["bank_a"]["tenant_id"]).state == "open"
    )
    await deliver("bank_a")
    await deliver("bank_b")
    gw.clock.advance(11)  # past the first retries' backoff, inside the cooldown
    await sender.run_once()
    assert len(rec_a.received) == 5  # held, not tried
    assert len(rec_b.received) == 1  # the other bank's went
    gw.clock.advance(30)  # the cooldown is over: one probe
    await sender.run_once()
    assert len(rec_a.received) == 6
