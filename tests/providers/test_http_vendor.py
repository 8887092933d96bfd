"""``HttpVendor`` against the real mock vendors (and a scripted one where the mock cannot err)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.dispatch.ports import ReviewResult, Submission
from gateway.errors import PermanentProviderError, RetryableProviderError
from providers.numbers import number_hash
from providers.vendors import HttpVendor
from tests.providers.phones import other_vendor_phone, uncapable_vendor_phone, vendor_phone

CARD = {"title": "账单提醒", "template_ref": "tpl-7@2", "buttons": [{"label": "查看"}]}


def card(message_id: str, to: str, payload: dict[str, Any] | None = CARD) -> Submission:
    return Submission(message_id, to, "vendor_card", f"text {message_id}", payload)


@pytest.fixture(name="vendor")
def _vendor(serve_mock_app, secret_of, session):
    """An HttpVendor for huawei (or ``name``) talking to a fresh mock app; also its base URL."""

    async def start(name: str = "huawei", *, timeout_s: float = 10.0, **behaviour: Any):
        base_url = await serve_mock_app({name: behaviour})
        client = HttpVendor(name, base_url, secret_of(name), session, timeout_s=timeout_s)
        return client, base_url

    return start


async def test_shape(vendor) -> None:
    huawei, _ = await vendor()
    assert (huawei.name, huawei.routes, huawei.max_batch, huawei.max_lookup) == (
        "huawei",
        frozenset({"vendor_card"}),
        100,
        10_000,
    )


async def test_cards_are_accepted_or_not_capable(vendor, sink, session) -> None:
    """Capable phones get a reference; others come back as a permanent 'not_capable'."""
    huawei, base_url = await vendor()
    batch = [
        card("m1", vendor_phone("huawei")),
        card("m2", other_vendor_phone("huawei")),
        card("m3", uncapable_vendor_phone("huawei")),
    ]
    ok, other, old = await huawei.submit(batch, sink.url("/cb"))
    assert ok.provider_ref and ok.error is None
    for refused in (other, old):
        assert isinstance(refused.error, PermanentProviderError)
        assert (refused.provider_ref, refused.error.code) == (None, "not_capable")
    async with session.get(f"{base_url}/_mock/inbox", params={"to": batch[0].to}) as resp:
        (entry,) = (await resp.json())["messages"]
    assert (entry["card"], entry["template_ref"]) == (CARD, "tpl-7@2")


async def test_resubmission_is_deduped(vendor, sink, session) -> None:
    """The same message twice: one reference, two submissions, one distinct."""
    huawei, base_url = await vendor()
    phone = vendor_phone("huawei")
    (first,) = await huawei.submit([card("m1", phone)], sink.url("/cb"))
    (again,) = await huawei.submit([card("m1", phone)], sink.url("/cb"))
    assert first.provider_ref == again.provider_ref
    async with session.get(f"{base_url}/_mock/stats") as resp:
        assert (await resp.json())["huawei"] == {"submitted": 2, "distinct": 1}


async def test_empty_card_is_bad_card_and_no_card_is_missing_payload(vendor, sink) -> None:
    huawei, _ = await vendor()
    phone = vendor_phone("huawei")
    empty, missing = await huawei.submit(
        [card("m1", phone, {}), card("m2", phone, None)], sink.url("/cb")
    )
    assert isinstance(empty.error, PermanentProviderError) and empty.error.code == "bad_card"
    assert (
        isinstance(missing.error, PermanentProviderError)
        and missing.error.code == "missing_payload"
    )


async def test_card_without_template_ref_is_sent_without_one(scripted, session, sink) -> None:
    """template_ref goes on the wire only when the card carries one."""
    scripted.answers["/huawei/v1/messages/batch"] = lambda body: (200, {"results": [
        {"client_ref": m["client_ref"], "msg_id": "x", "status": "accepted"} for m in body["messages"]
    ]})  # fmt: skip
    huawei = HttpVendor("huawei", scripted.base_url, b"k", session)
    await huawei.submit([card("m1", "+1", {"title": "x"}), card("m2", "+1")], sink.url("/cb"))
    (body,) = scripted.bodies("/huawei/v1/messages/batch")
    assert body["callback_url"] == sink.url("/cb")
    assert body["messages"] == [
        {"client_ref": "m1", "to": "+1", "card": {"title": "x"}},
        {"client_ref": "m2", "to": "+1", "card": CARD, "template_ref": "tpl-7@2"},
    ]


async def test_other_routes_are_a_programming_error(vendor, sink) -> None:
    huawei, _ = await vendor()
    with pytest.raises(ValueError, match="sms"):
        await huawei.submit([Submission("m1", "+1", "sms", "hi")], sink.url("/cb"))
    with pytest.raises(ValueError, match="101"):
        await huawei.submit([card(f"m{i}", "+1") for i in range(101)], sink.url("/cb"))
    assert await huawei.submit([], sink.url("/cb")) == []


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [({"failure_rate": 1.0}, "unavailable"), ({"latency_ms": 1000}, "timeout")],
)
async def test_whole_batch_failures_are_retryable(vendor, sink, behaviour, code) -> None:
    """Outages and timeouts map exactly as for carriers."""
    huawei, _ = await vendor(timeout_s=0.05, **behaviour)
    with pytest.raises(RetryableProviderError) as caught:
        await huawei.submit([card("m1", vendor_phone("huawei"))], sink.url("/cb"))
    assert caught.value.code == code


async def test_rate_limit_is_retryable_with_a_defer(vendor, sink) -> None:
    huawei, _ = await vendor(rate_limit_per_s=1)
    await huawei.submit([card("m1", vendor_phone("huawei"))], sink.url("/cb"))
    with pytest.raises(RetryableProviderError) as caught:
        await huawei.lookup_capability(["+8613812345678"])
    assert caught.value.code == "rate_limited"
    assert caught.value.defer is not None and caught.value.defer >= 1


async def test_wrong_secret_is_permanent(serve_mock_app, session, sink) -> None:
    huawei = HttpVendor("huawei", await serve_mock_app({}), b"wrong", session)
    with pytest.raises(PermanentProviderError) as caught:
        await huawei.lookup_capability(["+8613812345678"])
    assert caught.value.code == "http_401"


# capability


async def test_lookup_sends_hashes_only_and_maps_answers_back(scripted, session) -> None:
    """The vendor sees SHA-256 hashes, never numbers; answers come back keyed by number."""
    phones = ["+8613800000001", "+8613800000002", "+8613800000001"]
    yes = number_hash(phones[0])
    scripted.answers["/huawei/v1/capability"] = lambda body: (
        200, {"results": {h: h == yes for h in body["hashes"]}}
    )  # fmt: skip
    huawei = HttpVendor("huawei", scripted.base_url, b"k", session)
    assert await huawei.lookup_capability(phones) == {phones[0]: True, phones[1]: False}
    ((_path, body),) = scripted.requests
    assert body == {"hashes": [number_hash(phones[0]), number_hash(phones[1])]}
    assert not any(p in str(body) for p in phones)


async def test_lookup_agrees_with_the_mock(vendor) -> None:
    """Against the mock, lookups follow device ownership."""
    huawei, _ = await vendor()
    yes, other, old = (
        vendor_phone("huawei"),
        other_vendor_phone("huawei"),
        uncapable_vendor_phone("huawei"),
    )
    assert await huawei.lookup_capability([yes, other, old]) == {
        yes: True,
        other: False,
        old: False,
    }
    assert await huawei.lookup_capability([]) == {}


async def test_lookup_over_10000_is_a_programming_error(session) -> None:
    huawei = HttpVendor("huawei", "http://unused", b"k", session)
    with pytest.raises(ValueError, match="10001"):
        await huawei.lookup_capability(["+1"] * 10_001)


@pytest.mark.parametrize("results", [{}, {"x": "yes"}])
async def test_odd_lookup_answers_are_retryable(scripted, session, results) -> None:
    """A missing answer, or one that is not a boolean, is a retryable bad_response."""
    scripted.answers["/huawei/v1/capability"] = lambda body: (200, {"results": results | {
        h: "yes" for h in body["hashes"] if results
    }})  # fmt: skip
    huawei = HttpVendor("huawei", scripted.base_url, b"k", session)
    with pytest.raises(RetryableProviderError) as caught:
        await huawei.lookup_capability(["+1"])
    assert caught.value.code == "bad_response"


# delivery events


async def test_delivered_and_displayed_events_parse(vendor, sink) -> None:
    """The vendor-style events verify and read as delivered, then displayed."""
    huawei, _ = await vendor(display_rate=1.0)
    (outcome,) = await huawei.submit(
        [card("m1", vendor_phone("huawei"))], sink.url("/callbacks/huawei/dlr")
    )
    reports = []
    while len(reports) < 2:
        callback = await sink.next()
        assert huawei.verify(callback.body, callback.signature)
        assert not huawei.verify(callback.body, None)
        reports += huawei.parse_reports(callback.body)
    assert [(r.message_id, r.provider_ref, r.status, r.error_code) for r in reports] == [
        ("m1", outcome.provider_ref, "delivered", None),
        ("m1", outcome.provider_ref, "displayed", None),
    ]
    assert all(r.at for r in reports)


async def test_failed_event_parses_with_its_reason(vendor, sink) -> None:
    huawei, _ = await vendor(dlr_failure_rate=1.0)
    await huawei.submit([card("m1", vendor_phone("huawei"))], sink.url("/cb"))
    (report,) = huawei.parse_reports((await sink.next()).body)
    assert (report.status, report.error_code) == ("failed", "device_unreachable")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"reports": []}',
        b'{"events": [{"ref": "m1", "id": "x", "state": "READ"}]}',
        b'{"events": [{"id": "x", "state": "DELIVERED"}]}',
    ],
)
async def test_malformed_events_are_value_errors(session, body: bytes) -> None:
    """Carrier-style reports, unknown states and missing refs are not vendor events."""
    huawei = HttpVendor("huawei", "http://unused", b"k", session)
    with pytest.raises(ValueError, match="malformed"):
        huawei.parse_reports(body)


# reviews


async def test_review_round_trip(vendor, sink) -> None:
    """submit_review answers the review id; the signed verdict parses to a ReviewResult."""
    huawei, _ = await vendor()
    review_id = await huawei.submit_review(
        "tpl-7@2",
        "marketing",
        {"title": "稳赚理财"},
        "回T退订",
        sink.url("/callbacks/huawei/review"),
    )
    callback = await sink.next()
    assert huawei.verify(callback.body, callback.signature)
    assert huawei.parse_reviews(callback.body) == [
        ReviewResult("tpl-7@2", "rejected", "banned_claim: 稳赚", review_id)
    ]


async def test_approved_review_parses(vendor, sink) -> None:
    huawei, _ = await vendor()
    review_id = await huawei.submit_review(
        "t@1", "transactional", {"title": "账单"}, "账单", sink.url("/r")
    )
    assert huawei.parse_reviews((await sink.next()).body) == [
        ReviewResult("t@1", "approved", None, review_id)
    ]


async def test_bad_review_request_is_permanent(vendor, sink) -> None:
    huawei, _ = await vendor()
    with pytest.raises(PermanentProviderError) as caught:
        await huawei.submit_review("t@1", "promo", {"title": "x"}, "x", sink.url("/r"))
    assert caught.value.code == "http_400"


@pytest.mark.parametrize(
    "body", [b"[]", b'{"reviews": [{"template_ref": "t", "status": "maybe"}]}']
)
async def test_malformed_reviews_are_value_errors(session, body: bytes) -> None:
    huawei = HttpVendor("huawei", "http://unused", b"k", session)
    with pytest.raises(ValueError, match="malformed"):
        huawei.parse_reviews(body)


# replies


async def test_mo_through_a_vendor_parses(vendor, session, sink) -> None:
    """Vendors relay phones' replies in the carriers' MO shape; parse_inbound reads it."""
    huawei, base_url = await vendor()
    payload = {
        "provider": "huawei",
        "from": "+8613812345678",
        "text": "退订",
        "callback_url": sink.url("/mo"),
    }
    async with session.post(f"{base_url}/_mock/mo", json=payload) as resp:
        assert resp.status == 200
    callback = await sink.next()
    assert huawei.verify(callback.body, callback.signature)
    (message,) = huawei.parse_inbound(callback.body)
    assert (message.from_number, message.text) == ("+8613812345678", "退订")
