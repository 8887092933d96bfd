"""The mock providers' outbox: events wait until due, in order, follow-ups after, recalls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers.mock.events import CarrierReport
from providers.mock.outbox import ReportOutbox
from tests.providers.conftest import Sink


@pytest.fixture(name="outbox")
async def _outbox() -> AsyncIterator[ReportOutbox]:
    async with aiohttp.ClientSession() as session:
        box = ReportOutbox(session, lambda _: b"secret", flush_interval_s=0.01)
        box.start()
        yield box
        await box.close()


def report(ref: str, status: str = "DELIVRD") -> CarrierReport:
    return CarrierReport(ref, f"id-{ref}", status)


async def test_events_wait_for_their_delay_and_keep_their_order(outbox, sink: Sink) -> None:
    """Shorter delays go first; one delay's events go in the order they were scheduled."""
    url = sink.url("/cb")
    loop = asyncio.get_running_loop()
    started = loop.time()
    outbox.schedule(0.3, "cmcc", url, report("late"))
    for ref in ("a", "b", "c"):
        outbox.schedule(0.1, "cmcc", url, report(ref))
    first = await sink.items("reports", 3)
    assert [r["client_ref"] for r in first] == ["a", "b", "c"]
    assert loop.time() - started >= 0.1
    late = await sink.items("reports", 1)
    assert [r["client_ref"] for r in late] == ["late"]
    assert loop.time() - started >= 0.3


async def test_a_follow_up_is_never_sent_before_its_event(outbox, sink: Sink) -> None:
    url = sink.url("/cb")
    outbox.schedule(
        0.05, "cmcc", url, report("m1"), then=(0.0, report("m1", "DISPLAYED")), ref="m1"
    )
    got = await sink.items("reports", 2)
    assert [r["status"] for r in got] == ["DELIVRD", "DISPLAYED"]


async def test_recall_cancels_what_is_not_due_and_only_that(outbox, sink: Sink) -> None:
    url = sink.url("/cb")
    outbox.schedule(0.2, "cmcc", url, report("gone"), ref="gone")
    outbox.schedule(0.2, "cucc", url, report("gone"), ref="gone")  # another provider's
    outbox.schedule(0.2, "cmcc", url, report("kept"), ref="kept")
    assert outbox.recall("cmcc", "gone") is True
    assert outbox.recall("cmcc", "gone") is False  # already recalled
    assert outbox.recall("cmcc", "never") is False
    got = await sink.items("reports", 2)
    assert sorted(r["client_ref"] for r in got) == ["gone", "kept"]
    with pytest.raises(TimeoutError):
        await sink.next(timeout_s=0.3)  # nothing more comes: the recalled one stays recalled


async def test_a_full_batch_goes_at_once_in_batches_of_100(sink: Sink) -> None:
    async with aiohttp.ClientSession() as session:
        box = ReportOutbox(session, lambda _: b"secret", flush_interval_s=5.0)
        box.start()
        try:
            for i in range(150):
                box.schedule(0.0, "cmcc", sink.url("/cb"), report(f"m{i}"))
            first = await sink.next(timeout_s=1.0)  # long before the 5 s flush
            assert len(first.json()["reports"]) == 100
        finally:
            await box.close()
