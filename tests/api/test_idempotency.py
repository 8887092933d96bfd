"""Idempotency-Key, with Stripe's semantics: same key and body replay; another body is 409."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Gateway

BODY: dict[str, Any] = {
    "to": "13812345678",
    "template_id": "fund_due",
    "variables": {"name": "张三", "amount": "1000.50"},
}


async def _post(gw: Gateway, body: Any, key: str, tenant: str = "bank_a") -> Any:
    return await gw.client.post(
        "/v1/messages", json=body, headers=gw.auth(tenant) | {"Idempotency-Key": key}
    )


async def test_same_key_same_body_replays(gw: Gateway) -> None:
    """The second request answers the first message again and creates nothing."""
    first = await _post(gw, BODY, "k1")
    second = await _post(gw, dict(reversed(list(BODY.items()))), "k1")  # key order differs
    assert first.status == second.status == 202
    assert (await first.json()) == (await second.json())
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await gw.services.dispatcher.run_once() == 1
    assert len(gw.providers["cmcc"].submitted) == 1


async def test_same_key_other_body_is_409(gw: Gateway) -> None:
    """Reusing a key with a different body is a conflict naming the header."""
    assert (await _post(gw, BODY, "k2")).status == 202
    resp = await _post(gw, BODY | {"to": "13912345678"}, "k2")
    assert resp.status == 409
    problem = await resp.json()
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await gw.services.dispatcher.run_once() == 1


async def test_concurrent_requests_run_once(gw: Gateway) -> None:
    """Twenty concurrent requests with one key create one message, and all answer it."""
    responses = await asyncio.gather(*(_post(gw, BODY, "race") for _ in range(20)))
    assert {r.status for r in responses} == {202}
    ids = {(await r.json())["message_id"] for r in responses}
    assert len(ids) == 1
    assert await gw.services.dispatcher.run_once() == 1


async def test_concurrent_conflicting_bodies(gw: Gateway) -> None:
    """Concurrent requests with one key and two bodies: one body wins, the other gets 409."""
    bodies = [BODY, BODY | {"to": "13912345678"}] * 5
    responses = await asyncio.gather(*(_post(gw, b, "race2") for b in bodies))
    statuses = [r.status for r in responses]
    assert set(statuses) == {202, 409}
    assert await gw.services.dispatcher.run_once() == 1


async def test_keys_are_per_tenant(gw: Gateway) -> None:
    """Two tenants using the same key get two messages."""
    a = await (await _post(gw, BODY, "shared", "bank_a")).json()
    b = await (await _post(gw, BODY, "shared", "bank_b")).json()
    assert a["message_id"] != b["message_id"]


async def test_keys_are_kept_a_day_then_purged(gw: Gateway) -> None:
    """A key is honoured after 24 hours and purged only after the retention period."""
    first = await (await _post(gw, BODY, "old")).json()
    store, settings = gw.services.store, gw.services.settings
    gw.clock.advance(24 * 3600 + 60)
    assert await store.purge_idempotency(gw.clock.now() - settings.idempotency_ttl_s) == 0
    replay = await (await _post(gw, BODY, "old")).json()
    assert replay == first
    gw.clock.advance(settings.idempotency_ttl_s)
    assert await store.purge_idempotency(gw.clock.now() - settings.idempotency_ttl_s) == 1
    fresh = await (await _post(gw, BODY, "old")).json()
    assert fresh["message_id"] != first["message_id"]
