"""Contract: ``HttpCarrier`` against the real mock carrier app, with DLRs and MO coming back."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.dispatch.ports import DeliveryReport, InboundMessage, Provider, Submission
from gateway.errors import PermanentProviderError, RetryableProviderError
from providers.carriers import HttpCarrier
from providers.mock.config import Behaviour
from providers.mock.server import create_mock_app
from providers.settings import MockSettings
from providers.signing import provider_secret
from tests.providers.phones import rcs_phone

PHONE = "+8613812345678"


def sms(message_id: str, to: str = PHONE) -> Submission:
    return Submission(message_id=message_id, to=to, route="sms", text=f"hi {message_id}")


@pytest.fixture(name="serve_mock")
def _serve_mock(
    settings: MockSettings, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> Callable[..., Awaitable[str]]:
    """Serve the real mock app, with cmcc behaving as told; returns its base URL."""

    async def start(**cmcc: Any) -> str:
        behaviours = {"cmcc": Behaviour(**{"dlr_delay_ms": 1, **cmcc})}
        server = await aiohttp_server(create_mock_app(settings, behaviours, rng=random.Random(3)))
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture(name="carrier")
def _carrier(
    serve_mock: Callable[..., Awaitable[str]], master: bytes, session: aiohttp.ClientSession
) -> Callable[..., Awaitable[HttpCarrier]]:
    """An HttpCarrier for cmcc talking to a fresh mock app."""

    async def start(*, timeout_s: float = 10.0, **cmcc: Any) -> HttpCarrier:
        base_url = await serve_mock(**cmcc)
        secret = provider_secret(master, "cmcc")
        return HttpCarrier("cmcc", base_url, secret, session, timeout_s=timeout_s)

    return start


async def test_http_carrier_carries_sms_and_rich_messages(carrier) -> None:
    """It has the shape the dispatcher expects of a carrier: both carrier routes."""
    cmcc: Provider = await carrier()
    assert (cmcc.name, cmcc.routes, cmcc.max_batch) == (
        "cmcc",
        frozenset({"sms", "carrier_rich"}),
        100,
    )
    assert HttpCarrier.max_lookup == 10_000
    await cmcc.close()


async def test_accepted_messages_get_provider_refs(carrier, sink) -> None:
    """Every accepted message comes back with the carrier's reference and no error."""
    cmcc = await carrier()
    outcomes = await cmcc.submit([sms("m1"), sms("m2")], sink.url("/callbacks/cmcc/dlr"))
    assert [o.message_id for o in outcomes] == ["m1", "m2"]
    assert all(o.provider_ref and o.error is None for o in outcomes)


async def test_rejected_number_is_a_permanent_per_message_error(carrier, sink) -> None:
    """An invalid number fails that message permanently and leaves the rest accepted."""
    cmcc = await carrier()
    ok, bad = await cmcc.submit([sms("m1"), sms("m2", to="12345")], sink.url("/cb"))
    assert ok.provider_ref and ok.error is None
    assert isinstance(bad.error, PermanentProviderError)
    assert (bad.provider_ref, bad.error.code) == (None, "invalid_number")


async def test_resubmission_is_deduped_by_the_carrier(serve_mock, master, sink, session) -> None:
    """Submitting the same message twice yields the same reference and one delivery."""
    base_url = await serve_mock()
    cmcc = HttpCarrier("cmcc", base_url, provider_secret(master, "cmcc"), session)
    (first,) = await cmcc.submit([sms("m1")], sink.url("/cb"))
    (again,) = await cmcc.submit([sms("m1")], sink.url("/cb"))
    assert first.provider_ref == again.provider_ref
    async with session.get(f"{base_url}/_mock/stats") as resp:
        assert (await resp.json())["cmcc"] == {"submitted": 2, "distinct": 1}


async def test_empty_batch_sends_nothing(carrier, sink) -> None:
    """An empty batch is answered locally."""
    cmcc = await carrier()
    assert await cmcc.submit([], sink.url("/cb")) == []


async def test_oversized_batch_is_a_programming_error(carrier, sink) -> None:
    """More than max_batch messages is refused before any request."""
    cmcc = await carrier()
    with pytest.raises(ValueError, match="101"):
        await cmcc.submit([sms(f"m{i}") for i in range(101)], sink.url("/cb"))


