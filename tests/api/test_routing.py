"""Routing and fallback through the API, with fake providers: the best route each phone allows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.errors import PermanentProviderError, RetryableProviderError
from tests.conftest import Gateway
from tests.fakes import FakeVendor, report_body

NUMBER = "+8613812345678"  # China Mobile


def _vendor(gw: Gateway, name: str = "huawei") -> FakeVendor:
    vendor = gw.providers[name]
    assert isinstance(vendor, FakeVendor)
    return vendor


async def _approve(gw: Gateway, vendor: str = "huawei", template_id: str = "fund_due") -> None:
    tenant = gw.keys["bank_a"]["tenant_id"]
    loaded = await gw.services.catalog.template(tenant, template_id)
    assert loaded is not None
    for r in await gw.services.store.reviews_for(tenant, template_id, loaded.record.version):
        if r.vendor == vendor:
            await gw.services.store.update_review(replace(r, state="approved"))
    gw.services.catalog.forget_reviews(tenant, template_id, loaded.record.version)


async def _drain(gw: Gateway) -> None:
    for _ in range(10):
        if not await gw.services.dispatcher.run_once():
            return


async def test_capable_approved_vendor_gets_the_card(gw: Gateway) -> None:
    """A phone whose vendor shows cards, for an approved version, gets the vendor's card."""
    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    msg = await gw.message(await gw.send())
    await _drain(gw)
    msg = await gw.message(msg["message_id"])
    assert (msg["route"], msg["provider"], msg["status"]) == ("vendor_card", "huawei", "submitted")
    [sub] = _vendor(gw).submitted
    assert (
        sub.route == "vendor_card" and sub.payload is not None and sub.payload["msgType"] == "CARD"
    )
    assert msg["rendered"]["payload"]["cards"][0]["title"] == "张三，您的理财到期提醒"
    assert "fallback" not in [e["type"] for e in msg["events"]]


async def test_unapproved_vendor_is_passed_over(gw: Gateway) -> None:
    """A vendor that has not approved this version is not used; the SMS goes, saying why."""
    _vendor(gw).capable.add(NUMBER)
    message_id = await gw.send()
    await _drain(gw)
    msg = await gw.message(message_id)
    assert msg["route"] == "sms" and msg["provider"] == "cmcc"
    fallback = next(e for e in msg["events"] if e["type"] == "fallback")
    assert fallback["skipped"][0] == {"route": "vendor_card", "reason": "not_approved"}


async def test_send_can_name_its_route(gw: Gateway) -> None:
    """``route`` on a send narrows the preference: SMS only means SMS, with no fallback event."""
    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    message_id = await gw.send(route="sms")
    await _drain(gw)
    msg = await gw.message(message_id)
    assert msg["route"] == "sms" and [e["type"] for e in msg["events"]] == ["accepted", "submitted"]


async def test_only_rich_route_without_capability_is_no_route(gw: Gateway) -> None:
    """A send that allows only vendor cards, to a phone without one, is suppressed no_route."""
    message_id = await gw.send(route=["vendor_card"])
    await _drain(gw)
    msg = await gw.message(message_id)
    assert (msg["status"], msg["reason"]) == ("suppressed", "no_route")


async def test_vendor_refusal_falls_back_to_sms(gw: Gateway) -> None:
    """A vendor refusing the card (not capable after all) reroutes to SMS with a fallback event."""
    vendor = _vendor(gw)
    vendor.capable.add(NUMBER)
    vendor.reject[NUMBER] = PermanentProviderError("not_capable")
    await _approve(gw)
    message_id = await gw.send()
    await _drain(gw)
    msg = await gw.message(message_id)
    assert msg["route"] == "sms" and msg["status"] == "submitted"
    types = [e["type"] for e in msg["events"]]
    assert types[0] == "accepted" and types[-1] == "submitted" and types.count("submitted") == 1
    assert msg["events"][1]["from"] == "vendor_card" and msg["events"][1]["reason"] == "not_capable"
    assert gw.providers["cmcc"].submitted[0].message_id == message_id


