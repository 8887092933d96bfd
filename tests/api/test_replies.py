"""Replies from phones: opt-out words in every spelling, other replies as events."""

from __future__ import annotations

import json

import pytest

from providers import signing
from tests.conftest import Gateway
from tests.fakes import SECRET


async def _mo(
    gw: Gateway,
    text: str,
    sender: str = "+8613812345678",
    sig: str | None = None,
    in_reply_to: str | None = None,
) -> int:
    reply = {"from": sender, "text": text} | ({"in_reply_to": in_reply_to} if in_reply_to else {})
    body = json.dumps({"messages": [reply]}).encode()
    resp = await gw.client.post(
        "/callbacks/cmcc/mo", data=body, headers={"X-Signature": sig or signing.sign(SECRET, body)}
    )
    return resp.status


async def _opted_out(gw: Gateway, tenant: str = "bank_a") -> set[str]:
    assert gw.services.audience is not None
    return await gw.services.audience.store.opted_out(
        gw.keys[tenant]["tenant_id"], ["+8613812345678"]
    )


@pytest.mark.parametrize(
    "word", ["TD", "td", " T ", "t", "R", "r", "退订", "拒收", "STOP", "stop", "Unsub", " UNSUB\n"]
)
async def test_every_opt_out_spelling(gw: Gateway, word: str) -> None:
    """Each opt-out word, any case, trimmed, opts the number out of that tenant's marketing."""
    await gw.send()
    assert await _mo(gw, word) == 200
    assert await _opted_out(gw) == {"+8613812345678"}
    assert await _opted_out(gw, "bank_b") == set()  # only the tenant that wrote to it


async def test_a_reply_delivered_twice_is_recorded_once(gw: Gateway) -> None:
    """Providers deliver callbacks at least once: the same reply (the provider's same
    ``mo_id``) again counts nothing and records nothing; another reply is recorded."""
    message_id = await gw.send()

    async def post(mo_id: str) -> dict[str, int]:
        body = json.dumps(
            {"messages": [{"mo_id": mo_id, "from": "+8613812345678", "text": "好的"}]}
        ).encode()
        headers = {"X-Signature": signing.sign(SECRET, body)}
        resp = await gw.client.post("/callbacks/cmcc/mo", data=body, headers=headers)
        assert resp.status == 200
        return await resp.json()

    assert (await post("m1"))["matched"] == 1
    assert (await post("m1"))["matched"] == 0
    assert (await post("m2"))["matched"] == 1
    events = (await gw.message(message_id))["events"]
    assert [e["type"] for e in events].count("replied") == 2


async def test_other_replies_are_events(gw: Gateway) -> None:
    """A reply that is no opt-out is a replied event on the last message, nothing more."""
    message_id = await gw.send()
    assert await _mo(gw, "什么时候到期？") == 200
    assert await _opted_out(gw) == set()
    replied = [e for e in (await gw.message(message_id))["events"] if e["type"] == "replied"]
    assert replied[0]["text"] == "什么时候到期？" and replied[0]["opt_out"] is False


async def test_opted_out_number_gets_no_marketing_but_gets_otps(gw: Gateway) -> None:
    """After TD, marketing to the number is suppressed; transactional still goes."""
    await gw.send()
    await _mo(gw, "TD")
    marketing = await gw.send()
    resp = await gw.client.put(
        "/v1/templates/tx",
        json={"brand_id": "icbc", "category": "transactional", "fallback_text": "验证码 1234"},
        headers=gw.auth(),
    )
    assert resp.status == 200
    transactional = await gw.send(template_id="tx", variables={})
    while await gw.services.dispatcher.run_once():
        pass
    m = await gw.message(marketing)
    assert (m["status"], m["reason"]) == ("suppressed", "opted_out")
    assert (await gw.message(transactional))["status"] == "submitted"


async def test_forged_reply_is_401(gw: Gateway) -> None:
    """An unsigned reply opts nobody out."""
    await gw.send()
    assert await _mo(gw, "TD", sig="00") == 401
    assert await _opted_out(gw) == set()


async def test_a_reply_goes_to_the_bank_whose_message_it_answers(gw: Gateway) -> None:
    """Two banks wrote to one phone. A reply naming the message it answers (as a carrier's
    reply names the sender's sub-code) opts the number out of that bank only, and only that
    bank sees the reply; a reply naming nothing could be either bank's, so nobody gets it:
    a bank must never see another's replies, nor opt a customer out somewhere else."""
    ours = await gw.send("bank_a")
    theirs = await gw.send("bank_b")  # the newer one
    assert await _mo(gw, "我的卡号 6222", in_reply_to=ours) == 200
    assert await _mo(gw, "TD", in_reply_to=ours) == 200
    assert await _opted_out(gw) == {"+8613812345678"}
    assert await _opted_out(gw, "bank_b") == set()
    assert "replied" in [e["type"] for e in (await gw.message(ours))["events"]]
    assert "replied" not in [e["type"] for e in (await gw.message(theirs, "bank_b"))["events"]]
    assert await _mo(gw, "TD") == 200  # names nothing: two banks could own it
    assert await _opted_out(gw, "bank_b") == set()
    assert "replied" not in [e["type"] for e in (await gw.message(theirs, "bank_b"))["events"]]
