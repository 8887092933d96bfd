"""Campaigns through the API: fan-out, variants, windows, quiet hours, caps, opt-outs, TTL,
pause/resume/cancel, a restart in the middle, and the funnel."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.app import create_app
from gateway.dispatch.ports import Provider
from gateway.domain.messages import Status
from gateway.keys import SERVICES
from gateway.storage import audience as audience_storage
from gateway.storage.sqlite import SqliteStore
from tests.conftest import FUND_TEMPLATE, Gateway, GatewayFactory
from tests.fakes import report_body

SH = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=SH).timestamp()


async def _recipients(gw: Gateway, n: int, tenant: str = "bank_a", **extra: Any) -> list[str]:
    phones = [f"+861380000{i:04d}" for i in range(n)]
    lines = [
        {"phone": p, "tags": ["fund"], "attrs": {"name": f"客户{i}", "amount": 100 + i}} | extra
        for i, p in enumerate(phones)
    ]
    import json

    data = "\n".join(json.dumps(line) for line in lines).encode()
    resp = await gw.client.post(
        "/v1/recipients:import",
        data=data,
        headers=gw.auth(tenant) | {"Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 200, await resp.text()
    return phones


async def _campaign(gw: Gateway, **body: Any) -> str:
    payload = {
        "name": "11月理财到期",
        "audience": {"rule": {"tag": "fund"}},
        "variants": [{"template_id": "fund_due", "weight": 1}],
    } | body
    resp = await gw.client.post("/v1/campaigns", json=payload, headers=gw.auth())
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["campaign_id"])


async def _two_variants(gw: Gateway, recipients: int) -> str:
    """A campaign to ``recipients`` new recipients, half fund_due, half its variant B."""
    b = copy.deepcopy(FUND_TEMPLATE)
    b["fallback_text"] = "B版 {{ name }} {{ amount }}"
    await gw.client.put("/v1/templates/fund_due_b", json=b, headers=gw.auth())
    await _recipients(gw, recipients)
    return await _campaign(
        gw,
        variants=[
            {"template_id": "fund_due", "weight": 50},
            {"template_id": "fund_due_b", "weight": 50},
        ],
    )


async def _run(gw: Gateway) -> None:
    assert gw.services.runner is not None
    await gw.services.runner.run_until_idle()
    while await gw.services.dispatcher.run_once():
        pass


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    """The statuses with messages; the view itself names every status, zeros too."""
    assert set(counts) == {s.value for s in Status}
    return {k: v for k, v in counts.items() if v}


async def _get(gw: Gateway, path: str) -> Any:
    resp = await gw.client.get(path, headers=gw.auth())
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_campaign_fans_out_with_variants_and_attributes(gw: Gateway) -> None:
    """Every recipient gets one message; variants split by weight, the same way every time;
    the recipient's attributes fill the template."""
    campaign_id = await _two_variants(gw, 200)
    await _run(gw)
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert view["targeted"] == 200 and _nonzero(view["counts"]) == {"submitted": 200}
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    a_count, b_count = (
        stats["variants"]["fund_due"]["targeted"],
        stats["variants"]["fund_due_b"]["targeted"],
    )
    assert a_count + b_count == 200 and 70 <= a_count <= 130
    sms = {s.to: s.text for s in gw.providers["cmcc"].submitted}
    assert "客户7" in sms["+8613800000007"] and "107" in sms["+8613800000007"]
    from gateway.usecases.campaigns import choose_variant

    variants = [
        {"template_id": "fund_due", "weight": 50},
        {"template_id": "fund_due_b", "weight": 50},
    ]
    for phone, text in list(sms.items())[:20]:
        assert ("B版" in text) == (choose_variant(campaign_id, phone, variants) == "fund_due_b")


async def test_funnel_counts(gw: Gateway) -> None:
    """The funnel follows delivery reports and displays, overall and per route and provider."""
    phones = await _recipients(gw, 3)
    campaign_id = await _campaign(gw)
    await _run(gw)
    subs = {s.to: s.message_id for s in gw.providers["cmcc"].submitted}
    r0, r1 = f"cmcc-{subs[phones[0]]}", f"cmcc-{subs[phones[1]]}"
    body, sig = report_body(
        (subs[phones[0]], r0, "delivered"),
        (subs[phones[1]], r1, "failed"),
        (subs[phones[0]], r0, "displayed"),
    )
    await gw.client.post("/callbacks/cmcc/dlr", data=body, headers={"X-Signature": sig})
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    assert (stats["targeted"], stats["sent"], stats["delivered"], stats["failed"]) == (3, 3, 1, 1)
    assert stats["displayed"] == 1 and stats["clicked"] == {"unique": 0, "total": 0}
    assert stats["routes"]["sms"]["delivered"] == 1 and stats["providers"]["cmcc"]["sent"] == 3


async def test_window_defers_to_next_opening_in_recipient_time(gw: Gateway) -> None:
    """Outside the window a message is deferred to the opening in the recipient's own zone."""
    gw.clock.set(at("2026-11-23 22:00"))  # Monday 22:00 in Shanghai
    await _recipients(gw, 1)
    await gw.client.put(
        "/v1/recipients/+8613800000001",
        json={
            "tags": ["fund"],
            "attrs": {"name": "纽约", "amount": 1},
            "timezone": "America/New_York",
        },
        headers=gw.auth(),
    )
    campaign_id = await _campaign(
        gw, window={"start": "09:00", "end": "20:00", "days": ["mon", "tue", "wed", "thu", "fri"]}
    )
    await _run(gw)
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    # New York is at 09:00 Monday: inside; Shanghai waits for Tuesday 09:00
    assert _nonzero(view["counts"]) == {"deferred": 1, "submitted": 1}
    assert [s.to for s in gw.providers["cmcc"].submitted] == ["+8613800000001"]
    gw.clock.set(at("2026-11-24 09:00"))
    await _run(gw)
    assert _nonzero((await _get(gw, f"/v1/campaigns/{campaign_id}"))["counts"]) == {"submitted": 2}


