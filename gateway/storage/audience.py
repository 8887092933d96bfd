"""Recipients, segments, opt-outs and campaigns, in SQLite (rules compile to its JSON1 SQL).

This part of the store has no in-memory twin: its point is that audience rules run
as SQL over the recipients table, streamed in bounded batches.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.domain.messages import IdempotencyRecord, NewMessage
from gateway.domain.segments import Rule, to_sql
from gateway.storage.sqlite import (
    PARKED,
    WAITS_FOR_OPENING,
    SqliteStore,
    claim_idempotency,
    dumps,
    insert_messages,
)


@dataclass(frozen=True, slots=True)
class Recipient:
    phone: str
    tags: list[str]
    attrs: dict[str, Any]
    timezone: str


# A recipient's row as JSON: room for a whole CSV record (65,536 characters, of up to
# three bytes each in UTF-8), with its quotes and commas.
MAX_RECIPIENT_BYTES = 256 * 1024


class RecipientTooLarge(ValueError):
    """A recipient's tags and attributes over ``MAX_RECIPIENT_BYTES`` as JSON."""


class RecipientBatch:
    """Recipients to write, packed as they are added into one JSON array of
    ``[phone, tags, attrs, timezone]`` (~110 bytes a row) rather than a few hundred bytes
    of Python objects each, so that an import can write large batches in little memory.
    (One buffer, not a ``bytes`` a row: orjson's small outputs keep ~4 KiB each.)"""

    __slots__ = ("_buf", "_count")

    def __init__(self) -> None:
        self._buf = bytearray(b"[")
        self._count = 0

    def add(self, phone: str, tags: list[str], attrs: dict[str, Any], timezone: str) -> None:
        """Adds one recipient; ``ValueError`` (and the batch unchanged) if its attributes
        cannot be written as JSON (nested deeper than 254 levels)."""
        try:
            row = orjson.dumps((phone, tags, attrs, timezone))
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"attrs: {exc}") from None
        if len(row) > MAX_RECIPIENT_BYTES:
            raise RecipientTooLarge(
                f"a recipient's tags and attributes take at most {MAX_RECIPIENT_BYTES:,}"
                f" bytes as JSON ({len(row):,} here)"
            )
        if self._count:
            self._buf += b","
        self._buf += row
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def packed(self) -> bytes:
        """The rows as one JSON array (UTF-8), for SQLite's ``json_each``."""
        return bytes(self._buf + b"]")


# A batch of at least this many rows is written off the event loop (below it, the hand-off
# to the writer's thread costs more than the statement).
OFF_LOOP_ROWS = 1000
_SELECT_PACKED = (
    " SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), ?2 FROM json_each(CAST(?3 AS TEXT))"
    " WHERE true ORDER BY 2, key"
)
_INSERT_NEW = (
    "INSERT OR IGNORE INTO recipients (tenant_id, phone, tags, attrs, timezone, updated_at)"
    + _SELECT_PACKED
)
_UPSERT = (
    "INSERT INTO recipients (tenant_id, phone, tags, attrs, timezone, updated_at)"
    + _SELECT_PACKED
    + " ON CONFLICT (tenant_id, phone) DO UPDATE SET tags = excluded.tags,"
    " attrs = excluded.attrs, timezone = excluded.timezone, updated_at = excluded.updated_at"
)


@dataclass(frozen=True, slots=True)
class CampaignRow:
    campaign_id: str
    tenant_id: str
    name: str
    body: dict[str, Any]
    state: str
    cursor: str | None
    targeted: int
    fanned_out: bool
    start_at: float
    created_at: float
    updated_at: float


_CAMPAIGN_COLUMNS = (
    "campaign_id, tenant_id, name, body, state, cursor, targeted, fanned_out, start_at,"
    " created_at, updated_at"
)


def _recipient(row: Any) -> Recipient:
    """A row of (phone, tags, attrs, timezone). Tags and attributes are stored as orjson
    wrote them, so orjson reads them back the same, at a third of ``json.loads``'s cost (a
    campaign reads every recipient of its audience)."""
    return Recipient(row[0], _stored_json(row[1]), _stored_json(row[2]), row[3])


def _stored_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # not orjson's writing (a row edited by hand): as before
        return json.loads(text)


def _campaign(row: Any) -> CampaignRow:
    return CampaignRow(
        row[0],
        row[1],
        row[2],
        json.loads(row[3]),
        row[4],
        row[5],
        row[6],
        bool(row[7]),
        row[8],
        row[9],
        row[10],
    )


