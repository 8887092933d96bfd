"""Revoking a message: at once before the provider has it, by recall after."""

from __future__ import annotations

from tests.conftest import Gateway


async def _revoke(gw: Gateway, message_id: str, tenant: str = "bank_a") -> tuple[int, dict]:  # type: ignore[type-arg]
    resp = await gw.client.post(f"/v1/messages/{message_id}/revoke", headers=gw.auth(tenant))
    return resp.status, await resp.json()


async def test_revoke_before_dispatch(gw: Gateway) -> None:
    """A queued message is revoked and never sent."""
    message_id = await gw.send(route="sms")
    status, out = await _revoke(gw, message_id)
    assert status == 200 and out["status"] == "revoked"
    assert await gw.services.dispatcher.run_once() == 0
    assert gw.providers["cmcc"].submitted == []
    assert (await gw.message(message_id))["events"][-1]["type"] == "revoked"


async def test_revoke_after_submission_asks_the_provider(gw: Gateway) -> None:
    """A submitted message is recalled from its provider; the answer is recorded."""
    message_id = await gw.send(route="sms")
    await gw.services.dispatcher.run_once()
    status, out = await _revoke(gw, message_id)
    assert status == 200 and out == {
        "message_id": message_id,
        "status": "revoked",
        "recalled": True,
        "reason": None,
    }
    assert message_id in gw.providers["cmcc"].recalled  # type: ignore[attr-defined]


async def test_provider_refusing_recall_is_recorded(gw: Gateway) -> None:
    """A provider that delivered already refuses; the message keeps its status."""
    message_id = await gw.send(route="sms")
    await gw.services.dispatcher.run_once()
    gw.providers["cmcc"].delivered.add(message_id)  # type: ignore[attr-defined]
    status, out = await _revoke(gw, message_id)
    assert status == 200 and out["recalled"] is False and out["status"] == "submitted"
    assert (await gw.message(message_id))["events"][-1]["type"] == "revoke_refused"


async def test_final_or_foreign_messages(gw: Gateway) -> None:
    """A revoked message cannot be revoked again (409); another tenant's is 404."""
    message_id = await gw.send(route="sms")
    await _revoke(gw, message_id)
    assert (await _revoke(gw, message_id))[0] == 409
    assert (await _revoke(gw, message_id, tenant="bank_b"))[0] == 404