async def test_outage_is_retryable(carrier, sink) -> None:
    """A 503 from the carrier is a retryable 'unavailable'."""
    cmcc = await carrier(failure_rate=1.0)
    with pytest.raises(RetryableProviderError) as caught:
        await cmcc.submit([sms("m1")], sink.url("/cb"))
    assert caught.value.code == "unavailable"


async def test_rate_limit_is_retryable_with_a_defer(carrier, sink) -> None:
    """A 429 becomes 'rate_limited' deferred by at least the carrier's Retry-After."""
    cmcc = await carrier(rate_limit_per_s=1)
    await cmcc.submit([sms("m1")], sink.url("/cb"))
    with pytest.raises(RetryableProviderError) as caught:
        await cmcc.submit([sms("m2")], sink.url("/cb"))
    assert caught.value.code == "rate_limited"
    assert caught.value.defer is not None and caught.value.defer >= 1


async def test_timeout_is_retryable(carrier, sink) -> None:
    """A carrier slower than the timeout is a retryable 'timeout'."""
    cmcc = await carrier(latency_ms=1_000, timeout_s=0.05)
    with pytest.raises(RetryableProviderError) as caught:
        await cmcc.submit([sms("m1")], sink.url("/cb"))
    assert caught.value.code == "timeout"


async def test_unreachable_carrier_is_retryable(session, sink) -> None:
    """A refused connection is a retryable 'connection' error."""
    cmcc = HttpCarrier("cmcc", "http://127.0.0.1:1", b"k", session)
    with pytest.raises(RetryableProviderError) as caught:
        await cmcc.submit([sms("m1")], sink.url("/cb"))
    assert caught.value.code == "connection"


async def test_wrong_secret_is_permanent(serve_mock, sink, session) -> None:
    """A 401 will not get better by retrying."""
    cmcc = HttpCarrier("cmcc", await serve_mock(), b"wrong", session)
    with pytest.raises(PermanentProviderError) as caught:
        await cmcc.submit([sms("m1")], sink.url("/cb"))
    assert caught.value.code == "http_401"


async def test_delivery_report_arrives_signed_and_parses(carrier, sink) -> None:
    """The DLR callback verifies with the carrier's secret and reads as 'delivered'."""
    cmcc = await carrier()
    (outcome,) = await cmcc.submit([sms("m1")], sink.url("/callbacks/cmcc/dlr"))
    callback = await sink.next()
    assert callback.path == "/callbacks/cmcc/dlr"
    assert cmcc.verify(callback.body, callback.signature)
    assert not cmcc.verify(callback.body + b" ", callback.signature)
    (report,) = cmcc.parse_reports(callback.body)
    assert report == DeliveryReport("m1", outcome.provider_ref or "", "delivered", report.at)
    assert report.at


async def test_a_reports_time_that_is_not_rfc3339_is_left_out(carrier) -> None:
    """A report with a garbled time still counts; the time is not stored as it came."""
    cmcc = await carrier()
    times = ["2026-12-07T10:00:00+08:00", "garbage", "2026-12-07T10:00:00", None]
    body = {
        "reports": [
            {"client_ref": f"m{i}", "msg_id": f"r{i}", "status": "DELIVRD", "done_at": at}
            for i, at in enumerate(times)
        ]
    }
    reports = cmcc.parse_reports(json.dumps(body).encode())
    assert [r.at for r in reports] == [times[0], None, None, None]
    assert [r.status for r in reports] == ["delivered"] * 4


async def test_failed_delivery_parses_as_failed(carrier, sink) -> None:
    """An UNDELIV report reads as 'failed' with the carrier's error code."""
    cmcc = await carrier(dlr_failure_rate=1.0)
    await cmcc.submit([sms("m1")], sink.url("/cb"))
    (report,) = cmcc.parse_reports((await sink.next()).body)
    assert (report.status, report.error_code) == ("failed", "UNDELIV:001")


async def test_mo_arrives_signed_and_parses(serve_mock, master, sink, session) -> None:
    """A phone's reply sent through the mock verifies and reads as an InboundMessage."""
    mock_url = await serve_mock()
    cmcc = HttpCarrier("cmcc", mock_url, provider_secret(master, "cmcc"), session)
    payload = {"provider": "cmcc", "from": PHONE, "text": "TD", "callback_url": sink.url("/mo")}
    async with session.post(f"{mock_url}/_mock/mo", json=payload) as resp:
        assert resp.status == 200
    callback = await sink.next()
    assert cmcc.verify(callback.body, callback.signature)
    (message,) = cmcc.parse_inbound(callback.body)
    assert isinstance(message, InboundMessage)
    assert (message.from_number, message.text) == (PHONE, "TD")
    assert message.provider_ref and message.at