async def test_dead_vendor_opens_its_circuit_then_recovers(gw: Gateway) -> None:
    """After consecutive failures a vendor's circuit opens and routing passes it over at no
    cost; after the cooldown one probe goes, and its success closes the circuit."""
    vendor = _vendor(gw)
    vendor.capable.add(NUMBER)
    await _approve(gw)
    threshold = gw.services.settings.circuit_threshold
    vendor.fail_next = [RetryableProviderError("unavailable")] * threshold
    for _ in range(threshold):
        await gw.send()
        await _drain(gw)
    health = gw.services.dispatcher.health("huawei")
    assert health.breaker.state == "open"
    calls_before = len(vendor.callbacks)
    message_id = await gw.send()
    await _drain(gw)
    msg = await gw.message(message_id)
    assert msg["route"] == "sms"
    assert {"route": "vendor_card", "reason": "circuit_open"} in msg["events"][1]["skipped"]
    assert len(vendor.callbacks) == calls_before  # the dead vendor was not even asked
    gw.clock.advance(gw.services.settings.circuit_cooldown_s + 1)
    assert health.breaker.state == "half_open"
    message_id = await gw.send()
    await _drain(gw)
    assert (await gw.message(message_id))["route"] == "vendor_card"
    assert health.breaker.state == "closed"


async def test_no_report_from_rich_route_sends_sms(gw: Gateway) -> None:
    """A rich message with no delivery report by the rich timeout goes again as SMS, with a
    fresh reference so the carrier does not take it for a repeat."""
    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    message_id = await gw.send()
    await _drain(gw)
    gw.clock.advance(gw.services.settings.rich_timeout_s + 1)
    await _drain(gw)
    msg = await gw.message(message_id)
    assert msg["route"] == "sms" and msg["status"] == "submitted"
    fallback = [e for e in msg["events"] if e["type"] == "fallback"]
    assert fallback[0]["from"] == "vendor_card" and fallback[0]["reason"] == "rich_timeout"
    [sms] = gw.providers["cmcc"].submitted
    assert sms.message_id == f"{message_id}.1"
    body, sig = report_body((sms.message_id, f"cmcc-{sms.message_id}", "delivered"))
    await gw.client.post("/callbacks/cmcc/dlr", data=body, headers={"X-Signature": sig})
    assert (await gw.message(message_id))["status"] == "delivered"


async def test_failed_rich_report_sends_sms(gw: Gateway) -> None:
    """A vendor's failure report is not final: the SMS fallback goes at once."""
    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    message_id = await gw.send()
    await _drain(gw)
    body, sig = report_body((message_id, f"huawei-{message_id}", "failed"))
    await gw.client.post("/callbacks/huawei/dlr", data=body, headers={"X-Signature": sig})
    await _drain(gw)
    msg = await gw.message(message_id)
    assert msg["route"] == "sms" and msg["status"] == "submitted"
    assert any(
        e["type"] == "fallback" and e["reason"].startswith("dlr_failed") for e in msg["events"]
    )


async def test_a_rich_failure_reported_again_sends_one_sms(gw: Gateway) -> None:
    """The vendor's failure report sent twice (before and after the SMS went) gives one
    fallback and one SMS; the SMS's own reports then settle the message."""
    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    message_id = await gw.send()
    await _drain(gw)
    failed = report_body((message_id, f"huawei-{message_id}", "failed"))
    for _ in range(2):
        await gw.client.post("/callbacks/huawei/dlr", data=failed[0], headers={"X-Signature": failed[1]})
    await _drain(gw)
    await gw.client.post("/callbacks/huawei/dlr", data=failed[0], headers={"X-Signature": failed[1]})
    await _drain(gw)
    assert len(gw.providers["cmcc"].submitted) == 1
    msg = await gw.message(message_id)
    assert [e["type"] for e in msg["events"]].count("fallback") == 1
    submitted = [e for e in msg["events"] if e["type"] == "submitted"][-1]
    delivered = report_body((message_id, submitted["provider_ref"], "delivered"))
    for _ in range(2):
        await gw.client.post("/callbacks/cmcc/dlr", data=delivered[0], headers={"X-Signature": delivered[1]})
    msg = await gw.message(message_id)
    assert msg["status"] == "delivered"
    assert [e["type"] for e in msg["events"]].count("delivered") == 1


