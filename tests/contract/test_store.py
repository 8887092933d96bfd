"""One behaviour, every store: the same suite runs against SQLite and the in-memory fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.dispatch.ports import DeliveryReport
from gateway.domain.messages import (
    Expired,
    Failed,
    IdempotencyRecord,
    NewMessage,
    Rendered,
    Reroute,
    Retry,
    Submitted,
    Suppressed,
)
from gateway.ids import new_id
from gateway.storage.base import IdempotencyConflict, Store

NOW = 1_795_000_000.0


@pytest.fixture(name="db")
async def _db(store: Store) -> AsyncIterator[Store]:
    await store.open()
    await store.create_tenant("t1", [("h1", "campaign"), ("h2", "ops")], NOW)
    await store.create_tenant("t2", [("h3", "campaign")], NOW)
    yield store
    await store.close()


def message(tenant: str = "t1", *, due: float = NOW, ttl: float = 3600) -> NewMessage:
    return NewMessage(
        id=new_id(),
        tenant_id=tenant,
        to="+8613812345678",
        category="transactional",
        template_id="otp",
        template_version=1,
        rendered=Rendered("【银行】123456"),
        created_at=NOW,
        due_at=due,
        expires_at=due + ttl,
        route_pref=("sms",),
    )


async def test_keys_resolve_to_tenant_and_role(db: Store) -> None:
    """A key hash resolves to its tenant and role; unknown hashes to nothing."""
    assert await db.find_key("h2") == ("t1", "ops")
    assert await db.find_key("nope") is None


async def test_template_versions_are_immutable(db: Store) -> None:
    """Each put is a new version; old versions stay readable; latest is the default."""
    v1 = await db.put_template("t1", "otp", {"a": 1}, NOW)
    v2 = await db.put_template("t1", "otp", {"a": 2}, NOW)
    assert (v1.version, v2.version) == (1, 2)
    latest = await db.get_template("t1", "otp")
    assert latest is not None and latest.body == {"a": 2}
    old = await db.get_template("t1", "otp", 1)
    assert old is not None and old.body == {"a": 1}
    assert await db.get_template("t2", "otp") is None
    assert [t.version for t in await db.list_templates("t1")] == [2]


async def test_brands_upsert_per_tenant(db: Store) -> None:
    """Brands replace on put and stay within their tenant."""
    await db.put_brand("t1", "b", {"name": "x"}, NOW)
    await db.put_brand("t1", "b", {"name": "y"}, NOW)
    assert await db.get_brand("t1", "b") == {"name": "y"}
    assert await db.get_brand("t2", "b") is None
    assert await db.list_brands("t1") == [("b", {"name": "y"})]


async def test_accept_and_read_within_tenant(db: Store) -> None:
    """An accepted message reads back with its first event, for its own tenant only."""
    m = message()
    assert (await db.accept(m)).message_id == m.id
    view = await db.get_message("t1", m.id)
    assert view is not None and view.status == "accepted" and view.to == m.to
    assert [e.type for e in view.events] == ["accepted"]
    assert await db.get_message("t2", m.id) is None


async def test_idempotency_replay_and_conflict(db: Store) -> None:
    """The same key and hash replays the first message; another hash conflicts."""
    m1, m2, m3 = message(), message(), message()
    await db.accept(m1, IdempotencyRecord("t1", "k", "hash-a", m1.id, NOW))
    replay = await db.accept(m2, IdempotencyRecord("t1", "k", "hash-a", m2.id, NOW))
    assert replay.replayed and replay.message_id == m1.id
    assert await db.get_message("t1", m2.id) is None
    with pytest.raises(IdempotencyConflict):
        await db.accept(m3, IdempotencyRecord("t1", "k", "hash-b", m3.id, NOW))
    assert await db.get_message("t1", m3.id) is None


async def test_concurrent_idempotent_accepts(db: Store) -> None:
    """Concurrent accepts under one key store exactly one message."""
    ms = [message() for _ in range(10)]
    results = await asyncio.gather(
        *(db.accept(m, IdempotencyRecord("t1", "c", "h", m.id, NOW)) for m in ms)
    )
    assert len({r.message_id for r in results}) == 1
    assert len(await db.claim_due(NOW, 100, NOW + 60)) == 1


async def test_claim_leases_and_releases(db: Store) -> None:
    """A claim leases due messages once; released leases make them claimable again."""
    due, later = message(), message(due=NOW + 100)
    await db.accept(due)
    await db.accept(later)
    assert [q.id for q in await db.claim_due(NOW, 10, NOW + 60)] == [due.id]
    assert await db.claim_due(NOW, 10, NOW + 60) == []
    assert await db.next_due() == NOW + 60
    assert await db.release_leases() == 1
    assert [q.id for q in await db.claim_due(NOW, 10, NOW + 60)] == [due.id]
    # the lease ran out at NOW + 60 (its holder died): both are due at NOW + 100
    assert {q.id for q in await db.claim_due(NOW + 100, 10, NOW + 160)} == {due.id, later.id}


async def test_one_claim_gives_each_message_its_own_stored_values(db: Store) -> None:
    """A claim shares equal values among its messages (one parsed policy for all that have
    it): each message still reads back what it was stored with, policy and time zone."""
    nine_to_five = {"window": {"days": [1, 2, 3, 4, 5], "hours": [9, 17]}}
    capped = {"window": None, "frequency_cap": {"count": 2, "per_seconds": 86400}}
    stored = [
        replace(message(), policy=nine_to_five, timezone="Asia/Shanghai"),
        replace(message(), policy=capped, timezone="Europe/Berlin"),
        replace(message(), policy=nine_to_five, timezone="Asia/Shanghai"),
        replace(message(), policy=None, timezone=None),
    ]
    for m in stored:
        await db.accept(m)
    claimed = {q.id: q for q in await db.claim_due(NOW, 10, NOW + 60)}
    assert [(claimed[m.id].policy, claimed[m.id].timezone) for m in stored] == [
        (m.policy, m.timezone) for m in stored
    ]


async def test_outcomes_move_status_forward(db: Store) -> None:
    """Submitted, retried, failed, expired and suppressed outcomes land as statuses and events."""
    a, b, c, d, e = (message() for _ in range(5))
    for m in (a, b, c, d, e):
        await db.accept(m)
    await db.claim_due(NOW, 10, NOW + 60)
    await db.record_outcomes(
        [
            Submitted(a.id, "cmcc", "sms", "ref-a", NOW + 1, 1),
            Retry(b.id, NOW + 30, NOW + 1, "cmcc", "unavailable", 1),
            Failed(c.id, "invalid_number", NOW + 1, provider="cmcc", route="sms"),
            Expired(d.id, NOW + 1),
            Suppressed(e.id, "no_route", NOW + 1),
        ]
    )
    statuses = {m.id: (await db.get_message("t1", m.id)).status for m in (a, b, c, d, e)}  # type: ignore[union-attr]
    assert statuses == {
        a.id: "submitted",
        b.id: "accepted",
        c.id: "failed",
        d.id: "expired",
        e.id: "suppressed",
    }
    va = await db.get_message("t1", a.id)
    assert va is not None and (va.provider, va.route, va.provider_ref) == ("cmcc", "sms", "ref-a")
    [retry] = await db.claim_due(NOW + 30, 10, NOW + 90)
    assert retry.id == b.id and retry.attempts == 1
    assert await db.next_due() == NOW + 90


async def test_reports_dedupe_and_never_move_back(db: Store) -> None:
    """A report applies once; a later contrary report changes nothing; unknown ids are ignored."""
    m = message()
    await db.accept(m)
    await db.claim_due(NOW, 10, NOW + 60)
    await db.record_outcomes([Submitted(m.id, "cmcc", "sms", "ref", NOW, 1)])
    delivered = DeliveryReport(m.id, "ref", "delivered")
    [first] = await db.apply_reports("cmcc", [delivered], NOW + 2)
    [again] = await db.apply_reports("cmcc", [delivered], NOW + 3)
    [late] = await db.apply_reports("cmcc", [DeliveryReport(m.id, "ref", "failed")], NOW + 4)
    [unknown] = await db.apply_reports("cmcc", [DeliveryReport("nope", "x", "delivered")], NOW)
    assert (first.applied, again.applied, late.applied, unknown.applied) == (
        True,
        False,
        False,
        False,
    )
    view = await db.get_message("t1", m.id)
    assert view is not None and view.status == "delivered"
    assert [e.type for e in view.events] == ["accepted", "submitted", "delivered"]


async def test_reports_settle_only_a_hand_over(db: Store) -> None:
    """A report for a message no provider was given is not applied; while it is being handed
    over (claimed, not yet acknowledged) a report that overtakes the acknowledgement is."""
    waiting, going = message(), message()
    await db.accept(waiting)
    await db.accept(going)
    [early] = await db.apply_reports("cucc", [DeliveryReport(waiting.id, "x", "delivered")], NOW)
    assert not early.applied
    await db.claim_due(NOW, 10, NOW + 60)
    [overtaking] = await db.apply_reports("cmcc", [DeliveryReport(going.id, "r", "delivered")], NOW)
    assert overtaking.applied
    view = await db.get_message("t1", going.id)
    assert view is not None and view.status == "delivered"
    # a restart releases the claim (the message is due again at once), but a report for it,
    # sent again by the provider after the restart, is still placed
    await db.release_leases()
    [due_again] = await db.claim_due(NOW + 1, 10, NOW + 61)
    assert due_again.id == waiting.id
    await db.release_leases()
    [again] = await db.apply_reports("cucc", [DeliveryReport(waiting.id, "x", "delivered")], NOW)
    assert again.applied


async def test_a_submitted_sms_waits_for_its_report_until_it_expires(db: Store) -> None:
    """A submitted SMS stays queued, due at its expiry, until its report takes it out."""
    reported, silent = message(ttl=600), message(ttl=600)
    for m in (reported, silent):
        await db.accept(m)
    await db.claim_due(NOW, 10, NOW + 60)
    await db.record_outcomes(
        [
            Submitted(m.id, "cmcc", "sms", f"ref-{m.id}", NOW, 1, wait_until=m.expires_at)
            for m in (reported, silent)
        ]
    )
    await db.apply_reports(
        "cmcc", [DeliveryReport(reported.id, f"ref-{reported.id}", "delivered")], NOW
    )
    assert await db.claim_due(NOW + 599, 10, NOW + 660) == []
    [due] = await db.claim_due(NOW + 600, 10, NOW + 660)
    assert (due.id, due.stage, due.status) == (silent.id, "report_wait", "submitted")


async def test_idempotency_purge(db: Store) -> None:
    """Keys older than the cut-off are purged; newer ones stay."""
    m1, m2 = message(), message()
    await db.accept(m1, IdempotencyRecord("t1", "old", "h", m1.id, NOW - 100))
    await db.accept(m2, IdempotencyRecord("t1", "new", "h", m2.id, NOW))
    assert await db.purge_idempotency(NOW - 50) == 1
    assert await db.get_idempotency("t1", "old") is None
    assert await db.get_idempotency("t1", "new") is not None


async def test_portability_is_seen_as_soon_as_it_is_set_or_removed(db: Store) -> None:
    """An override is answered right after it is set, and gone right after it is removed,
    however often the tenant's (empty) overrides were asked for before."""
    numbers = ["+8613812345678", "+8613900000000"]
    assert await db.portability("t1", numbers) == {}
    assert await db.portability("t1", numbers) == {}
    await db.set_portability("t1", numbers[0], "ctcc", NOW)
    assert await db.portability("t1", numbers) == {numbers[0]: "ctcc"}
    assert await db.portability("t2", numbers) == {}  # another tenant's override is not ours
    await db.set_portability("t1", numbers[0], None, NOW)
    assert await db.portability("t1", numbers) == {}
    await db.set_portability("t1", numbers[1], "cucc", NOW)
    assert await db.portability("t1", numbers) == {numbers[1]: "cucc"}


