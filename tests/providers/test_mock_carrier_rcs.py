"""The mock carriers' 5G rich messages over raw HTTP: capability, batches, receipts."""

from __future__ import annotations

from typing import Any

import pytest

from providers.signing import verify
from tests.providers.phones import rcs_phone

CAPABILITY = "/cmcc/v1/rcs/capability"
BATCH = "/cmcc/v1/rcs/batch"
MESSAGE = {
    "messageList": [
        {"contentType": "application/vnd.gsma.botmessage.v1.0+json",
         "contentText": {"message": {"generalPurposeCard": {"content": {"title": "账单"}}}}}
    ]
}  # fmt: skip


@pytest.fixture(name="cmcc")
def _cmcc(mock_app, signed):
    """A mock app with cmcc behaving as told, and a poster signing as cmcc."""

    async def start(**behaviour: Any):
        client = await mock_app({"cmcc": behaviour})

        async def post(path: str, payload: Any):
            body, headers = signed(payload)
            return await client.post(path, data=body, headers=headers)

        return client, post

    return start


def rich(sink_url: str, *messages: tuple[str, str], message: Any = MESSAGE) -> dict[str, Any]:
    return {
        "callback_url": sink_url,
        "messages": [{"client_ref": ref, "to": to, "message": message} for ref, to in messages],
    }


async def test_capability_follows_the_carrier_slice(cmcc) -> None:
    """Numbers are answered by the carrier's own capability rule, keyed as sent."""
    _client, post = await cmcc()
    yes, no = rcs_phone(capable=True), rcs_phone(capable=False)
    answer = await (await post(CAPABILITY, {"numbers": [yes, no, "junk"]})).json()
    assert answer == {"results": {yes: True, no: False, "junk": False}}


async def test_capability_share_one_makes_everyone_capable(cmcc) -> None:
    _client, post = await cmcc(capability_share=1.0)
    phones = [f"+86139{i:08d}" for i in range(100)]
    answer = await (await post(CAPABILITY, {"numbers": phones})).json()
    assert all(answer["results"][p] for p in phones)


@pytest.mark.parametrize("payload", [{}, {"numbers": []}, {"numbers": ["+1"] * 10_001}])
async def test_bad_capability_requests_are_400(cmcc, payload) -> None:
    _client, post = await cmcc()
    assert (await post(CAPABILITY, payload)).status == 400


async def test_rich_batch_accepts_capable_and_refuses_the_rest(cmcc, sink) -> None:
    """Capable numbers are accepted; others are not_capable, invalid_number or bad_message."""
    client, post = await cmcc()
    yes, no = rcs_phone(capable=True), rcs_phone(capable=False)
    payload = rich(sink.url("/cb"), ("ok", yes), ("no", no), ("bad", "12345"))
    payload["messages"].append({"client_ref": "empty", "to": yes, "message": {}})
    results = (await (await post(BATCH, payload)).json())["results"]
    assert [(r["client_ref"], r["status"], r.get("code")) for r in results] == [
        ("ok", "accepted", None),
        ("no", "rejected", "not_capable"),
        ("bad", "rejected", "invalid_number"),
        ("empty", "rejected", "bad_message"),
    ]
    (entry,) = (await (await client.get("/_mock/inbox", params={"to": yes})).json())["messages"]
    assert (entry["route"], entry["message"]) == ("carrier_rich", MESSAGE)


async def test_rich_and_sms_share_the_carriers_counts_and_dedupe(cmcc, signed, sink) -> None:
    """SMS and rich messages are one provider: one set of counters, one client_ref space."""
    client, post = await cmcc()
    phone = rcs_phone(capable=True)
    rich_answer = await (await post(BATCH, rich(sink.url("/cb"), ("m1", phone)))).json()
    sms = {
        "callback_url": sink.url("/cb"),
        "messages": [{"client_ref": "m2", "to": phone, "text": "hi"}],
    }
    await post("/cmcc/v1/sms/batch", sms)
    again = await (await post(BATCH, rich(sink.url("/cb"), ("m1", phone)))).json()
    assert again == rich_answer
    stats = await (await client.get("/_mock/stats")).json()
    assert stats["cmcc"] == {"submitted": 3, "distinct": 2}


async def test_rich_receipts_are_carrier_style_with_displayed(cmcc, sink, cmcc_secret) -> None:
    """DELIVRD then DISPLAYED, in the carriers' report shape, signed by the carrier."""
    _client, post = await cmcc(display_rate=1.0)
    answer = await (
        await post(BATCH, rich(sink.url("/callbacks/cmcc/dlr"), ("m1", rcs_phone(capable=True))))
    ).json()
    msg_id = answer["results"][0]["msg_id"]
    first = await sink.next()
    assert verify(cmcc_secret, first.body, first.signature)
    reports = first.json()["reports"]
    while len(reports) < 2:
        reports += (await sink.next()).json()["reports"]
    assert [(r["client_ref"], r["msg_id"], r["status"], r["error_code"]) for r in reports] == [
        ("m1", msg_id, "DELIVRD", None),
        ("m1", msg_id, "DISPLAYED", None),
    ]
    assert all(r["done_at"] for r in reports)


async def test_sms_never_gets_a_displayed_receipt(cmcc, sink) -> None:
    """Plain SMS has no read receipts even at display_rate 1."""
    _client, post = await cmcc(display_rate=1.0)
    sms = {
        "callback_url": sink.url("/cb"),
        "messages": [{"client_ref": "m1", "to": "+8613812345678", "text": "hi"}],
    }
    await post("/cmcc/v1/sms/batch", sms)
    assert [r["status"] for r in (await sink.next()).json()["reports"]] == ["DELIVRD"]
    with pytest.raises(TimeoutError):
        await sink.next(timeout_s=0.2)


async def test_undelivered_rich_message_is_not_displayed(cmcc, sink) -> None:
    _client, post = await cmcc(dlr_failure_rate=1.0, display_rate=1.0)
    await post(BATCH, rich(sink.url("/cb"), ("m1", rcs_phone(capable=True))))
    (report,) = (await sink.next()).json()["reports"]
    assert (report["status"], report["error_code"]) == ("UNDELIV", "UNDELIV:001")
    with pytest.raises(TimeoutError):
        await sink.next(timeout_s=0.2)


async def test_rich_batch_fails_and_limits_like_sms(cmcc, sink) -> None:
    """Outages and the rate limit apply, and record nothing."""
    client, post = await cmcc(failure_rate=1.0)
    assert (await post(BATCH, rich(sink.url("/cb"), ("m1", rcs_phone(capable=True))))).status == 503
    client, post = await cmcc(rate_limit_per_s=1)
    phone = rcs_phone(capable=True)
    assert (await post(BATCH, rich(sink.url("/cb"), ("m1", phone)))).status == 200
    assert (await post(BATCH, rich(sink.url("/cb"), ("m2", phone)))).status == 429
    assert (await (await client.get("/_mock/stats")).json())["cmcc"]["distinct"] == 1


async def test_vendors_have_no_rcs_api(mock_app, signed, secret_of, sink) -> None:
    client = await mock_app({})
    body, headers = signed({"numbers": ["+1"]}, secret_of("huawei"))
    assert (
        await client.post("/huawei/v1/rcs/capability", data=body, headers=headers)
    ).status == 404
