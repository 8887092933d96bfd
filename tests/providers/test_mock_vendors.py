"""The mock handset vendors over raw HTTP: capability, card batches, events, reviews."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.mock.config import VENDORS
from providers.mock.devices import number_hash
from providers.signing import verify
from tests.providers.phones import other_vendor_phone, uncapable_vendor_phone, vendor_phone

CARD = {"title": "账单提醒", "buttons": [{"label": "查看", "url": "https://bank.example/b"}]}
BATCH = "/huawei/v1/messages/batch"
CAPABILITY = "/huawei/v1/capability"
REVIEW = "/huawei/v1/templates/review"


@pytest.fixture(name="huawei")
def _huawei(mock_app, signed, secret_of):
    """A mock app with huawei behaving as told, and a signer for huawei's requests."""

    async def start(**behaviour: Any):
        client = await mock_app({"huawei": behaviour})

        async def post(path: str, payload: Any, secret: bytes | None = None):
            body, headers = signed(payload, secret or secret_of("huawei"))
            return await client.post(path, data=body, headers=headers)

        return client, post

    return start


def cards(sink_url: str, *messages: tuple[str, str], card: Any = CARD) -> dict[str, Any]:
    return {
        "callback_url": sink_url,
        "messages": [
            {"client_ref": ref, "to": to, "card": card, "template_ref": "tpl-1@3"}
            for ref, to in messages
        ],
    }


async def stats(client) -> dict[str, Any]:
    return await (await client.get("/_mock/stats")).json()


# capability


async def test_capability_by_hash_and_by_number_agree(huawei) -> None:
    """Asking with hashes or with numbers gives the same answers, keyed as sent."""
    client, post = await huawei()
    phones = [f"+86139{i:08d}" for i in range(300)]
    by_number = (await (await post(CAPABILITY, {"numbers": phones})).json())["results"]
    hashes = [number_hash(p) for p in phones]
    by_hash = (await (await post(CAPABILITY, {"hashes": hashes})).json())["results"]
    assert list(by_number) == phones and list(by_hash) == hashes
    assert [by_number[p] for p in phones] == [by_hash[number_hash(p)] for p in phones]
    assert 0 < sum(by_number.values()) < len(phones)
    assert (await stats(client))["huawei"] == {"submitted": 0, "distinct": 0}


async def test_capability_follows_ownership(huawei) -> None:
    """Huawei's capable phones say yes; other brands and huawei's old phones say no."""
    _client, post = await huawei()
    yes, other, old = (
        vendor_phone("huawei"),
        other_vendor_phone("huawei"),
        uncapable_vendor_phone("huawei"),
    )
    answer = await (await post(CAPABILITY, {"numbers": [yes, other, old, "junk"]})).json()
    assert answer == {"results": {yes: True, other: False, old: False, "junk": False}}


async def test_capability_share_zero_and_uppercase_hashes(huawei) -> None:
    """At capability_share 0 nobody is capable; hashes are read in any case."""
    _client, post = await huawei(capability_share=0.0)
    h = number_hash(vendor_phone("huawei")).upper()
    assert (await (await post(CAPABILITY, {"hashes": [h]})).json()) == {"results": {h: False}}


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"hashes": []},
        {"hashes": ["abc"]},
        {"hashes": [number_hash("+1")], "numbers": ["+1"]},
        {"numbers": ["+8613800000000"] * 10_001},
    ],
)
async def test_bad_capability_requests_are_400(huawei, payload) -> None:
    """Neither or both lists, an empty or oversized list, or a non-hash is refused."""
    _client, post = await huawei()
    assert (await post(CAPABILITY, payload)).status == 400


async def test_capability_takes_10000_hashes(huawei) -> None:
    """A full lookup of 10,000 hashes is answered in one go."""
    _client, post = await huawei()
    hashes = [number_hash(f"+86137{i:08d}") for i in range(10_000)]
    resp = await post(CAPABILITY, {"hashes": hashes})
    assert resp.status == 200
    assert len((await resp.json())["results"]) == 10_000


async def test_capability_is_signed_and_fails_like_a_batch(huawei, secret_of) -> None:
    """Unsigned is 401, another vendor's signature 401, an outage 503, the rate limit 429."""
    client, post = await huawei()
    unsigned = await client.post(CAPABILITY, data=json.dumps({"numbers": ["+1"]}).encode())
    assert unsigned.status == 401
    assert (await post(CAPABILITY, {"numbers": ["+1"]}, secret_of("xiaomi"))).status == 401
    _client, post = await huawei(failure_rate=1.0)
    assert (await post(CAPABILITY, {"numbers": ["+1"]})).status == 503
    _client, post = await huawei(rate_limit_per_s=1)
    assert (await post(CAPABILITY, {"numbers": ["+1"]})).status == 200
    limited = await post(CAPABILITY, {"numbers": ["+1"]})
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "path", ["/cmcc/v1/capability", "/nokia/v1/messages/batch", "/huawei/v1/sms/batch"]
)
async def test_vendor_apis_exist_for_vendors_only(huawei, signed, secret_of, path) -> None:
    """Carriers have no vendor API and vendors no SMS API."""
    client, _post = await huawei()
    body, headers = signed({"numbers": ["+1"]}, secret_of(path.split("/")[1]))
    assert (await client.post(path, data=body, headers=headers)).status == 404