async def test_a_queue_entry_without_its_message_is_dropped_not_claimed_for_ever(
    db: Store,
) -> None:
    """A damaged database (a queue entry whose message is gone) does not stall the queue."""
    from gateway.storage.sqlite import SqliteStore

    if not isinstance(db, SqliteStore):
        pytest.skip("only SQLite can hold such an entry")
    ok = message()
    await db.accept(ok)
    await db.writer.run(
        lambda conn: conn.execute(
            "INSERT INTO dispatch_queue (message_id, due_at) VALUES ('orphan', ?)", (NOW - 5,)
        )
    )
    claimed = await db.claim_due(NOW, 10, NOW + 60)
    assert [q.id for q in claimed] == [ok.id]
    assert await db.next_due() == NOW + 60  # only the leased message is left


async def test_a_portability_read_in_flight_does_not_hide_an_override(db: Store) -> None:
    """A read that started before an override was set (and another number's was removed)
    must not leave the tenant marked as overriding nothing."""
    from gateway.storage.sqlite import SqliteStore

    if not isinstance(db, SqliteStore):
        pytest.skip("only SQLite keeps a per-tenant flag")
    numbers = ["+8613812345678", "+8613900000000"]
    gate = asyncio.Event()
    real = db._one

    async def held(sql: str, params: tuple[object, ...] = ()) -> object:
        row = await real(sql, params)
        await gate.wait()  # the answer ("no overrides") arrives late
        return row

    db._one = held  # type: ignore[method-assign,assignment]
    read = asyncio.create_task(db.portability("t1", numbers))
    await asyncio.sleep(0.05)
    db._one = real  # type: ignore[method-assign]
    await db.set_portability("t1", numbers[0], "ctcc", NOW)
    await db.set_portability("t1", numbers[1], None, NOW)
    gate.set()
    await read
    assert await db.portability("t1", numbers) == {numbers[0]: "ctcc"}


