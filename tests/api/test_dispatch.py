"""The outbox and the dispatcher: retries, failures, expiry, batching, restarts."""

from __future__ import annotations

import asyncio

import pytest

from gateway.app import create_app
from gateway.clock import from_rfc3339
from gateway.errors import PermanentProviderError, RetryableProviderError
from gateway.keys import SERVICES
from gateway.storage.sqlite import SqliteStore
from tests.conftest import Gateway, GatewayFactory


async def test_retryable_error_backs_off_then_succeeds(gw: Gateway) -> None:
    """A 5xx-like failure schedules a retry with backoff; when due, the message goes through."""
    gw.providers["cmcc"].fail_next = [RetryableProviderError("unavailable")]
    message_id = await gw.send()
    await gw.services.dispatcher.run_once()
    msg = await gw.message(message_id)
    assert msg["status"] == "accepted"
    retry = msg["events"][-1]
    assert retry["type"] == "retry" and retry["error"] == "unavailable" and retry["attempt"] == 1
    assert from_rfc3339(retry["next_at"]) > from_rfc3339(retry["at"])  # times are RFC 3339
    assert await gw.services.dispatcher.run_once() == 0  # not due yet
    gw.clock.advance(gw.services.settings.retry_base_s + 0.01)
    assert await gw.services.dispatcher.run_once() == 1
    msg = await gw.message(message_id)
    assert msg["status"] == "submitted"
    assert msg["events"][-1]["attempt"] == 2


async def test_retry_after_is_a_floor(gw: Gateway) -> None:
    """A provider's Retry-After delays the next attempt at least that long."""
    gw.providers["cmcc"].fail_next = [RetryableProviderError("rate_limited", defer=30.0)]
    await gw.send()
    await gw.services.dispatcher.run_once()
    gw.clock.advance(29)
    assert await gw.services.dispatcher.run_once() == 0
    gw.clock.advance(10)
    assert await gw.services.dispatcher.run_once() == 1


async def test_permanent_error_fails_the_message(gw: Gateway) -> None:
    """A permanent refusal of the batch fails the message with the provider's reason."""
    gw.providers["cmcc"].fail_next = [PermanentProviderError("http_400", "bad request")]
    message_id = await gw.send()
    await gw.services.dispatcher.run_once()
    msg = await gw.message(message_id)
    assert msg["status"] == "failed" and msg["reason"] == "http_400"
    assert await gw.services.dispatcher.run_once() == 0


async def test_per_message_rejection(gw: Gateway) -> None:
    """One rejected number in a batch fails alone; the rest are submitted."""
    gw.providers["cmcc"].reject["+8613800000000"] = PermanentProviderError("invalid_number")
    bad = await gw.send(to="13800000000")
    good = await gw.send(to="13812345678")
    await gw.services.dispatcher.run_once()
    assert (await gw.message(bad))["reason"] == "invalid_number"
    assert (await gw.message(good))["status"] == "submitted"


async def test_ttl_expires_a_message_that_cannot_go(gw: Gateway) -> None:
    """A message still undelivered when its TTL runs out is expired, not sent late."""
    gw.providers["cmcc"].fail_next = [RetryableProviderError("unavailable", defer=600)]
    message_id = await gw.send(ttl_seconds=300)
    await gw.services.dispatcher.run_once()
    gw.clock.advance(301)
    assert await gw.services.dispatcher.run_once() == 1
    msg = await gw.message(message_id)
    assert msg["status"] == "expired"
    assert not gw.providers["cmcc"].submitted


async def test_send_at_defers_dispatch(gw: Gateway) -> None:
    """A send with ``send_at`` in the future waits for it."""
    from gateway.clock import to_rfc3339

    await gw.send(send_at=to_rfc3339(gw.clock.now() + 3600))
    assert await gw.services.dispatcher.run_once() == 0
    gw.clock.advance(3601)
    assert await gw.services.dispatcher.run_once() == 1


async def test_number_without_carrier_is_suppressed(gw: Gateway) -> None:
    """A number no carrier of ours serves is suppressed with reason no_route."""
    message_id = await gw.send(to="+14155550123")
    await gw.services.dispatcher.run_once()
    msg = await gw.message(message_id)
    assert msg["status"] == "suppressed" and msg["reason"] == "no_route"


async def test_carrier_from_number_and_batches(gw: Gateway) -> None:
    """Each number goes to its own carrier, in batches no larger than the provider's."""
    numbers = {"cmcc": "138", "cucc": "130", "ctcc": "189"}
    for prefix in numbers.values():
        for i in range(120):
            await gw.send(to=f"{prefix}{i:08d}")
    while await gw.services.dispatcher.run_once():
        pass
    for name, prefix in numbers.items():
        subs = gw.providers[name].submitted
        assert len(subs) == 120
        assert all(s.to.startswith(f"+86{prefix}") for s in subs)
        assert len(gw.providers[name].callbacks) == 2  # 100 + 20
        assert gw.providers[name].callbacks[0].endswith(f"/callbacks/{name}/dlr")