class SqliteAudience:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    # recipients ----------------------------------------------------------------------------
    async def upsert_recipients(
        self, tenant_id: str, rows: RecipientBatch, now: float
    ) -> tuple[int, int]:
        """Inserts or replaces recipients; answers (created, updated).

        New numbers (the bulk of an import) cost one ``INSERT OR IGNORE`` each, its count
        of changes being the created ones; only a batch that met numbers already there
        (or one number twice) is written again as an upsert, so the last row wins. Rows go
        in number order (repeats in theirs), so neighbouring inserts touch neighbouring
        index pages. A large batch is one statement over its packed rows, run off the
        event loop (``SqliteWriter.run(off_loop=True)``): SQLite unpacks and writes it
        without the GIL while the loop parses the next batch.
        """
        count = len(rows)
        if not count:
            return 0, 0
        params = (tenant_id, now, rows.packed())

        def job(conn: sqlite3.Connection) -> tuple[int, int]:
            before = conn.total_changes
            conn.execute(_INSERT_NEW, params)
            created = conn.total_changes - before
            if created < count:
                conn.execute(_UPSERT, params)
            return created, count - created

        return await self._store.writer.run(job, off_loop=count >= OFF_LOOP_ROWS)

    def bulk(self) -> AbstractAsyncContextManager[None]:
        """An import's scope: the writer's larger page cache (``SqliteWriter.bulk``)."""
        return self._store.writer.bulk()

    async def get_recipient(self, tenant_id: str, phone: str) -> Recipient | None:
        row = await self._store._one(
            "SELECT phone, tags, attrs, timezone FROM recipients WHERE tenant_id = ? AND phone = ?",
            (tenant_id, phone),
        )
        return _recipient(row) if row else None

    async def _by_phone(
        self, sql: str, tenant_id: str, phones: Sequence[str], *after: Any
    ) -> list[Any]:
        """The rows of ``sql`` (its ``{marks}`` the list after ``IN``) for ``phones``, 900 at a
        time (SQLite's limit on parameters): the tenant's id first, ``after`` last."""
        rows: list[Any] = []
        for start in range(0, len(phones), 900):
            chunk = phones[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows += await self._store._all(sql.format(marks=marks), (tenant_id, *chunk, *after))
        return rows

    async def recipients(self, tenant_id: str, phones: Sequence[str]) -> dict[str, Recipient]:
        rows = await self._by_phone(
            "SELECT phone, tags, attrs, timezone FROM recipients"
            " WHERE tenant_id = ? AND phone IN ({marks})",
            tenant_id,
            phones,
        )
        return {r[0]: _recipient(r) for r in rows}

    async def count(self, tenant_id: str, rule: Rule) -> int:
        sql, params = to_sql(rule)
        row = await self._store._one(
            f"SELECT count(*) FROM recipients WHERE tenant_id = ? AND {sql}", (tenant_id, *params)
        )
        return int(row[0])

    async def stream(
        self, tenant_id: str, rule: Rule | None, after: str | None, limit: int
    ) -> list[Recipient]:
        """The next ``limit`` recipients in phone order after ``after`` matching ``rule``."""
        sql, params = to_sql(rule) if rule is not None else ("1", [])
        rows = await self._store._all(
            "SELECT phone, tags, attrs, timezone FROM recipients"
            f" WHERE tenant_id = ? AND phone > ? AND {sql} ORDER BY phone LIMIT ?",
            (tenant_id, after or "", *params, limit),
        )
        return [_recipient(r) for r in rows]

    # segments ------------------------------------------------------------------------------
    async def put_segment(self, tenant_id: str, segment_id: str, rule: Any, now: float) -> None:
        text = dumps(rule)
        await self._store.writer.run(
            lambda conn: conn.execute(
                "INSERT INTO segments (tenant_id, segment_id, rule, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT (tenant_id, segment_id) DO UPDATE SET rule = excluded.rule,"
                " updated_at = excluded.updated_at",
                (tenant_id, segment_id, text, now),
            )
        )

    async def get_segment(self, tenant_id: str, segment_id: str) -> Any | None:
        row = await self._store._one(
            "SELECT rule FROM segments WHERE tenant_id = ? AND segment_id = ?",
            (tenant_id, segment_id),
        )
        return json.loads(row[0]) if row else None

    # opt-outs and frequency ----------------------------------------------------------------
    async def opt_out(self, tenant_id: str, phone: str, source: str, now: float) -> bool:
        """Answers whether this is news (the number was not opted out before)."""
        return bool(
            await self._store.writer.run(
                lambda conn: (
                    conn.execute(
                        "INSERT OR IGNORE INTO opt_outs (tenant_id, phone, at, source)"
                        " VALUES (?, ?, ?, ?)",
                        (tenant_id, phone, now, source),
                    ).rowcount
                )
            )
        )

    async def opted_out(self, tenant_id: str, phones: Sequence[str]) -> set[str]:
        sql = "SELECT phone FROM opt_outs WHERE tenant_id = ? AND phone IN ({marks})"
        return {r[0] for r in await self._by_phone(sql, tenant_id, phones)}

    async def timezones(self, tenant_id: str, phones: Sequence[str]) -> dict[str, str]:
        """The time zones of those of ``phones`` that are the tenant's recipients."""
        sql = "SELECT phone, timezone FROM recipients WHERE tenant_id = ? AND phone IN ({marks})"
        return {r[0]: r[1] for r in await self._by_phone(sql, tenant_id, phones)}

    async def marketing_sent_since(
        self, tenant_id: str, phones: Sequence[str], since: float
    ) -> dict[str, int]:
        """Marketing messages handed to a provider per number since ``since``."""
        rows = await self._by_phone(
            "SELECT to_number, count(*) FROM messages WHERE tenant_id = ?"
            " AND to_number IN ({marks}) AND created_at >= ? AND category = 'marketing'"
            " AND status IN ('submitted', 'delivered') GROUP BY to_number",
            tenant_id,
            phones,
            since,
        )
        return {r[0]: r[1] for r in rows}

    # campaigns -----------------------------------------------------------------------------
    async def idempotency(self, tenant_id: str, key: str) -> IdempotencyRecord | None:
        return await self._store.get_idempotency(tenant_id, key)

    async def create_campaign(
        self, row: CampaignRow, idempotency: IdempotencyRecord | None = None
    ) -> tuple[str, bool]:
        """Stores a new campaign; answers (its id, False), or with an ``Idempotency-Key``
        used before for the same request, (the earlier campaign's id, True) and stores
        nothing (``IdempotencyConflict`` if it came with another request)."""
        r = row
        body = dumps(r.body)

        def job(conn: sqlite3.Connection) -> tuple[str, bool]:
            if idempotency is not None:
                earlier = claim_idempotency(conn, idempotency)
                if earlier is not None:
                    return earlier, True
            conn.execute(
                f"INSERT INTO campaigns ({_CAMPAIGN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r.campaign_id,
                    r.tenant_id,
                    r.name,
                    body,
                    r.state,
                    r.cursor,
                    r.targeted,
                    int(r.fanned_out),
                    r.start_at,
                    r.created_at,
                    r.updated_at,
                ),
            )
            return r.campaign_id, False

        return await self._store.writer.run(job)

    async def get_campaign(self, tenant_id: str | None, campaign_id: str) -> CampaignRow | None:
        row = await self._store._one(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE campaign_id = ?", (campaign_id,)
        )
        if row is None or (tenant_id is not None and row[1] != tenant_id):
            return None
        return _campaign(row)

    async def active_campaigns(self, now: float) -> list[CampaignRow]:
        rows = await self._store._all(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE state IN ('scheduled', 'running')"
            " ORDER BY start_at"
        )
        return [_campaign(r) for r in rows]

    async def fan_out(
        self,
        campaign_id: str,
        messages: Sequence[NewMessage],
        cursor: str | None,
        done: bool,
        now: float,
        after: str | None,
    ) -> int | None:
        """Stores one part of a campaign's messages with its queue entries and the cursor,
        in one transaction; a recipient who has the campaign's message already is skipped.
        ``after`` is the cursor the part starts from: if the campaign's is elsewhere (a part
        before this one was not written), nothing is. Answers how many were new, or None if
        nothing was written: the campaign is no longer running, or not at ``after``."""

        def job(conn: sqlite3.Connection) -> int | None:
            state, current = conn.execute(
                "SELECT state, cursor FROM campaigns WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()
            if state != "running" or current != after:
                return None
            new = insert_messages(conn, messages, skip_existing=True)
            conn.execute(
                "UPDATE campaigns SET cursor = ?, targeted = targeted + ?, fanned_out = ?,"
                " updated_at = ? WHERE campaign_id = ?",
                (cursor, new, int(done), now, campaign_id),
            )
            return new

        return await self._store.writer.run(job)

    async def set_campaign_state(
        self, campaign_id: str, state: str, now: float, *, expect: Sequence[str]
    ) -> bool:
        """Moves a campaign to ``state`` if it is in one of ``expect``; parks or unparks its
        queued messages on pause and resume, revokes them on cancel."""

        def job(conn: sqlite3.Connection) -> bool:
            (current,) = conn.execute(
                "SELECT state FROM campaigns WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()
            if current not in expect:
                return False
            queued = (
                "SELECT q.message_id FROM dispatch_queue q JOIN messages m"
                " ON m.message_id = q.message_id WHERE m.campaign_id = ?"
            )
            if state == "paused":
                conn.execute(
                    f"UPDATE dispatch_queue SET due_at = due_at + {PARKED}"
                    f" WHERE due_at < {PARKED} AND message_id IN ({queued})",
                    (campaign_id,),
                )
            elif current == "paused" and state in ("running", "scheduled"):  # resumed
                # deferred ones are judged again now: the tenant's quiet hours may have
                # changed while they were parked; the others keep their due times
                conn.execute(
                    f"UPDATE dispatch_queue SET due_at = min(due_at - {PARKED}, ?)"
                    f" WHERE due_at >= {PARKED} AND message_id IN"
                    f" ({queued} AND m.status = 'deferred' AND {WAITS_FOR_OPENING})",
                    (now, campaign_id),
                )
                conn.execute(
                    f"UPDATE dispatch_queue SET due_at = due_at - {PARKED}"
                    f" WHERE due_at >= {PARKED} AND message_id IN ({queued})",
                    (campaign_id,),
                )
            elif state == "cancelled":
                ids = [  # what has not reached a provider yet; fallbacks in flight go on
                    r[0]
                    for r in conn.execute(
                        queued + " AND q.lease_until <= ? AND m.status IN ('accepted', 'deferred')",
                        (campaign_id, now),
                    )
                ]
                for mid in ids:
                    conn.execute("DELETE FROM dispatch_queue WHERE message_id = ?", (mid,))
                    conn.execute(
                        "UPDATE messages SET status = 'revoked', reason = 'campaign_cancelled',"
                        " updated_at = ? WHERE message_id = ?"
                        " AND status IN ('accepted', 'deferred')",
                        (now, mid),
                    )
                    conn.execute(
                        "INSERT INTO events (message_id, type, at, data)"
                        " VALUES (?, 'revoked', ?, ?)",
                        (mid, now, '{"reason":"campaign_cancelled"}'),
                    )
            conn.execute(
                "UPDATE campaigns SET state = ?, updated_at = ? WHERE campaign_id = ?",
                (state, now, campaign_id),
            )
            return True

        return await self._store.writer.run(job)

    async def has_pending(self, campaign_id: str) -> bool:
        """Whether any of the campaign's messages is still queued to be sent (an SMS handed
        over and waiting only for its report is no longer pending).

        The queue is walked, and each entry's message looked up, until the first such one.
        The count this replaced walked the campaign's own index, every message it has, once
        a second until the campaign completed: ~300 ms a time with 600,000 messages, half of
        them sent, where this takes 0.1 ms (the whole queue, 160 ms, once: when none is left)."""
        row = await self._store._one(
            "SELECT 1 FROM dispatch_queue q CROSS JOIN messages m"
            " ON m.message_id = q.message_id"
            " WHERE q.stage != 'report_wait' AND m.campaign_id = ? LIMIT 1",
            (campaign_id,),
        )
        return row is not None

    async def status_counts(self, campaign_id: str) -> dict[str, int]:
        rows = await self._store._all(
            "SELECT status, count(*) FROM messages WHERE campaign_id = ? GROUP BY status",
            (campaign_id,),
        )
        return {r[0]: r[1] for r in rows}

    async def funnel_rows(self, campaign_id: str) -> list[tuple[Any, ...]]:
        """(template_id, route, provider, status, reason, messages) per group."""
        return [
            tuple(r)
            for r in await self._store._all(
                "SELECT template_id, route, provider, status, reason, count(*) FROM messages"
                " WHERE campaign_id = ? GROUP BY 1, 2, 3, 4, 5",
                (campaign_id,),
            )
        ]

    async def event_rows(self, campaign_id: str) -> list[tuple[Any, ...]]:
        """(template_id, route, provider, event type, events, distinct messages) per group."""
        return [
            tuple(r)
            for r in await self._store._all(
                "SELECT m.template_id, m.route, m.provider, e.type, count(*),"
                " count(DISTINCT e.message_id) FROM events e JOIN messages m"
                " ON m.message_id = e.message_id WHERE m.campaign_id = ?"
                " AND e.type IN ('displayed', 'clicked') GROUP BY 1, 2, 3, 4",
                (campaign_id,),
            )
        ]