async def test_a_sign_out_is_kept_until_its_session_would_have_expired(db: Store) -> None:
    await db.sign_out("old", until=NOW + 100, now=NOW)
    assert await db.is_signed_out("old") and not await db.is_signed_out("other")
    await db.sign_out("new", until=NOW + 900, now=NOW + 200)  # "old" has expired: it goes
    assert not await db.is_signed_out("old") and await db.is_signed_out("new")


async def test_a_late_rich_failure_after_the_rich_timeout_sends_no_second_sms(
    db: Store,
) -> None:
    """The carrier's 5G message timed out and its SMS fallback is queued (or in flight); the
    carrier's late failure report of the 5G message then reroutes nothing: one fallback,
    one SMS under one reference."""
    m = replace(message(), route_pref=("carrier_rich", "sms"))
    await db.accept(m)
    await db.claim_due(NOW, 10, NOW + 60)
    await db.record_outcomes(
        [Submitted(m.id, "cmcc", "carrier_rich", "rcs-1", NOW, 1, (), NOW + 30, m.id)]
    )
    [waited] = await db.claim_due(NOW + 31, 10, NOW + 91)  # the rich timeout
    assert waited.stage == "rich_wait"
    await db.record_outcomes([Reroute(m.id, NOW + 31, "carrier_rich", "cmcc", "rich_timeout", 1)])
    [sms] = await db.claim_due(NOW + 32, 10, NOW + 92)  # its SMS, being handed over
    assert (sms.stage, sms.client_ref) == ("send", f"{m.id}.1")
    late = DeliveryReport(m.id, "rcs-1", "failed", error_code="X")
    [result] = await db.apply_reports("cmcc", [late], NOW + 33)
    assert not result.applied
    assert await db.claim_due(NOW + 34, 10, NOW + 94) == []  # its SMS keeps its lease
    [again] = await db.claim_due(NOW + 93, 10, NOW + 150)  # the lease ran out: the same SMS
    assert again.client_ref == f"{m.id}.1"
    view = await db.get_message("t1", m.id)
    assert view is not None
    assert [e.type for e in view.events].count("fallback") == 1