async def test_delivered_rich_message_is_not_sent_again(gw: Gateway) -> None:
    """A rich message delivered in time never produces an SMS."""
    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    message_id = await gw.send()
    await _drain(gw)
    body, sig = report_body((message_id, f"huawei-{message_id}", "delivered"))
    await gw.client.post("/callbacks/huawei/dlr", data=body, headers={"X-Signature": sig})
    gw.clock.advance(gw.services.settings.rich_timeout_s + 1)
    await _drain(gw)
    assert (await gw.message(message_id))["status"] == "delivered"
    assert gw.providers["cmcc"].submitted == []


async def test_portability_override(gw: Gateway) -> None:
    """A number ported to another carrier is sent through that carrier."""
    resp = await gw.client.put(
        f"/v1/portability/{NUMBER}", json={"carrier": "ctcc"}, headers=gw.auth()
    )
    assert resp.status == 200
    await gw.send(route="sms")
    await _drain(gw)
    assert gw.providers["ctcc"].submitted and not gw.providers["cmcc"].submitted
    await gw.client.delete(f"/v1/portability/{NUMBER}", headers=gw.auth())
    await gw.send(route="sms")
    await _drain(gw)
    assert len(gw.providers["cmcc"].submitted) == 1
    bad = await gw.client.put(
        f"/v1/portability/{NUMBER}", json={"carrier": "att"}, headers=gw.auth()
    )
    assert bad.status == 422


async def test_rate_limited_carrier_defers_without_losing(gw: Gateway) -> None:
    """A 429 with Retry-After defers the batch that long; nothing is lost or failed."""
    gw.providers["cmcc"].fail_next = [RetryableProviderError("rate_limited", defer=5.0)]
    message_id = await gw.send(route="sms")
    await _drain(gw)
    assert (await gw.message(message_id))["status"] == "accepted"
    gw.clock.advance(6)
    await _drain(gw)
    assert (await gw.message(message_id))["status"] == "submitted"
    assert gw.services.dispatcher.health("cmcc").breaker.state == "closed"  # 429 is not death


async def test_providers_view(gw: Gateway) -> None:
    """/v1/providers shows each provider's circuit, success rate, latency and rate."""
    await gw.send(route="sms")
    await _drain(gw)
    resp = await gw.client.get("/v1/providers", headers=gw.auth(role="ops"))
    assert resp.status == 200
    items: dict[str, Any] = {p["provider"]: p for p in (await resp.json())["items"]}
    assert set(items) >= {"cmcc", "cucc", "ctcc", "huawei", "xiaomi", "oppo", "vivo", "honor"}
    assert items["cmcc"]["circuit"] == "closed" and items["cmcc"]["success_rate"] == 1.0
    assert items["cmcc"]["latency_ms"]["p50"] is not None and items["cmcc"]["submitted"] == 1
    text = await (await gw.client.get("/metrics")).text()
    assert 'gateway_provider_circuit_open{provider="cmcc"} 0.0' in text


def _rich_carrier(gw: Gateway) -> FakeVendor:
    """China Mobile, able to carry 5G rich messages (capability answered like a vendor's)."""
    carrier = FakeVendor("cmcc", frozenset({"sms", "carrier_rich"}))
    gw.providers["cmcc"] = carrier
    assert gw.services.providers["cmcc"] is carrier
    return carrier


async def test_rich_route_chosen_over_another_is_no_fallback(gw: Gateway) -> None:
    """A phone without a vendor's cards but with 5G gets the carrier's rich message: a choice
    of route, not a fallback (a fallback is an SMS sent instead of a rich route)."""
    _rich_carrier(gw).capable.add(NUMBER)
    message_id = await gw.send()
    await _drain(gw)
    msg = await gw.message(message_id)
    assert (msg["route"], msg["provider"]) == ("carrier_rich", "cmcc")
    assert "fallback" not in [e["type"] for e in msg["events"]]