async def test_quiet_hours_hold_marketing_but_not_transactional(gw: Gateway) -> None:
    """A marketing send at 23:00 waits for 08:00; an OTP at 23:00 goes at once."""
    gw.clock.set(at("2026-11-23 23:00"))
    await gw.client.put(
        "/v1/settings", json={"quiet_hours": {"start": "21:00", "end": "08:00"}}, headers=gw.auth()
    )
    otp = copy.deepcopy(FUND_TEMPLATE) | {"category": "transactional"}
    await gw.client.put("/v1/templates/notice", json=otp, headers=gw.auth())
    marketing = await gw.send()
    transactional = await gw.send(template_id="notice")
    await _run(gw)
    m = await gw.message(marketing)
    assert m["status"] == "deferred"
    assert m["events"][-1]["until"] == "2026-11-24T00:00:00.000+00:00"  # 08:00 in Shanghai
    assert (await gw.message(transactional))["status"] == "submitted"
    gw.clock.set(at("2026-11-24 08:00"))
    await _run(gw)
    assert (await gw.message(marketing))["status"] == "submitted"


async def test_quiet_hours_changed_judge_deferred_messages_again(gw: Gateway) -> None:
    """Messages deferred by quiet hours go at once when the tenant turns them off, and
    wait for the new opening when it moves them; a campaign's own window still holds its
    messages, and a paused campaign's stay parked."""
    gw.clock.set(at("2026-11-23 23:00"))
    await gw.client.put(
        "/v1/settings", json={"quiet_hours": {"start": "21:00", "end": "08:00"}}, headers=gw.auth()
    )
    await _recipients(gw, 2)
    windowed = await _campaign(
        gw, audience={"recipients": ["13800000000"]}, window={"start": "09:00", "end": "20:00"}
    )
    paused = await _campaign(gw, audience={"recipients": ["13800000001"]})
    single = await gw.send()
    await _run(gw)
    assert (await gw.message(single))["status"] == "deferred"
    await gw.client.put(  # the cap changes, the quiet hours do not: nothing is judged again
        "/v1/settings", json={"frequency_cap": {"max": 5, "per_hours": 24}}, headers=gw.auth()
    )
    await _run(gw)
    assert [e["type"] for e in (await gw.message(single))["events"]] == ["accepted", "deferred"]
    resp = await gw.client.post(f"/v1/campaigns/{paused}/pause", headers=gw.auth())
    assert resp.status == 200
    await gw.client.put(
        "/v1/settings", json={"quiet_hours": {"start": "22:00", "end": "07:00"}}, headers=gw.auth()
    )
    await _run(gw)
    m = await gw.message(single)
    assert m["status"] == "deferred"
    assert m["events"][-1]["until"] == "2026-11-23T23:00:00.000+00:00"  # 07:00 in Shanghai
    await gw.client.put("/v1/settings", json={"quiet_hours": None}, headers=gw.auth())
    await _run(gw)
    assert (await gw.message(single))["status"] == "submitted"
    view = await _get(gw, f"/v1/campaigns/{windowed}")
    assert _nonzero(view["counts"]) == {"deferred": 1}  # its own window opens at 09:00
    view = await _get(gw, f"/v1/campaigns/{paused}")
    assert view["state"] == "paused" and _nonzero(view["counts"]) == {"deferred": 1}
    await gw.client.post(f"/v1/campaigns/{paused}/resume", headers=gw.auth())
    await _run(gw)
    assert _nonzero((await _get(gw, f"/v1/campaigns/{paused}"))["counts"]) == {"submitted": 1}


async def test_a_resumed_campaign_keeps_its_submitted_messages_waiting_for_reports(
    gw: Gateway,
) -> None:
    """Resuming wakes only deferred messages: a submitted SMS waiting for its report (until
    its expiry) is not made due, so it is not expired for want of a report."""
    await _recipients(gw, 2)
    campaign_id = await _campaign(gw)
    await _run(gw)
    path = f"/v1/campaigns/{campaign_id}"
    assert _nonzero((await _get(gw, path))["counts"]) == {"submitted": 2}
    assert (await gw.client.post(f"{path}/pause", headers=gw.auth())).status == 200
    assert (await gw.client.post(f"{path}/resume", headers=gw.auth())).status == 200
    await _run(gw)
    assert _nonzero((await _get(gw, path))["counts"]) == {"submitted": 2}


async def test_deferred_message_expires_when_ttl_runs_out_first(gw: Gateway) -> None:
    """A message whose TTL ends before its window opens is expired, not sent late."""
    gw.clock.set(at("2026-11-23 22:00"))
    await _recipients(gw, 1)
    campaign_id = await _campaign(gw, window={"start": "09:00", "end": "20:00"}, ttl_seconds=3600)
    await _run(gw)
    assert _nonzero((await _get(gw, f"/v1/campaigns/{campaign_id}"))["counts"]) == {"expired": 1}
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    assert stats["expired"] == 1 and stats["sent"] == 0