async def test_a_reply_is_the_named_messages_else_its_only_tenants(db: Store) -> None:
    """The message a reply names, if it went to that phone; else the newest (marketing
    first) of the only tenant that wrote to it; nobody's if two tenants did."""
    phone = "+8613812345678"
    first = message()
    await db.accept(first)
    assert await db.reply_target(phone) == (first.id, "t1")
    assert await db.reply_target("+8613900000000") is None
    other = message("t2")
    await db.accept(other)
    assert await db.reply_target(phone) is None  # two tenants wrote to it
    assert await db.reply_target(phone, first.id) == (first.id, "t1")
    assert await db.reply_target(phone, f"{other.id}.1") == (other.id, "t2")  # a fallback's ref
    assert await db.reply_target("+8613900000000", first.id) is None  # not that phone's
    # t1's message reaches a provider, t2's does not (suppressed): the reply is t1's
    await db.claim_due(NOW, 10, NOW + 60)
    await db.record_outcomes(
        [Submitted(first.id, "cmcc", "sms", "r1", NOW, 1), Suppressed(other.id, "opted_out", NOW)]
    )
    assert await db.reply_target(phone) == (first.id, "t1")


async def test_the_database_is_readable_by_its_owner_only(db: Store) -> None:
    """Customers' data, rendered codes and webhook secrets: mode 0600, its WAL too."""
    import stat

    from gateway.storage.sqlite import SqliteStore

    if not isinstance(db, SqliteStore):
        pytest.skip("only SQLite has a file")
    await db.accept(message())  # a write: the WAL and shared-memory files exist now
    for suffix in ("", "-wal", "-shm"):
        path = db.path.with_name(db.path.name + suffix)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_waking_deferred_messages_makes_only_the_tenants_deferred_ones_due(
    db: Store,
) -> None:
    """A tenant's messages deferred to an opening are due again at once; another tenant's,
    one waiting out a retry's backoff after it was deferred, and a message merely queued for
    later keep their due times."""
    from gateway.domain.messages import Deferred

    mine, theirs, later, retrying = message(), message("t2"), message(due=NOW + 500), message()
    for m in (mine, theirs, later, retrying):
        await db.accept(m)
    claimed = await db.claim_due(NOW, 10, NOW + 60)
    assert {q.id for q in claimed} == {mine.id, theirs.id, retrying.id}
    await db.record_outcomes(
        [Deferred(q.id, NOW + (10 if q.id == retrying.id else 3600), NOW) for q in claimed]
    )
    # the retrying one opens first, is refused by its provider, and waits out its backoff
    assert [q.id for q in await db.claim_due(NOW + 10, 10, NOW + 70)] == [retrying.id]
    await db.record_outcomes([Retry(retrying.id, NOW + 900, NOW + 10, "cmcc", "http_503", 1)])
    assert await db.wake_deferred("t1", NOW + 11) == 1
    assert [q.id for q in await db.claim_due(NOW + 11, 10, NOW + 71)] == [mine.id]
    assert await db.wake_deferred("t1", NOW + 11) == 0  # it is due now: nothing is left
    # the later one still waits for its time, the other tenant's for its opening, the
    # retrying one for its backoff (and the woken one, unanswered, is claimed again)
    assert [q.id for q in await db.claim_due(NOW + 400, 10, NOW + 460)] == [mine.id]


async def test_a_revoked_key_resolves_to_nothing(db: Store) -> None:
    """Revoking answers whose key it was, once; the tenant's other keys stay."""
    assert await db.tenant_exists("t1") and not await db.tenant_exists("t9")
    await db.add_keys("t1", [("h4", "campaign")], NOW)
    assert await db.revoke_key("h1") == ("t1", "campaign")
    assert await db.revoke_key("h1") is None
    assert await db.find_key("h1") is None
    assert await db.find_key("h4") == ("t1", "campaign")
    assert await db.find_key("h2") == ("t1", "ops")
