"""Storing a campaign batch: one message per campaign and recipient, whatever is sent twice."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from gateway.domain.messages import Link, NewMessage, Rendered, Status
from gateway.ids import new_id
from gateway.storage.sqlite import SqliteStore, insert_messages

NOW = 1_795_000_000.0


def _message(to: str, token: str, status: str = Status.ACCEPTED) -> NewMessage:
    return NewMessage(
        id=new_id(int(NOW * 1000)),
        tenant_id="bank_a",
        to=to,
        category="marketing",
        template_id="fund_due",
        template_version=1,
        rendered=Rendered("hi", None),
        created_at=NOW,
        due_at=NOW,
        expires_at=NOW + 3600,
        campaign_id="cmp_1",
        status=status,
        reason="render_error" if status == Status.FAILED else None,
        links=(Link(token, "https://bank.example/fund", "buttons.0", "查看"),),
    )


def _rows(db: Path, sql: str) -> list[Any]:
    """``sql``'s rows, read from the database file beside the store."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_a_repeat_is_skipped_with_its_links_and_queue_entry(tmp_path: Path) -> None:
    """A recipient who has the campaign's message already gets no second one: not counted,
    no second link, no second queue entry; the rest of the batch goes in, a message born
    failed with its first event and no queue entry."""
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        first = _message("+8613800000001", "tokAAAAAAAA")
        assert (
            await store.writer.run(lambda c: insert_messages(c, [first], skip_existing=True)) == 1
        )
        again = _message("+8613800000001", "tokBBBBBBBB")
        other = _message("+8613800000002", "tokCCCCCCCC")
        failed = _message("+8613800000003", "tokDDDDDDDD", Status.FAILED)
        batch = [again, other, failed]
        assert await store.writer.run(lambda c: insert_messages(c, batch, skip_existing=True)) == 2
    finally:
        await store.close()
    db = tmp_path / "gateway.db"
    messages = {r[0] for r in _rows(db, "SELECT message_id FROM messages")}
    queued = {r[0] for r in _rows(db, "SELECT message_id FROM dispatch_queue")}
    tokens = {r[0] for r in _rows(db, "SELECT token FROM links")}
    events = _rows(db, "SELECT message_id, type, data FROM events")
    assert messages == {first.id, other.id, failed.id}
    assert queued == {first.id, other.id}
    assert tokens == {"tokAAAAAAAA", "tokCCCCCCCC", "tokDDDDDDDD"}
    assert events == [(failed.id, "failed", '{"reason":"render_error"}')]


async def test_a_claimed_message_holds_its_rendering_as_stored_until_it_is_planned(
    tmp_path: Path,
) -> None:
    """A claim answers each rendering as its stored JSON (~0.75 KB a message, where the
    parsed card took ~3 KB while it waited to be sent); parsed, it is the rendering stored."""
    import orjson

    from gateway.dispatch.dispatcher import _rendering

    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        card = {"title": "到期提醒", "buttons": [{"label": "查看", "action": {"type": "dial"}}]}
        m = _message("+8613800000001", "tokAAAAAAAA")
        m = dataclasses.replace(m, rendered=Rendered("hi", card, "standard", {"name": "示例"}))
        await store.writer.run(lambda c: insert_messages(c, [m]))
        (claimed,) = await store.claim_due(NOW + 1, 10, NOW + 60)
    finally:
        await store.close()
    assert isinstance(claimed.rendered, bytes)
    assert orjson.loads(claimed.rendered) == m.rendered.as_dict()
    assert _rendering(claimed) == m.rendered


async def test_a_claim_tells_a_card_from_none_without_parsing(tmp_path: Path) -> None:
    """The dispatcher asks for capabilities only for messages with a card, and tells them
    apart on the stored bytes: a text or an error that spells out ``"card":`` is no card."""
    from gateway.dispatch.dispatcher import _has_card

    brand = {"name": '示例 "card": 银行', "signature": "【示例】", "verified": True}
    renderings = [
        Rendered("hi", {"title": "到期提醒"}, "standard", brand),
        Rendered("hi", {}, "standard", brand),  # an empty card is still a card
        Rendered('say "card": {"title": 1} to us', None, "standard", brand),
        Rendered("", None, "standard", brand, error='variables.x: "card":null'),
        Rendered("plain", None),
    ]
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        messages = [
            dataclasses.replace(_message(f"+86138000000{i:02d}", f"tok{i:08d}"), rendered=r)
            for i, r in enumerate(renderings)
        ]
        await store.writer.run(lambda c: insert_messages(c, messages))
        claimed = {q.to: q for q in await store.claim_due(NOW + 1, 10, NOW + 60)}
    finally:
        await store.close()
    assert [_has_card(claimed[m.to]) for m in messages] == [True, True, False, False, False]
    assert all(_has_card(claimed[m.to]) == (m.rendered.card is not None) for m in messages)


async def test_a_large_batch_skips_its_repeats_wherever_they_are(tmp_path: Path) -> None:
    """A part of 150 recipients, ten of whom had the campaign's message already, spread
    through it: those ten are left out with their links and queue entries, and the count is
    of the 140 others."""
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        earlier = [_message(f"+86138000{i:05d}", f"old{i:08d}") for i in range(0, 150, 15)]
        assert await store.writer.run(lambda c: insert_messages(c, earlier)) == 10
        batch = [_message(f"+86138000{i:05d}", f"new{i:08d}") for i in range(150)]
        assert (
            await store.writer.run(lambda c: insert_messages(c, batch, skip_existing=True)) == 140
        )
    finally:
        await store.close()
    db = tmp_path / "gateway.db"
    messages = {r[0] for r in _rows(db, "SELECT message_id FROM messages")}
    queued = {r[0] for r in _rows(db, "SELECT message_id FROM dispatch_queue")}
    links = dict(_rows(db, "SELECT token, message_id FROM links"))
    new = [m for i, m in enumerate(batch) if i % 15]
    assert messages == {m.id for m in earlier + new} == queued
    assert links == {m.links[0].token: m.id for m in earlier + new}