@pytest.mark.parametrize("body", [b"", b"not json", b"{}", b'{"reports": [{"msg_id": "x"}]}'])
async def test_malformed_reports_are_value_errors(session, body: bytes) -> None:
    """Anything that is not a list of reports raises ValueError."""
    cmcc = HttpCarrier("cmcc", "http://unused", b"k", session)
    with pytest.raises(ValueError, match="malformed"):
        cmcc.parse_reports(body)


@pytest.mark.parametrize("body", [b"[]", b'{"messages": [{"text": "TD"}]}'])
async def test_malformed_inbound_is_a_value_error(session, body: bytes) -> None:
    """Anything that is not a list of replies raises ValueError."""
    cmcc = HttpCarrier("cmcc", "http://unused", b"k", session)
    with pytest.raises(ValueError, match="malformed"):
        cmcc.parse_inbound(body)


# 5G rich messages

MESSAGE = {"messageList": [{"contentType": "text/plain", "contentText": "账单已出"}]}


def rich(message_id: str, to: str, payload: dict[str, Any] | None = MESSAGE) -> Submission:
    return Submission(message_id, to, "carrier_rich", f"text {message_id}", payload)


async def test_mixed_batch_is_routed_by_route(serve_mock, master, sink, session) -> None:
    """SMS goes to /sms/batch with its text, rich to /rcs/batch with its payload; order kept."""
    base_url = await serve_mock(capability_share=1.0)
    cmcc = HttpCarrier("cmcc", base_url, provider_secret(master, "cmcc"), session)
    batch = [rich("r1", PHONE), sms("s1"), rich("r2", PHONE)]
    outcomes = await cmcc.submit(batch, sink.url("/cb"))
    assert [o.message_id for o in outcomes] == ["r1", "s1", "r2"]
    assert all(o.provider_ref and o.error is None for o in outcomes)
    async with session.get(f"{base_url}/_mock/inbox", params={"to": PHONE}) as resp:
        inbox = {m["client_ref"]: m for m in (await resp.json())["messages"]}
    assert (inbox["s1"]["route"], inbox["s1"]["text"]) == ("sms", "hi s1")
    assert (inbox["r1"]["route"], inbox["r1"]["message"]) == ("carrier_rich", MESSAGE)
    assert "text" not in inbox["r1"]
    async with session.get(f"{base_url}/_mock/stats") as resp:
        assert (await resp.json())["cmcc"] == {"submitted": 3, "distinct": 3}


async def test_rich_message_to_an_incapable_phone_is_not_capable(
    serve_mock, master, sink, session
) -> None:
    """A phone without 5G messaging is a permanent per-message 'not_capable'."""
    cmcc = HttpCarrier("cmcc", await serve_mock(), provider_secret(master, "cmcc"), session)
    yes, no = rcs_phone(capable=True), rcs_phone(capable=False)
    ok, refused = await cmcc.submit([rich("r1", yes), rich("r2", no)], sink.url("/cb"))
    assert ok.provider_ref and ok.error is None
    assert isinstance(refused.error, PermanentProviderError)
    assert refused.error.code == "not_capable"


async def test_rich_submission_without_payload_fails_unsent(scripted, session, sink) -> None:
    """A carrier_rich submission without a payload is refused locally; the rest are sent."""
    scripted.answers["/cmcc/v1/rcs/batch"] = lambda body: (200, {"results": [
        {"client_ref": m["client_ref"], "msg_id": "x", "status": "accepted"} for m in body["messages"]
    ]})  # fmt: skip
    cmcc = HttpCarrier("cmcc", scripted.base_url, b"k", session)
    missing, sent = await cmcc.submit([rich("r1", PHONE, None), rich("r2", PHONE)], sink.url("/cb"))
    assert isinstance(missing.error, PermanentProviderError)
    assert missing.error.code == "missing_payload"
    assert sent.provider_ref == "x"
    (body,) = scripted.bodies("/cmcc/v1/rcs/batch")
    assert [m["client_ref"] for m in body["messages"]] == ["r2"]