# batches


async def test_capable_card_is_accepted_and_lands_in_the_inbox(huawei, sink) -> None:
    """A capable number gets the card: an id, an inbox entry with card and template ref."""
    client, post = await huawei()
    phone = vendor_phone("huawei")
    resp = await post(BATCH, cards(sink.url("/callbacks/huawei/dlr"), ("m1", phone)))
    (result,) = (await resp.json())["results"]
    assert (result["client_ref"], result["status"]) == ("m1", "accepted")
    assert result["msg_id"].startswith("huawei-")
    (entry,) = (await (await client.get("/_mock/inbox", params={"to": phone})).json())["messages"]
    assert (entry["provider"], entry["route"], entry["card"], entry["template_ref"]) == (
        "huawei",
        "vendor_card",
        CARD,
        "tpl-1@3",
    )


async def test_refusals_are_per_message(huawei, sink) -> None:
    """Not capable, invalid number and bad card are refused each on its own."""
    client, post = await huawei()
    payload = cards(
        sink.url("/cb"),
        ("ok", vendor_phone("huawei")),
        ("other", other_vendor_phone("huawei")),
        ("old", uncapable_vendor_phone("huawei")),
        ("bad", "12345"),
    )
    payload["messages"].append({"client_ref": "empty", "to": vendor_phone("huawei"), "card": {}})
    payload["messages"].append({"client_ref": "list", "to": vendor_phone("huawei"), "card": [1]})
    payload["messages"].append({"client_ref": "none", "to": vendor_phone("huawei")})
    results = (await (await post(BATCH, payload)).json())["results"]
    assert [(r["client_ref"], r["status"], r.get("code")) for r in results] == [
        ("ok", "accepted", None),
        ("other", "rejected", "not_capable"),
        ("old", "rejected", "not_capable"),
        ("bad", "rejected", "invalid_number"),
        ("empty", "rejected", "bad_card"),
        ("list", "rejected", "bad_card"),
        ("none", "rejected", "bad_card"),
    ]
    assert (await stats(client))["huawei"] == {"submitted": 1, "distinct": 1}


async def test_same_client_ref_is_deduped_and_counted(huawei, sink) -> None:
    """A resubmitted client_ref keeps its id, counts as submitted, and reaches the phone once."""
    client, post = await huawei()
    phone = vendor_phone("huawei")
    first = await (await post(BATCH, cards(sink.url("/cb"), ("m1", phone)))).json()
    again = await (await post(BATCH, cards(sink.url("/cb"), ("m1", phone)))).json()
    assert again == first
    assert (await stats(client))["huawei"] == {"submitted": 2, "distinct": 1}
    inbox = await (await client.get("/_mock/inbox", params={"to": phone})).json()
    assert len(inbox["messages"]) == 1


@pytest.mark.parametrize("count", [0, 101])
async def test_batch_size_outside_1_to_100_is_400(huawei, sink, count) -> None:
    _client, post = await huawei()
    phone = vendor_phone("huawei")
    payload = cards(sink.url("/cb"), *((f"m{i}", phone) for i in range(count)))
    assert (await post(BATCH, payload)).status == 400


async def test_outage_and_rate_limit_apply_to_batches(huawei, sink) -> None:
    """The vendor batch fails and limits like the carrier batch, without recording anything."""
    client, post = await huawei(failure_rate=1.0)
    assert (await post(BATCH, cards(sink.url("/cb"), ("m1", vendor_phone("huawei"))))).status == 503
    assert (await stats(client))["huawei"]["submitted"] == 0


# delivery events


async def test_events_are_vendor_style_signed_delivered_then_displayed(
    huawei, sink, secret_of
) -> None:
    """DELIVERED then DISPLAYED come back signed by the vendor, in the vendor's shape."""
    _client, post = await huawei(display_rate=1.0)
    answer = await (
        await post(BATCH, cards(sink.url("/callbacks/huawei/dlr"), ("m1", vendor_phone("huawei"))))
    ).json()
    msg_id = answer["results"][0]["msg_id"]
    first = await sink.next()
    assert first.path == "/callbacks/huawei/dlr"
    assert verify(secret_of("huawei"), first.body, first.signature)
    assert not verify(secret_of("cmcc"), first.body, first.signature)
    events = first.json()["events"]
    while len(events) < 2:
        events += (await sink.next()).json()["events"]
    assert [(e["ref"], e["id"], e["state"], e["reason"]) for e in events] == [
        ("m1", msg_id, "DELIVERED", None),
        ("m1", msg_id, "DISPLAYED", None),
    ]
    assert all(e["timestamp"].endswith("+00:00") for e in events)
    assert set(events[0]) == {"ref", "id", "state", "reason", "timestamp"}