async def test_a_rich_route_that_gives_up_falls_back_to_sms_not_another_rich_route(
    gw: Gateway,
) -> None:
    """A vendor's failure report sends the SMS at once, even where the carrier's rich route
    was open too, with one fallback event saying from where, to SMS and why."""
    carrier = _rich_carrier(gw)
    carrier.capable.add(NUMBER)
    _vendor(gw).capable.add(NUMBER)
    await _approve(gw)
    message_id = await gw.send()
    await _drain(gw)
    assert (await gw.message(message_id))["route"] == "vendor_card"
    body, sig = report_body((message_id, f"huawei-{message_id}", "failed"))
    await gw.client.post("/callbacks/huawei/dlr", data=body, headers={"X-Signature": sig})
    await _drain(gw)
    msg = await gw.message(message_id)
    assert (msg["route"], msg["status"]) == ("sms", "submitted")
    [fallback] = [e for e in msg["events"] if e["type"] == "fallback"]
    assert fallback["from"] == "vendor_card" and fallback["to"] == "sms"
    assert fallback["reason"].startswith("dlr_failed") and fallback["provider"] == "huawei"
    assert [s.route for s in carrier.submitted] == ["sms"]


async def test_a_carriers_sms_after_its_own_rich_message_has_a_fresh_reference(
    gw: Gateway,
) -> None:
    """China Mobile took the 5G message, then reported it failed: its SMS of the same message
    goes as ``<id>.1``, or the carrier would drop it as a repeat; its report settles it."""
    carrier = _rich_carrier(gw)
    carrier.capable.add(NUMBER)
    message_id = await gw.send()
    await _drain(gw)
    body, sig = report_body((message_id, f"cmcc-{message_id}", "failed"))
    await gw.client.post("/callbacks/cmcc/dlr", data=body, headers={"X-Signature": sig})
    await _drain(gw)
    assert [(s.route, s.message_id) for s in carrier.submitted] == [
        ("carrier_rich", message_id),
        ("sms", f"{message_id}.1"),
    ]
    ok = report_body((f"{message_id}.1", f"cmcc-{message_id}.1", "delivered"))
    await gw.client.post("/callbacks/cmcc/dlr", data=ok[0], headers={"X-Signature": ok[1]})
    msg = await gw.message(message_id)
    assert (msg["route"], msg["status"]) == ("sms", "delivered")


async def test_a_carriers_sms_after_its_own_5g_submission_timed_out_has_a_fresh_reference(
    gw: Gateway,
) -> None:
    """A 5G submission with no answer may have been taken: the SMS to the same carrier goes
    as ``<id>.1`` (under ``<id>`` the carrier would drop it as a repeat). A refusal before
    sending (429) leaves the reference as it was."""
    carrier = _rich_carrier(gw)
    carrier.capable.add(NUMBER)
    carrier.fail_next.append(RetryableProviderError("timeout"))
    timed_out = await gw.send()
    await _drain(gw)
    carrier.fail_next.append(RetryableProviderError("rate_limited", defer=0.1))
    refused = await gw.send()
    await _drain(gw)
    gw.clock.advance(1)
    await _drain(gw)
    sms = {s.message_id for s in carrier.submitted if s.route == "sms"}
    assert sms == {f"{timed_out}.1", refused}
    for message_id in (timed_out, refused):
        msg = await gw.message(message_id)
        assert (msg["route"], msg["status"]) == ("sms", "submitted")


async def test_rich_only_send_fails_when_its_route_refuses(gw: Gateway) -> None:
    """A send that allows only vendor cards has no SMS to fall back to: the vendor's refusal
    fails it, with no fallback event."""
    vendor = _vendor(gw)
    vendor.capable.add(NUMBER)
    vendor.reject[NUMBER] = PermanentProviderError("not_capable")
    await _approve(gw)
    message_id = await gw.send(route=["vendor_card"])
    await _drain(gw)
    msg = await gw.message(message_id)
    assert (msg["status"], msg["reason"]) == ("failed", "not_capable")
    assert "fallback" not in [e["type"] for e in msg["events"]]
    assert not gw.providers["cmcc"].submitted