async def test_frequency_cap_and_opt_out_suppress(gw: Gateway) -> None:
    """Over the cap gives frequency_cap; an opted-out number gives opted_out."""
    phones = await _recipients(gw, 3)
    assert gw.services.audience is not None
    tenant = gw.keys["bank_a"]["tenant_id"]
    from gateway.storage.audience import SqliteAudience

    store = gw.services.store
    assert isinstance(store, SqliteStore)
    await SqliteAudience(store).opt_out(tenant, phones[2], "test", gw.clock.now())
    first = await _campaign(gw, frequency_cap={"max": 1, "per_hours": 24})
    await _run(gw)
    second = await _campaign(gw, frequency_cap={"max": 1, "per_hours": 24})
    await _run(gw)
    s1 = await _get(gw, f"/v1/campaigns/{first}/stats")
    s2 = await _get(gw, f"/v1/campaigns/{second}/stats")
    assert s1["sent"] == 2 and s1["suppressed"]["opted_out"] == 1
    assert s2["sent"] == 0 and s2["suppressed"] == {
        "opted_out": 1,
        "frequency_cap": 2,
        "no_route": 0,
    }
    gw.clock.advance(25 * 3600)  # the window rolls on
    third = await _campaign(gw, frequency_cap={"max": 1, "per_hours": 24})
    await _run(gw)
    assert (await _get(gw, f"/v1/campaigns/{third}/stats"))["sent"] == 2


async def test_no_route_is_counted(gw: Gateway) -> None:
    """A recipient no carrier of ours serves is suppressed as no_route."""
    resp = await gw.client.post(
        "/v1/campaigns",
        json={
            "name": "x",
            "audience": {"recipients": ["+14155550123", "13800000000"]},
            "variants": [{"template_id": "fund_due"}],
            "variables": {"name": "X", "amount": 1},
        },
        headers=gw.auth(),
    )
    campaign_id = (await resp.json())["campaign_id"]
    await _run(gw)
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    assert stats["suppressed"]["no_route"] == 1 and stats["sent"] == 1


async def test_a_campaign_completes_once_none_of_its_own_messages_waits_to_be_sent(
    gw: Gateway,
) -> None:
    """Another campaign's queued messages do not hold a campaign open, and its own SMS that
    wait only for their reports do not either; its own queued messages do."""
    assert gw.services.runner is not None
    await _recipients(gw, 6)
    first = await _campaign(gw)
    second = await _campaign(gw, name="second")
    await gw.services.runner.run_until_idle()  # both fanned out, nothing sent yet
    await gw.client.post(f"/v1/campaigns/{second}/pause", headers=gw.auth())
    while await gw.services.dispatcher.run_once():
        pass
    await gw.services.runner.run_until_idle()
    assert (await _get(gw, f"/v1/campaigns/{first}"))["state"] == "completed"
    assert _nonzero((await _get(gw, f"/v1/campaigns/{first}"))["counts"]) == {"submitted": 6}
    await gw.client.post(f"/v1/campaigns/{second}/resume", headers=gw.auth())
    await gw.services.runner.run_until_idle()
    assert (await _get(gw, f"/v1/campaigns/{second}"))["state"] == "running"
    await _run(gw)
    await gw.services.runner.run_until_idle()
    assert (await _get(gw, f"/v1/campaigns/{second}"))["state"] == "completed"


async def test_pause_resume_cancel(gw: Gateway) -> None:
    """Paused messages wait (nothing is sent), resume sends them, cancel revokes what waits."""
    await _recipients(gw, 10)
    campaign_id = await _campaign(gw)
    assert gw.services.runner is not None
    await gw.services.runner.run_until_idle()  # fanned out, nothing dispatched yet
    resp = await gw.client.post(f"/v1/campaigns/{campaign_id}/pause", headers=gw.auth())
    assert (await resp.json())["state"] == "paused"
    while await gw.services.dispatcher.run_once():
        pass
    assert gw.providers["cmcc"].submitted == []
    assert (
        await gw.client.post(f"/v1/campaigns/{campaign_id}/pause", headers=gw.auth())
    ).status == 409
    await gw.client.post(f"/v1/campaigns/{campaign_id}/resume", headers=gw.auth())
    await _run(gw)
    assert len(gw.providers["cmcc"].submitted) == 10
    await gw.services.runner.run_until_idle()
    assert (await _get(gw, f"/v1/campaigns/{campaign_id}"))["state"] == "completed"
    assert (
        await gw.client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=gw.auth())
    ).status == 409

    other = await _campaign(gw, name="second")
    await gw.services.runner.run_until_idle()
    resp = await gw.client.post(f"/v1/campaigns/{other}/cancel", headers=gw.auth())
    assert (await resp.json())["state"] == "cancelled"
    await _run(gw)
    view = await _get(gw, f"/v1/campaigns/{other}")
    assert view["state"] == "cancelled" and _nonzero(view["counts"]) == {"revoked": 10}


async def test_a_weight_written_as_a_whole_float_is_taken(gw: Gateway) -> None:
    """JSON may write 50 as 50.0: it is 50 (a string or a boolean is a 422, above)."""
    await _recipients(gw, 1)
    campaign_id = await _campaign(gw, variants=[{"template_id": "fund_due", "weight": 50.0}])
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert view["state"] in ("running", "completed")


async def test_stats_account_for_a_cancel_and_list_every_variant(gw: Gateway) -> None:
    """A cancel's revoked messages are counted (``revoked``), so what was targeted is
    accounted for; a variant with no message yet is listed with zeros."""
    campaign_id = await _two_variants(gw, 10)
    start_at = datetime.fromtimestamp(gw.clock.now() + 30 * 86400, ZoneInfo("Asia/Shanghai"))
    later = await _campaign(gw, name="later", start_at=start_at.isoformat())
    assert gw.services.runner is not None
    await gw.services.runner.run_until_idle()  # fanned out, nothing sent yet
    for cid in (campaign_id, later):
        resp = await gw.client.post(f"/v1/campaigns/{cid}/cancel", headers=gw.auth())
        assert resp.status == 200, await resp.text()
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    assert stats["targeted"] == stats["revoked"] == 10 and stats["sent"] == 0
    variants = stats["variants"]
    assert set(variants) == {"fund_due", "fund_due_b"}
    assert sum(v["revoked"] for v in variants.values()) == 10
    assert all(v["revoked"] == v["targeted"] > 0 for v in variants.values())
    empty = await _get(gw, f"/v1/campaigns/{later}/stats")
    assert empty["targeted"] == 0 and set(empty["variants"]) == {"fund_due"}
    assert empty["variants"]["fund_due"]["targeted"] == empty["variants"]["fund_due"]["revoked"] == 0