async def test_failed_delivery_has_a_reason_and_no_display(huawei, sink) -> None:
    """With dlr_failure_rate 1 the event is FAILED with a reason, never followed by DISPLAYED."""
    _client, post = await huawei(dlr_failure_rate=1.0, display_rate=1.0)
    await post(BATCH, cards(sink.url("/cb"), ("m1", vendor_phone("huawei"))))
    (event,) = (await sink.next()).json()["events"]
    assert (event["state"], event["reason"]) == ("FAILED", "device_unreachable")
    with pytest.raises(TimeoutError):
        await sink.next(timeout_s=0.2)


async def test_display_rate_zero_sends_no_displayed(huawei, sink) -> None:
    _client, post = await huawei(display_rate=0.0)
    await post(BATCH, cards(sink.url("/cb"), ("m1", vendor_phone("huawei"))))
    assert [e["state"] for e in (await sink.next()).json()["events"]] == ["DELIVERED"]
    with pytest.raises(TimeoutError):
        await sink.next(timeout_s=0.2)


async def test_mo_from_a_vendor_is_signed_by_the_vendor(huawei, sink, secret_of) -> None:
    """/_mock/mo works for vendors too, signed with the vendor's secret."""
    client, _post = await huawei()
    payload = {
        "provider": "huawei",
        "from": "13812345678",
        "text": "TD",
        "callback_url": sink.url("/mo"),
    }
    assert (await client.post("/_mock/mo", json=payload)).status == 200
    callback = await sink.next()
    assert verify(secret_of("huawei"), callback.body, callback.signature)
    assert callback.json()["messages"][0]["text"] == "TD"


# reviews


def review(sink_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "callback_url": sink_url,
        "template_ref": "tpl-1@3",
        "category": "marketing",
        "card": {"title": "新卡上市", "footer": "回T退订"},
        "sms_text": "新卡上市，回T退订",
        **overrides,
    }


@pytest.mark.parametrize(
    ("overrides", "status", "reason"),
    [
        ({}, "approved", None),
        (
            {"category": "transactional", "card": {"title": "账单"}, "sms_text": "账单"},
            "approved",
            None,
        ),
        ({"card": {"body": {"lines": ["年化5%，稳赚"]}}}, "rejected", "banned_claim: 稳赚"),
        ({"sms_text": "保证收益，回T退订"}, "rejected", "banned_claim: 保证收益"),
        ({"card": {"title": "新卡"}, "sms_text": "新卡上市"}, "rejected", "missing_optout"),
    ],
)
async def test_review_verdict_is_called_back_signed(
    huawei, sink, secret_of, overrides, status, reason
) -> None:
    """202 with a review id; the verdict comes back signed by the vendor to the callback URL."""
    _client, post = await huawei()
    resp = await post(REVIEW, review(sink.url("/callbacks/huawei/review"), **overrides))
    assert resp.status == 202
    review_id = (await resp.json())["review_id"]
    callback = await sink.next()
    assert callback.path == "/callbacks/huawei/review"
    assert verify(secret_of("huawei"), callback.body, callback.signature)
    assert callback.json() == {
        "reviews": [
            {"review_id": review_id, "template_ref": "tpl-1@3", "status": status, "reason": reason}
        ]
    }


async def test_manual_review_can_reject_what_the_rules_pass(huawei, sink) -> None:
    """With review_reject_rate 1 a clean template is rejected by 'manual review'."""
    _client, post = await huawei(review_reject_rate=1.0)
    await post(REVIEW, review(sink.url("/cb")))
    (verdict,) = (await sink.next()).json()["reviews"]
    assert (verdict["status"], verdict["reason"]) == ("rejected", "manual_review_failed")


async def test_refused_verdicts_are_retried(huawei, sink) -> None:
    """A callback answering 503 gets the same verdict again."""
    sink.statuses = [503]
    _client, post = await huawei()
    await post(REVIEW, review(sink.url("/cb")))
    first, second = await sink.next(), await sink.next()
    assert first.body == second.body


@pytest.mark.parametrize(
    "overrides",
    [{"category": "promo"}, {"template_ref": ""}, {"card": "text"}, {"callback_url": "/relative"}],
)
async def test_bad_review_request_is_400(huawei, sink, overrides) -> None:
    _client, post = await huawei()
    assert (await post(REVIEW, review(sink.url("/cb"), **overrides))).status == 400


@pytest.mark.parametrize("vendor", VENDORS)
async def test_every_vendor_serves_its_own_phones(
    mock_app, signed, secret_of, sink, vendor
) -> None:
    """Each of the five vendors answers lookups and takes cards for its own capable phones."""
    client = await mock_app({})
    phone, other = vendor_phone(vendor), other_vendor_phone(vendor)
    body, headers = signed({"numbers": [phone, other]}, secret_of(vendor))
    answer = await (
        await client.post(f"/{vendor}/v1/capability", data=body, headers=headers)
    ).json()
    assert answer == {"results": {phone: True, other: False}}
    body, headers = signed(cards(sink.url("/cb"), ("m1", phone)), secret_of(vendor))
    resp = await client.post(f"/{vendor}/v1/messages/batch", data=body, headers=headers)
    assert (await resp.json())["results"][0]["status"] == "accepted"
    assert (await stats(client))[vendor] == {"submitted": 1, "distinct": 1}