async def test_failure_of_one_route_in_a_mixed_batch_stays_with_its_messages(
    scripted, session, sink
) -> None:
    """If the rich part fails wholesale, its messages carry the error; the SMS part is kept."""
    scripted.answers["/cmcc/v1/sms/batch"] = lambda body: (200, {"results": [
        {"client_ref": m["client_ref"], "msg_id": "sms-1", "status": "accepted"} for m in body["messages"]
    ]})  # fmt: skip
    scripted.answers["/cmcc/v1/rcs/batch"] = lambda body: (503, {"error": "down"})
    cmcc = HttpCarrier("cmcc", scripted.base_url, b"k", session)
    r1, s1 = await cmcc.submit([rich("r1", PHONE), sms("s1")], sink.url("/cb"))
    assert isinstance(r1.error, RetryableProviderError) and r1.error.code == "unavailable"
    assert (s1.provider_ref, s1.error) == ("sms-1", None)


async def test_single_route_failure_still_raises(scripted, session, sink) -> None:
    """A batch of one route fails as a whole, as the port says."""
    scripted.answers["/cmcc/v1/rcs/batch"] = lambda body: (503, {"error": "down"})
    cmcc = HttpCarrier("cmcc", scripted.base_url, b"k", session)
    with pytest.raises(RetryableProviderError):
        await cmcc.submit([rich("r1", PHONE)], sink.url("/cb"))


async def test_foreign_route_is_a_programming_error(carrier, sink) -> None:
    """A carrier does not carry vendor cards."""
    cmcc = await carrier()
    card = Submission("v1", PHONE, "vendor_card", "t", {"title": "x"})
    with pytest.raises(ValueError, match="vendor_card"):
        await cmcc.submit([card], sink.url("/cb"))


async def test_displayed_receipt_parses_as_displayed(carrier, sink) -> None:
    """A rich message's DELIVRD and DISPLAYED reports read as delivered and displayed."""
    cmcc = await carrier(capability_share=1.0, display_rate=1.0)
    (outcome,) = await cmcc.submit([rich("r1", PHONE)], sink.url("/cb"))
    reports = []
    while len(reports) < 2:
        callback = await sink.next()
        assert cmcc.verify(callback.body, callback.signature)
        reports += cmcc.parse_reports(callback.body)
    assert [(r.message_id, r.provider_ref, r.status) for r in reports] == [
        ("r1", outcome.provider_ref, "delivered"),
        ("r1", outcome.provider_ref, "displayed"),
    ]


async def test_lookup_capability_asks_the_carrier(carrier) -> None:
    """Answers are keyed by the numbers given, and agree with the carrier's rule."""
    cmcc = await carrier()
    yes, no = rcs_phone(capable=True), rcs_phone(capable=False)
    assert await cmcc.lookup_capability([yes, no, yes]) == {yes: True, no: False}
    assert await cmcc.lookup_capability([]) == {}


async def test_lookup_over_the_limit_is_a_programming_error(session) -> None:
    cmcc = HttpCarrier("cmcc", "http://unused", b"k", session)
    with pytest.raises(ValueError, match="10001"):
        await cmcc.lookup_capability([PHONE] * 10_001)


async def test_lookup_with_a_missing_answer_is_retryable(scripted, session) -> None:
    """A capability answer that leaves a number out is a retryable bad_response."""
    scripted.answers["/cmcc/v1/rcs/capability"] = lambda body: (200, {"results": {}})
    cmcc = HttpCarrier("cmcc", scripted.base_url, b"k", session)
    with pytest.raises(RetryableProviderError) as caught:
        await cmcc.lookup_capability([PHONE])
    assert caught.value.code == "bad_response"


async def test_states_on_the_way_settle_nothing(carrier) -> None:
    """ACCEPTD, ENROUTE or a state we do not know are not reports of failure: they are
    left out; the final states read as delivered or failed."""
    cmcc = await carrier()
    states = ("ACCEPTD", "ENROUTE", "SOMETHING_NEW", "REJECTD", "DELIVRD")
    reports = [{"client_ref": "m1", "msg_id": "x", "status": s} for s in states]
    body = json.dumps({"reports": reports}).encode()
    assert [r.status for r in cmcc.parse_reports(body)] == ["failed", "delivered"]