async def test_an_sms_that_expired_without_a_report_was_sent(gw: Gateway) -> None:
    """A message handed to a provider that never reported, expired at its TTL, counts as
    sent (and expired): the funnel's sent is what providers took."""
    await _recipients(gw, 3)
    campaign_id = await _campaign(gw, ttl_seconds=600)
    await _run(gw)
    assert (await _get(gw, f"/v1/campaigns/{campaign_id}/stats"))["sent"] == 3
    gw.clock.advance(601)
    await _run(gw)
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    assert (stats["sent"], stats["expired"], stats["delivered"]) == (3, 3, 0)
    assert stats["providers"]["cmcc"]["sent"] == 3


async def test_a_message_recalled_after_it_was_sent_counts_as_sent(gw: Gateway) -> None:
    """A recall after the hand-over (the provider took it back) leaves it revoked and sent;
    one revoked before it went is revoked and not sent."""
    await _recipients(gw, 2)
    campaign_id = await _campaign(gw)
    assert gw.services.runner is not None
    await gw.services.runner.run_until_idle()
    first, second = await _campaign_messages(gw, campaign_id)
    resp = await gw.client.post(f"/v1/messages/{second['message_id']}/revoke", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    await _run(gw)
    resp = await gw.client.post(f"/v1/messages/{first['message_id']}/revoke", headers=gw.auth())
    assert resp.status == 200 and (await resp.json())["status"] == "revoked"
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    assert (stats["targeted"], stats["revoked"], stats["sent"]) == (2, 2, 1)


@pytest.mark.parametrize("between", ["batches", "parts"])
async def test_restart_in_the_middle_of_a_fan_out(
    make_gateway: GatewayFactory, aiohttp_client, between: str
) -> None:  # type: ignore[no-untyped-def]
    """A fan-out stopped after some batches, or after some parts of a batch, resumes where
    it stopped: everyone once."""
    gw = await make_gateway(
        campaign_batch=100, campaign_write_batch=100 if between == "batches" else 30
    )
    await _recipients(gw, 250)
    campaign_id = await _campaign(gw)
    runner = gw.services.runner
    assert runner is not None
    if between == "batches":
        await runner.run_once()  # one batch of 100, then the process "dies"
        stopped_at = 100
    else:  # the process "dies" as the third part's write is queued: two parts of 30 are in
        fan_out = runner._audience.fan_out
        calls = 0

        async def dying(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls >= 3:
                raise asyncio.CancelledError
            return await fan_out(*args)

        runner._audience.fan_out = dying  # type: ignore[method-assign, assignment]
        with pytest.raises(asyncio.CancelledError):
            await runner.run_once()
        stopped_at = 60
    assert (await _get(gw, f"/v1/campaigns/{campaign_id}"))["targeted"] == stopped_at
    await gw.client.close()

    settings = gw.services.settings
    app = create_app(
        settings,
        store=SqliteStore(settings.sqlite_path),
        providers=dict[str, Provider](gw.providers),
        clock=gw.clock,
    )
    client = await aiohttp_client(app)
    services = app[SERVICES]
    assert services.runner is not None
    await services.runner.run_until_idle()  # the same settings: batches of 100, or parts
    while await services.dispatcher.run_once():
        pass
    auth = {"Authorization": f"Bearer {gw.keys['bank_a']['campaign_key']}"}
    view = await (await client.get(f"/v1/campaigns/{campaign_id}", headers=auth)).json()
    assert view["targeted"] == 250 and _nonzero(view["counts"]) == {"submitted": 250}
    sent = [s.to for s in gw.providers["cmcc"].submitted]
    assert len(sent) == len(set(sent)) == 250


async def _queued_writes_done(gw: Gateway) -> None:
    """Waits for the writes a stopped round left queued: the writer runs its jobs in order,
    so a job queued after theirs is done after them."""
    await asyncio.sleep(0)  # a write task made just before the round stopped queues its job
    await gw.services.store.writer.run(lambda conn: None)  # type: ignore[attr-defined]


async def _everyone_once(gw: Gateway, campaign_id: str, phones: list[str]) -> None:
    """Runs the campaign to its end: completed, and one message sent to each of ``phones``."""
    await _run(gw)
    assert gw.services.runner is not None
    await gw.services.runner.run_until_idle()  # nothing pending: completed
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert view["state"] == "completed" and view["targeted"] == len(phones)
    assert sorted(s.to for s in gw.providers["cmcc"].submitted) == phones


async def test_a_batch_is_written_in_parts_each_with_its_cursor(
    make_gateway: GatewayFactory,
) -> None:
    """A batch of 100 goes to the database in parts of 30, in order: one round writes all
    four parts, and everyone gets one message."""
    gw = await make_gateway(campaign_batch=100, campaign_write_batch=30)
    phones = await _recipients(gw, 250)
    campaign_id = await _campaign(gw)
    runner = gw.services.runner
    assert runner is not None
    audience = runner._audience
    written: list[tuple[int, str | None]] = []
    fan_out = audience.fan_out

    async def recording(campaign_id: str, messages: Any, cursor: Any, *rest: Any) -> Any:
        written.append((len(messages), cursor))
        return await fan_out(campaign_id, messages, cursor, *rest)

    audience.fan_out = recording  # type: ignore[method-assign, assignment]
    assert await runner.run_once()
    assert written == [(30, phones[29]), (30, phones[59]), (30, phones[89]), (10, phones[99])]
    assert (await _get(gw, f"/v1/campaigns/{campaign_id}"))["targeted"] == 100
    await _everyone_once(gw, campaign_id, phones)


@pytest.mark.parametrize("failing", ["write", "job", "render"])
async def test_a_part_that_fails_leaves_the_cursor_after_the_last_part_written(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A part whose write fails (before it reaches the writer, or in the writer's job after
    its messages went in), or that fails to render while the part before it is being
    written, stops the round: the parts before it stay written, nothing after it is, and
    the next round goes on from there. Everyone once."""
    gw = await make_gateway(campaign_batch=100, campaign_write_batch=30)
    phones = await _recipients(gw, 250)
    campaign_id = await _campaign(gw)
    runner = gw.services.runner
    assert runner is not None
    calls = 0
    if failing == "job":  # in the writer's transaction: the part's rows are rolled back
        real_insert = audience_storage.insert_messages

        def breaking_insert(*args: Any, **kwargs: Any) -> int:
            nonlocal calls
            calls += 1
            new = real_insert(*args, **kwargs)
            if calls == 2:
                raise sqlite3.OperationalError("the second part's job failed")
            return new

        monkeypatch.setattr(audience_storage, "insert_messages", breaking_insert)
    else:
        owner, name = (runner._audience, "fan_out") if failing == "write" else (runner, "_render")
        real = getattr(owner, name)

        async def breaking(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError(f"the second part's {failing} failed")
            return await real(*args)

        setattr(owner, name, breaking)
    counted: list[int] = []
    runner._on_messages = counted.append
    assert not await runner.run_once()  # the campaign's round failed (and was logged)
    await _queued_writes_done(gw)
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert view["targeted"] == 30
    assert sum(counted) == 30  # counted (and the dispatcher woken) even if left queued
    await _everyone_once(gw, campaign_id, phones)


async def test_a_pause_between_parts_writes_nothing_more(make_gateway: GatewayFactory) -> None:
    """Paused while a part is being written: the parts queued after it write nothing (they
    find the campaign paused, or the cursor not where they start), and a resume goes on
    after the last part written."""
    gw = await make_gateway(campaign_batch=100, campaign_write_batch=30)
    phones = await _recipients(gw, 100)
    campaign_id = await _campaign(gw)
    runner = gw.services.runner
    assert runner is not None
    fan_out = runner._audience.fan_out
    answers: list[int | None] = []
    calls = 0

    async def pausing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second part's write: the pause comes before it
            resp = await gw.client.post(f"/v1/campaigns/{campaign_id}/pause", headers=gw.auth())
            assert resp.status == 200, await resp.text()
        answers.append(await fan_out(*args))
        return answers[-1]

    runner._audience.fan_out = pausing  # type: ignore[method-assign, assignment]
    assert not await runner.run_once()
    await _queued_writes_done(gw)
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert view["state"] == "paused" and view["targeted"] == 30
    assert sorted(answers, key=str)[0] == 30 and set(answers[1:]) == {None}
    await gw.client.post(f"/v1/campaigns/{campaign_id}/resume", headers=gw.auth())
    await _everyone_once(gw, campaign_id, phones)


async def test_campaign_validation(gw: Gateway) -> None:
    """Bad audiences, variants, windows and unknown fields are 422 naming the field."""
    cases: list[tuple[dict[str, Any], list[str | int]]] = [
        ({"audience": {}}, ["audience"]),
        ({"audience": {"segment_id": "nope"}}, ["audience", "segment_id"]),
        (
            {"audience": {"rule": {"attr": "x", "op": "bad", "value": 1}}},
            ["audience", "rule", "op"],
        ),
        ({"audience": {"recipients": ["12"]}}, ["audience", "recipients", 0]),
        ({"variants": [{"template_id": "missing"}]}, ["variants", 0, "template_id"]),
        ({"variants": []}, ["variants"]),
        (
            {"variants": [{"template_id": "fund_due"}, {"template_id": "fund_due"}]},
            ["variants", 1, "template_id"],
        ),
        ({"window": {"start": "9", "end": "20:00"}}, ["window", "start"]),
        ({"window": {"start": "09:00", "end": "20:00", "days": ["monday"]}}, ["window", "days", 0]),
        ({"frequency_cap": {"max": 0, "per_hours": 24}}, ["frequency_cap", "max"]),
        ({"frequency_cap": {"max": "2", "per_hours": 24}}, ["frequency_cap", "max"]),
        ({"variants": [{"template_id": "fund_due", "weight": "50"}]}, ["variants", 0, "weight"]),
        ({"variants": [{"template_id": "fund_due", "weight": True}]}, ["variants", 0, "weight"]),
        ({"window": {"start": "+9:00", "end": "20:00"}}, ["window", "start"]),
        ({"window": {"start": "09:00", "end": "٢٠:٠٠"}}, ["window", "end"]),
        ({"surprise": True}, ["surprise"]),
        ({"start_at": 1795000000}, ["start_at"]),
        ({"start_at": "9999-12-31T23:59:59+08:00"}, ["start_at"]),
        ({"ttl_seconds": "3600"}, ["ttl_seconds"]),
        ({"variables": {"amount": "abc"}}, ["variables", "amount"]),
        ({"variables": {"name": "张" * 21}}, ["variables", "name"]),
    ]
    base: dict[str, Any] = {
        "name": "x",
        "audience": {"rule": {"tag": "fund"}},
        "variants": [{"template_id": "fund_due"}],
    }
    for change, loc in cases:
        resp = await gw.client.post("/v1/campaigns", json=base | change, headers=gw.auth())
        assert resp.status == 422, (change, await resp.text())
        assert loc in [e["loc"] for e in (await resp.json())["errors"]], (change, await resp.text())
    assert (await gw.client.get("/v1/campaigns/01NOPE", headers=gw.auth())).status == 404
    resp = await gw.client.post("/v1/campaigns", json=[base], headers=gw.auth())
    assert resp.status == 422 and (await resp.json())["errors"][0]["loc"] == ["body"]


async def test_scheduled_campaign_waits_for_start(gw: Gateway) -> None:
    """A campaign with start_at in the future is scheduled, and runs from then."""
    await _recipients(gw, 2)
    from gateway.clock import to_rfc3339

    resp = await gw.client.post(
        "/v1/campaigns",
        json={
            "name": "later",
            "audience": {"rule": {"tag": "fund"}},
            "variants": [{"template_id": "fund_due"}],
            "start_at": to_rfc3339(gw.clock.now() + 3600),
        },
        headers=gw.auth(),
    )
    out = await resp.json()
    assert out["state"] == "scheduled"
    await _run(gw)
    assert (await _get(gw, f"/v1/campaigns/{out['campaign_id']}"))["targeted"] == 0
    path = f"/v1/campaigns/{out['campaign_id']}"
    paused = await gw.client.post(f"{path}/pause", headers=gw.auth())
    assert (await paused.json())["state"] == "paused"
    resumed = await gw.client.post(f"{path}/resume", headers=gw.auth())
    assert (await resumed.json())["state"] == "scheduled"  # paused before its start: waits on
    await _run(gw)
    assert (await _get(gw, path))["targeted"] == 0
    gw.clock.advance(3601)
    await _run(gw)
    view = await _get(gw, path)
    assert view["state"] == "running" and _nonzero(view["counts"]) == {"submitted": 2}


async def test_cap_holds_across_concurrent_batches(gw: Gateway) -> None:
    """Two dispatch rounds running at once cannot send past a cap between them."""
    import asyncio

    await gw.client.put(
        "/v1/settings", json={"frequency_cap": {"max": 1, "per_hours": 24}}, headers=gw.auth()
    )
    first = await gw.send()
    second = await gw.send()
    dispatcher = gw.services.dispatcher
    now = gw.clock.now()
    store = gw.services.store
    a = await store.claim_due(now, 1, now + 60)
    b = await store.claim_due(now, 1, now + 60)
    await asyncio.gather(dispatcher._process(a), dispatcher._process(b))
    statuses = sorted([(await gw.message(first))["status"], (await gw.message(second))["status"]])
    assert statuses == ["submitted", "suppressed"]


async def test_what_a_slow_round_recorded_early_counts_once_for_a_cap(
    make_gateway: GatewayFactory,
) -> None:
    """A round that records what went at half its lease (one of its providers hangs) hands
    those sends' cap counting to the database at once: a second round meanwhile counts each
    of them once, not also as still on its way."""
    gw = await make_gateway(dispatch_lease_s=0.2)
    await gw.client.put(
        "/v1/settings", json={"frequency_cap": {"max": 2, "per_hours": 24}}, headers=gw.auth()
    )
    first = await gw.send(to="13812345678")  # China Mobile
    await gw.send(to="13000000001")  # China Unicom, which hangs
    release = gw.providers["cucc"].hold = asyncio.Event()
    dispatcher = gw.services.dispatcher
    slow_round = asyncio.create_task(dispatcher.run_once())
    for _ in range(300):
        if (await gw.message(first))["status"] == "submitted":
            break
        await asyncio.sleep(0.01)
    assert not slow_round.done()
    second = await gw.send(to="13812345678")  # the cap's second send to this number
    assert await dispatcher.run_once() == 1
    assert (await gw.message(second))["status"] == "submitted"
    release.set()
    assert await slow_round == 2


async def test_ops_key_sees_campaign_recipients_masked(gw: Gateway) -> None:
    """A campaign's explicit recipient list is masked for the ops role."""
    resp = await gw.client.post(
        "/v1/campaigns",
        json={
            "name": "x",
            "audience": {"recipients": ["13812345678"]},
            "variants": [{"template_id": "fund_due"}],
            "variables": {"name": "X", "amount": 1},
        },
        headers=gw.auth(),
    )
    campaign_id = (await resp.json())["campaign_id"]
    ops = await (
        await gw.client.get(f"/v1/campaigns/{campaign_id}", headers=gw.auth(role="ops"))
    ).json()
    assert ops["audience"]["recipients"] == ["+86138****5678"]
    mine = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert mine["audience"]["recipients"] == ["+8613812345678"]


async def test_a_campaign_posted_again_with_its_idempotency_key_is_made_once(gw: Gateway) -> None:
    """A campaign system retrying a POST /v1/campaigns (its first answer lost) gets the first
    campaign again, not a second one that sends everyone a second message; the same key
    with another body is 409 naming the header; requests racing with one key make one."""
    await _recipients(gw, 5)
    payload = {
        "name": "11月理财到期",
        "audience": {"rule": {"tag": "fund"}},
        "variants": [{"template_id": "fund_due", "weight": 1}],
    }
    key = {"Idempotency-Key": "crm-campaign-7"}
    first = await gw.client.post("/v1/campaigns", json=payload, headers=gw.auth() | key)
    assert first.status == 202 and "Idempotent-Replayed" not in first.headers
    answer = await first.json()
    again = await gw.client.post("/v1/campaigns", json=payload, headers=gw.auth() | key)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (
        await again.json() == answer == {"campaign_id": answer["campaign_id"], "state": "running"}
    )
    other = await gw.client.post(
        "/v1/campaigns", json=payload | {"name": "另一个"}, headers=gw.auth() | key
    )
    assert other.status == 409
    assert (await other.json())["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    # racing: both miss the key, both validate; the writer lets one make the campaign
    race = {"Idempotency-Key": "crm-campaign-8"}
    answers = await asyncio.gather(
        *(gw.client.post("/v1/campaigns", json=payload, headers=gw.auth() | race) for _ in range(3))
    )
    ids = {(await r.json())["campaign_id"] for r in answers}
    assert [r.status for r in answers] == [202] * 3 and len(ids) == 1
    assert sorted("Idempotent-Replayed" in r.headers for r in answers) == [False, True, True]
    await _run(gw)
    view = await _get(gw, f"/v1/campaigns/{answer['campaign_id']}")
    assert view["targeted"] == 5
    sent = [s.to for s in gw.providers["cmcc"].submitted]
    assert len(sent) == 10 and len(set(sent)) == 5  # two campaigns made, each once
    # another tenant's same key is its own
    await _recipients(gw, 1, tenant="bank_b")
    theirs = await gw.client.post("/v1/campaigns", json=payload, headers=gw.auth("bank_b") | key)
    assert theirs.status == 202 and "Idempotent-Replayed" not in theirs.headers
    assert (await theirs.json())["campaign_id"] != answer["campaign_id"]
    # a key the tenant used for a single send, with that same body, makes no campaign
    send = {
        "to": "13812345678",
        "template_id": "fund_due",
        "variables": {"name": "张三", "amount": "1"},
    }
    used = {"Idempotency-Key": "crm-send-1"}
    assert (await gw.client.post("/v1/messages", json=send, headers=gw.auth() | used)).status == 202
    crossed = await gw.client.post("/v1/campaigns", json=send, headers=gw.auth() | used)
    assert crossed.status == 409


async def _campaign_messages(gw: Gateway, campaign_id: str) -> list[Any]:
    logs = await _get(gw, f"/v1/logs?campaign_id={campaign_id}&limit=100")
    return [await gw.message(item["message_id"]) for item in logs["items"]]


async def test_a_campaign_sends_the_version_it_was_made_with(gw: Gateway) -> None:
    """A template stored again after the campaign was made (a version its vendors have not
    reviewed) is for later campaigns: this one's messages keep the version it was made with."""
    await _recipients(gw, 3)
    campaign_id = await _campaign(gw)
    newer = copy.deepcopy(FUND_TEMPLATE)
    newer["fallback_text"] = "第二版 {{ name }}"
    resp = await gw.client.put("/v1/templates/fund_due", json=newer, headers=gw.auth())
    assert (await resp.json())["version"] == 2
    await _run(gw)
    messages = await _campaign_messages(gw, campaign_id)
    assert len(messages) == 3
    assert {m["template_version"] for m in messages} == {1}
    assert not any("第二版" in m["rendered"]["text"] for m in messages)
    later = await _campaign(gw, audience={"recipients": ["13800000001"]})
    await _run(gw)
    [message] = await _campaign_messages(gw, later)
    assert message["template_version"] == 2 and "第二版" in message["rendered"]["text"]


async def test_a_variant_that_fails_todays_checks_fails_its_messages_and_the_campaign_ends(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variant's version that fails a check added after the campaign was made (as after an
    upgrade and a restart): its recipients get failed messages (render_error, saying why),
    the other variant's are sent, and the campaign completes instead of failing every
    round for ever."""
    from cards.compiled import CompiledTemplate, TemplateCheckFailed
    from gateway.usecases import catalog

    campaign_id = await _two_variants(gw, 40)
    real_build = CompiledTemplate.build

    def stricter(spec: Any) -> CompiledTemplate:
        if "B版" in spec.fallback_text:
            raise TemplateCheckFailed([(("fallback_text",), "a check added since")])
        return real_build(spec)

    monkeypatch.setattr(catalog.CompiledTemplate, "build", stricter)
    gw.services.catalog._versions.clear()  # a restart: nothing built yet
    gw.services.catalog._latest.clear()
    await _run(gw)
    await _run(gw)
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert view["state"] == "completed"
    counts = _nonzero(view["counts"])
    assert counts["failed"] > 0 and counts["submitted"] > 0
    assert counts["failed"] + counts["submitted"] == 40
    stats = await _get(gw, f"/v1/campaigns/{campaign_id}/stats")
    assert stats["variants"]["fund_due_b"]["failed"] == counts["failed"]
    assert stats["variants"]["fund_due"]["failed"] == 0
    failed = [m for m in await _campaign_messages(gw, campaign_id) if m["status"] == "failed"]
    assert {m["reason"] for m in failed} == {"render_error"}
    assert "fails today's checks" in failed[0]["rendered"]["error"]


async def test_a_pattern_check_held_up_once_fails_nobody_in_a_campaign(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``regex`` times a match on the whole process's CPU clock, so busy threads can run a
    trivial match out of time. Held up once in the fan-out, a campaign variable's pattern
    (checked once a batch) failed the batch and, refused for good, every later one: a
    million-recipient campaign lost 166,000 messages as ``render_error``. Now it is checked
    again, and the POST's own check is held up the same way without a 422."""
    from cards import patterns

    template = copy.deepcopy(FUND_TEMPLATE)
    template["variables"]["fund_id"] = {"type": "string", "pattern": "[A-Z0-9]{1,12}"}
    resp = await gw.client.put("/v1/templates/fund_pat", json=template, headers=gw.auth())
    assert resp.status in (200, 201), await resp.text()
    real = patterns.compile_pattern("[A-Z0-9]{1,12}")
    calls = [0]

    class HeldUp:
        """The POST's first match and the fan-out's first run out of time."""

        def fullmatch(self, text: str, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] in (1, 3):
                raise TimeoutError("regular expression time-out")
            return real.fullmatch(text, **kw)

    monkeypatch.setattr(patterns, "_SLOW", set())
    monkeypatch.setattr(patterns, "compile_pattern", lambda pattern: HeldUp())
    await _recipients(gw, 30)
    campaign_id = await _campaign(
        gw,
        variants=[{"template_id": "fund_pat", "weight": 1}],
        variables={"fund_id": "F001"},
    )
    await _run(gw)
    view = await _get(gw, f"/v1/campaigns/{campaign_id}")
    assert calls == [4] and _nonzero(view["counts"]) == {"submitted": 30}


async def test_a_single_marketing_send_keeps_quiet_hours_in_the_recipients_own_time(
    gw: Gateway,
) -> None:
    """Quiet hours hold a single marketing send by the recipient's own clock when the
    tenant knows the number's time zone, and Shanghai's otherwise."""
    gw.clock.set(at("2026-12-06 19:20"))  # 06:20 in New York
    await gw.client.put(
        "/v1/settings", json={"quiet_hours": {"start": "21:00", "end": "08:00"}}, headers=gw.auth()
    )
    resp = await gw.client.put(
        "/v1/recipients/13800000011",
        json={"attrs": {"name": "Bob"}, "timezone": "America/New_York"},
        headers=gw.auth(),
    )
    assert resp.status == 201
    in_new_york = await gw.send(to="13800000011")
    in_shanghai = await gw.send(to="13800000012")
    await _run(gw)  # 06:20 in New York is inside quiet hours, 19:20 in Shanghai is not
    m = await gw.message(in_new_york)
    assert m["status"] == "deferred"
    assert m["events"][-1]["until"] == "2026-12-06T13:00:00.000+00:00"  # 08:00 in New York
    assert (await gw.message(in_shanghai))["status"] == "submitted"  # 19:20 in Shanghai


async def test_lookups_by_number_cover_lists_longer_than_sqlites_parameter_limit(
    gw: Gateway,
) -> None:
    """Opt-outs, time zones and recipients are looked up 900 numbers at a time: a list of
    2,000 finds the ones past the first 900 too."""
    from gateway.storage.audience import SqliteAudience

    store = gw.services.store
    assert isinstance(store, SqliteStore)
    audience = SqliteAudience(store)
    tenant = gw.keys["bank_a"]["tenant_id"]
    phones = [f"+86138{i:08d}" for i in range(2000)]
    far = phones[1500]
    await audience.opt_out(tenant, far, "test", gw.clock.now())
    resp = await gw.client.put(
        f"/v1/recipients/{far}", json={"timezone": "Asia/Tokyo"}, headers=gw.auth()
    )
    assert resp.status == 201
    assert await audience.opted_out(tenant, phones) == {far}
    assert await audience.timezones(tenant, phones) == {far: "Asia/Tokyo"}
    assert list(await audience.recipients(tenant, phones)) == [far]


async def test_recipients_stored_as_orjson_writes_them_read_back_exactly(gw: Gateway) -> None:
    """Campaigns read recipients with orjson: what the API stored comes back the same
    (64-bit limits, CJK, escapes), and a row that orjson refuses (edited by hand, with a
    NaN) is still read, as before."""
    from gateway.storage.audience import SqliteAudience

    store = gw.services.store
    assert isinstance(store, SqliteStore)
    audience = SqliteAudience(store)
    tenant = gw.keys["bank_a"]["tenant_id"]
    attrs = {
        "big": 2**64 - 1,
        "small": -(2**63),
        "precise": 2**53 + 1,
        "ratio": 0.1,
        "name": "客户\u2028\"x\"\\",
        "list": [1, "二", None, True],
    }
    phone = "+8613800009999"
    resp = await gw.client.put(
        f"/v1/recipients/{phone}", json={"tags": ["fund"], "attrs": attrs}, headers=gw.auth()
    )
    assert resp.status == 201, await resp.text()
    got = await audience.recipients(tenant, [phone])
    assert got[phone].attrs == attrs and got[phone].tags == ["fund"]
    assert all(type(got[phone].attrs[k]) is type(v) for k, v in attrs.items())
    await store.writer.run(
        lambda conn: conn.execute(
            "UPDATE recipients SET attrs = '{\"x\": NaN}' WHERE tenant_id = ? AND phone = ?",
            (tenant, phone),
        )
    )
    (found,) = await audience.stream(tenant, None, None, 10)
    assert found.phone == phone and found.attrs["x"] != found.attrs["x"]  # NaN


async def test_settings_windows_and_zones_stored_before_the_checks_still_dispatch(
    gw: Gateway,
) -> None:
    """Values earlier versions took and stored (quiet hours ``" 8:00"``, a window starting
    ``"+9:00"``, a recipient in ``localtime``) are read as they were: refused on input now,
    they must not fail the dispatch round of every message claimed with them."""
    store = gw.services.store
    tenant = gw.keys["bank_a"]["tenant_id"]
    await store.put_settings(tenant, {"quiet_hours": {"start": "21:00", "end": " 8:00"}})
    gw.services.dispatcher.policy.forget(tenant)  # type: ignore[union-attr]
    phones = await _recipients(gw, 2)
    await store.writer.run(  # type: ignore[attr-defined]
        lambda conn: conn.execute(
            "UPDATE recipients SET timezone = 'localtime' WHERE phone = ?", (phones[0],)
        )
    )
    campaign_id = await _campaign(gw, window={"start": "00:00", "end": "23:59"})
    await store.writer.run(  # type: ignore[attr-defined]
        lambda conn: conn.execute(
            "UPDATE campaigns SET body = json_set(body, '$.window.start', '+0:00')"
            " WHERE campaign_id = ?",
            (campaign_id,),
        )
    )
    other = await gw.send(tenant="bank_b", to="13812340000")
    await _run(gw)
    assert (await gw.message(other, tenant="bank_b"))["status"] == "submitted"
    counts = _nonzero((await _get(gw, f"/v1/campaigns/{campaign_id}"))["counts"])
    assert sum(counts.values()) == 2 and not counts.keys() & {"accepted", "failed"}, counts
