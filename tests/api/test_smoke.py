"""A send goes from the API to the provider and back to delivered."""

from __future__ import annotations

from tests.conftest import Gateway
from tests.fakes import report_body


async def test_send_is_dispatched_and_delivered(gw: Gateway) -> None:
    """A send is accepted, dispatched to the number's carrier and marked delivered by its report."""
    message_id = await gw.send()
    assert (await gw.message(message_id))["status"] == "accepted"
    assert await gw.services.dispatcher.run_once() == 1
    [sub] = gw.providers["cmcc"].submitted
    assert sub.message_id == message_id and sub.to == "+8613812345678"
    assert sub.text == "【工商银行】张三，您的理财到期，金额1000.50元 回T退订"
    body, sig = report_body((message_id, f"cmcc-{message_id}", "delivered"))
    resp = await gw.client.post("/callbacks/cmcc/dlr", data=body, headers={"X-Signature": sig})
    assert resp.status == 200
    msg = await gw.message(message_id)
    assert msg["status"] == "delivered"
    # the card could go to no handset vendor and no 5G phone here: the SMS went, and said why
    assert [e["type"] for e in msg["events"]] == ["accepted", "fallback", "submitted", "delivered"]
    assert msg["events"][1]["from"] == "vendor_card" and msg["events"][1]["to"] == "sms"