async def test_outbox_survives_a_restart(make_gateway: GatewayFactory, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    """Messages accepted, or claimed but not recorded, before a crash are dispatched after it."""
    gw = await make_gateway()
    first = await gw.send()
    second = await gw.send(to="13912345678")
    store = gw.services.store
    # the dispatcher claimed one and "crashed" before recording anything
    claimed = await store.claim_due(gw.clock.now(), 1, gw.clock.now() + 60)
    assert [q.id for q in claimed] == [first]
    await gw.client.close()  # closes the app: store closed, nothing lost

    settings = gw.services.settings
    app = create_app(
        settings, store=SqliteStore(settings.sqlite_path), providers=gw.providers, clock=gw.clock
    )
    client = await aiohttp_client(app)
    services = app[SERVICES]
    await services.dispatcher.start()  # releases the dead process's leases
    await services.dispatcher.stop()
    assert await services.dispatcher.run_once() == 2
    sent = {s.message_id for s in gw.providers["cmcc"].submitted}
    assert sent == {first, second}
    await client.close()


async def test_a_claim_records_its_outcomes_in_one_write(gw: Gateway) -> None:
    """The batches of one claim, to several providers, are recorded together (one write in
    key order, not one per batch), and every message's outcome is in it."""
    ids = [await gw.send(to=f"{prefix}{i:08d}") for prefix in ("138", "130", "189") for i in (1, 2)]
    store = gw.services.store
    writes: list[int] = []
    record = store.record_outcomes

    async def counting(outcomes):  # type: ignore[no-untyped-def]
        writes.append(len(outcomes))
        await record(outcomes)

    store.record_outcomes = counting  # type: ignore[method-assign]
    assert await gw.services.dispatcher.run_once() == 6
    assert writes == [6]
    assert {(await gw.message(i))["status"] for i in ids} == {"submitted"}


async def test_a_cancelled_round_records_what_was_sent(gw: Gateway) -> None:
    """A round cancelled while one provider hangs (a stop that could not wait) still records
    the batches that went; the others stay queued and go in a later round."""
    fast = await gw.send(to="13800000001")  # China Mobile
    slow = await gw.send(to="13000000001")  # China Unicom, which hangs
    release = gw.providers["cucc"].hold = asyncio.Event()
    dispatcher = gw.services.dispatcher
    task = asyncio.create_task(dispatcher.run_once())
    for _ in range(200):
        if gw.providers["cmcc"].submitted:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await gw.message(fast))["status"] == "submitted"
    assert (await gw.message(slow))["status"] == "accepted"  # leased, not lost

    release.set()
    assert await dispatcher.run_once() == 0  # its lease holds it until it runs out
    gw.clock.advance(gw.services.settings.dispatch_lease_s + 1)
    assert await dispatcher.run_once() == 1
    assert (await gw.message(slow))["status"] == "submitted"
    assert [s.message_id for s in gw.providers["cmcc"].submitted] == [fast]


async def _until(check, seconds: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.01)):
        if await check():
            return
    raise AssertionError("not reached in time")  # pragma: no cover


async def test_a_stop_records_what_a_hanging_round_sent(gw: Gateway) -> None:
    """A stop that cannot wait for a hanging provider cancels the round, and the round still
    records the batches that went, before the store closes."""
    fast = await gw.send(to="13800000001")
    slow = await gw.send(to="13000000001")
    gw.providers["cucc"].hold = asyncio.Event()
    dispatcher = gw.services.dispatcher
    await dispatcher.start()

    async def sent() -> bool:
        await asyncio.sleep(0.01)
        return bool(gw.providers["cmcc"].submitted)

    await _until(sent)
    await dispatcher.stop(timeout_s=0.05)
    assert (await gw.message(fast))["status"] == "submitted"
    assert (await gw.message(slow))["status"] == "accepted"


async def test_a_slow_batch_does_not_hold_back_the_claims_other_outcomes(
    make_gateway: GatewayFactory,
) -> None:
    """What went is recorded by half the lease even while another batch of the claim is
    still out, so a slow provider cannot let the others' leases run out unrecorded."""
    gw = await make_gateway(dispatch_lease_s=0.2)
    fast = await gw.send(to="13800000001")
    slow = await gw.send(to="13000000001")
    release = gw.providers["cucc"].hold = asyncio.Event()
    task = asyncio.create_task(gw.services.dispatcher.run_once())

    async def recorded() -> bool:
        await asyncio.sleep(0.01)
        return bool((await gw.message(fast))["status"] == "submitted")

    await _until(recorded)
    assert not task.done()
    assert (await gw.message(slow))["status"] == "accepted"
    release.set()
    assert await task == 2
    assert (await gw.message(slow))["status"] == "submitted"


async def test_a_round_cancelled_while_it_records_still_records_once(gw: Gateway) -> None:
    """A cancel that lands while a round writes its outcomes does not undo the write (a stop
    cancelling a round mid-write), nor make it write them twice."""
    message_id = await gw.send(to="13800000001")
    store = gw.services.store
    record = store.record_outcomes
    entered, release = asyncio.Event(), asyncio.Event()
    writes: list[int] = []

    async def held(outcomes):  # type: ignore[no-untyped-def]
        writes.append(len(outcomes))
        entered.set()
        await release.wait()
        await record(outcomes)

    store.record_outcomes = held  # type: ignore[method-assign]
    task = asyncio.create_task(gw.services.dispatcher.run_once())
    await asyncio.wait_for(entered.wait(), 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()

    async def submitted() -> bool:
        await asyncio.sleep(0.01)
        return bool((await gw.message(message_id))["status"] == "submitted")

    await _until(submitted)
    assert writes == [1]
