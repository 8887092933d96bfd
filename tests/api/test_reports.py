"""Delivery reports in: signed, deduplicated, forward-only."""

from __future__ import annotations

from tests.conftest import Gateway
from tests.fakes import report_body


async def _sent(gw: Gateway) -> str:
    message_id = await gw.send()
    await gw.services.dispatcher.run_once()
    return message_id


async def _report(gw: Gateway, body: bytes, sig: str | None, provider: str = "cmcc") -> int:
    headers = {"X-Signature": sig} if sig is not None else {}
    resp = await gw.client.post(f"/callbacks/{provider}/dlr", data=body, headers=headers)
    return resp.status


async def test_forged_or_unsigned_report_is_401_and_changes_nothing(gw: Gateway) -> None:
    """A report with a wrong or missing signature is refused and the message is untouched."""
    message_id = await _sent(gw)
    body, sig = report_body((message_id, f"cmcc-{message_id}", "delivered"))
    assert await _report(gw, body, "0" * 64) == 401
    assert await _report(gw, body, None) == 401
    assert await _report(gw, body + b" ", sig) == 401  # body tampered after signing
    msg = await gw.message(message_id)
    assert msg["status"] == "submitted"
    assert "delivered" not in [e["type"] for e in msg["events"]]


async def test_duplicate_report_changes_nothing_twice(gw: Gateway) -> None:
    """The same report twice gives one delivered event."""
    message_id = await _sent(gw)
    body, sig = report_body((message_id, f"cmcc-{message_id}", "delivered"))
    for _ in range(3):
        assert await _report(gw, body, sig) == 200
    events = [e["type"] for e in (await gw.message(message_id))["events"]]
    assert events.count("delivered") == 1


async def test_out_of_order_report_never_moves_back(gw: Gateway) -> None:
    """A failure report after delivered leaves it delivered."""
    message_id = await _sent(gw)
    ref = f"cmcc-{message_id}"
    await _report(gw, *report_body((message_id, ref, "delivered")))
    await _report(gw, *report_body((message_id, ref, "failed")))
    msg = await gw.message(message_id)
    assert msg["status"] == "delivered"
    assert "failed" not in [e["type"] for e in msg["events"]]


async def test_report_before_submission_is_recorded(gw: Gateway) -> None:
    """A report that overtakes our own 'submitted' write (the message is being handed over)
    is kept; 'submitted' does not undo it."""
    message_id = await gw.send()
    now = gw.clock.now()
    (claimed,) = await gw.services.store.claim_due(now, 10, now + 60)  # being handed over
    assert claimed.id == message_id
    await _report(gw, *report_body((message_id, f"cmcc-{message_id}", "delivered")))
    assert (await gw.message(message_id))["status"] == "delivered"
    gw.clock.advance(61)
    assert await gw.services.dispatcher.run_once() == 0  # the delivered message left the queue


async def test_a_report_for_a_message_no_provider_was_given_settles_nothing(gw: Gateway) -> None:
    """A correctly signed report about a message still waiting to go (never handed to that
    provider, nor to any) is not applied: the message is sent as it would have been."""
    message_id = await gw.send()
    await _report(gw, *report_body((message_id, "made-up", "delivered")))
    assert (await gw.message(message_id))["status"] == "accepted"
    assert await gw.services.dispatcher.run_once() == 1
    assert (await gw.message(message_id))["status"] == "submitted"


async def test_an_sms_without_a_report_expires_with_its_ttl(gw: Gateway) -> None:
    """An SMS handed over whose report never comes does not stay submitted for ever: at its
    expiry it is expired, reason no_report."""
    message_id = await gw.send(route="sms", ttl_seconds=600)
    assert await gw.services.dispatcher.run_once() == 1
    assert (await gw.message(message_id))["status"] == "submitted"
    gw.clock.advance(599)
    assert await gw.services.dispatcher.run_once() == 0
    gw.clock.advance(2)
    assert await gw.services.dispatcher.run_once() == 1
    msg = await gw.message(message_id)
    assert (msg["status"], msg["reason"]) == ("expired", "no_report")
    assert [e["type"] for e in msg["events"]][-1] == "expired"
    assert await gw.services.dispatcher.run_once() == 0  # and it has left the queue


async def test_failed_report(gw: Gateway) -> None:
    """A failure report fails the message with the provider's code."""
    message_id = await _sent(gw)
    body, sig = report_body((message_id, f"cmcc-{message_id}", "failed"))
    assert await _report(gw, body, sig) == 200
    assert (await gw.message(message_id))["status"] == "failed"


async def test_malformed_signed_body_is_422(gw: Gateway) -> None:
    """A correctly signed body that is not a report batch is a 4xx, not a 500."""
    from providers import signing
    from tests.fakes import SECRET

    body = b'{"nope": 1}'
    assert await _report(gw, body, signing.sign(SECRET, body)) == 422


async def test_unknown_provider_is_404(gw: Gateway) -> None:
    """Reports for a provider we do not have are 404."""
    body, sig = report_body(("x", "y", "delivered"))
    assert await _report(gw, body, sig, provider="nokia") == 404


async def test_unknown_message_is_ignored(gw: Gateway) -> None:
    """A report for a message we never sent is acknowledged and ignored."""
    body, sig = report_body(("01UNKNOWN", "cmcc-x", "delivered"))
    resp = await gw.client.post("/callbacks/cmcc/dlr", data=body, headers={"X-Signature": sig})
    assert resp.status == 200 and (await resp.json())["applied"] == 0


async def test_another_providers_report_settles_nothing(gw: Gateway) -> None:
    """A report signed by a provider that does not have the message changes nothing."""
    message_id = await _sent(gw)
    body, sig = report_body((message_id, f"ctcc-{message_id}", "delivered"))
    assert await _report(gw, body, sig, provider="ctcc") == 200
    assert (await gw.message(message_id))["status"] == "submitted"


async def test_late_report_of_an_earlier_route_is_ignored(gw: Gateway) -> None:
    """After a fallback, the first route's late failure does not fail the message; the SMS's
    own delivery report still settles it."""
    from tests.api.test_routing import NUMBER, _approve, _drain, _vendor

    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    message_id = await gw.send()
    await _drain(gw)
    gw.clock.advance(gw.services.settings.rich_timeout_s + 1)
    await _drain(gw)  # rerouted to SMS
    late = report_body((message_id, f"huawei-{message_id}", "failed"))
    await gw.client.post("/callbacks/huawei/dlr", data=late[0], headers={"X-Signature": late[1]})
    assert (await gw.message(message_id))["status"] == "submitted"
    sms_ref = f"{message_id}.1"
    ok = report_body((sms_ref, f"cmcc-{sms_ref}", "delivered"))
    await gw.client.post("/callbacks/cmcc/dlr", data=ok[0], headers={"X-Signature": ok[1]})
    assert (await gw.message(message_id))["status"] == "delivered"
