"""Webhooks' storage: the endpoint, the durable outbox, and the event-log cursor that feeds it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.clock import to_rfc3339
from gateway.storage.sqlite import SqliteStore, dumps


@dataclass(frozen=True, slots=True)
class Endpoint:
    tenant_id: str
    url: str
    events: list[str]
    secret: str
    enabled: bool
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    tenant_id: str
    event_type: str
    payload: str
    attempts: int
    created_at: float


class SqliteWebhooks:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def put(
        self, tenant_id: str, url: str, events: list[str], secret: str, now: float
    ) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute(
                "INSERT INTO webhooks (tenant_id, url, events, secret, enabled, updated_at)"
                " VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (tenant_id) DO UPDATE SET"
                " url = excluded.url, events = excluded.events, secret = excluded.secret,"
                " enabled = 1, disabled_reason = NULL, updated_at = excluded.updated_at",
                (tenant_id, url, dumps(events), secret, now),
            )
        )

    async def get(self, tenant_id: str) -> Endpoint | None:
        row = await self._store._one(
            "SELECT tenant_id, url, events, secret, enabled, disabled_reason FROM webhooks"
            " WHERE tenant_id = ?",
            (tenant_id,),
        )
        if row is None:
            return None
        return Endpoint(row[0], row[1], json.loads(row[2]), row[3], bool(row[4]), row[5])

    async def disable(self, tenant_id: str, reason: str) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute(
                "UPDATE webhooks SET enabled = 0, disabled_reason = ? WHERE tenant_id = ?",
                (reason, tenant_id),
            )
        )

    async def feed(
        self, limit: int, make: Callable[[tuple[Any, ...], Endpoint], tuple[str, str, str] | None]
    ) -> int:
        """Moves the next events of the log into the outbox of each subscribed tenant, with
        the cursor, in one transaction: none is skipped, none is queued twice."""

        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM event_cursors WHERE name = 'webhooks'").fetchone()
            if row is None:  # first start: only what happens from now on goes out
                (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
                conn.execute("INSERT INTO event_cursors VALUES ('webhooks', ?)", (last,))
                return 0
            endpoints = {
                r[0]: Endpoint(r[0], r[1], json.loads(r[2]), r[3], bool(r[4]), r[5])
                for r in conn.execute(
                    "SELECT tenant_id, url, events, secret, enabled, disabled_reason FROM webhooks"
                    " WHERE enabled = 1"
                )
            }
            if not endpoints:  # nobody listens: move the cursor past everything at once
                (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
                if last > row[0]:
                    conn.execute(
                        "UPDATE event_cursors SET seq = ? WHERE name = 'webhooks'", (last,)
                    )
                return 0
            events = conn.execute(
                "SELECT e.seq, e.message_id, e.type, e.at, e.data, m.tenant_id, m.to_number,"
                " m.status, m.client_ref, m.campaign_id, m.route, m.provider FROM events e"
                " JOIN messages m ON m.message_id = e.message_id WHERE e.seq > ?"
                " ORDER BY e.seq LIMIT ?",
                (row[0], limit),
            ).fetchall()
            if not events:
                return 0
            queued = 0
            for event in events:
                endpoint = endpoints.get(event[5])
                if endpoint is None or event[2] not in endpoint.events:
                    continue
                made = make(tuple(event), endpoint)
                if made is None:
                    continue
                delivery_id, event_type, payload = made
                conn.execute(
                    "INSERT INTO webhook_deliveries (delivery_id, tenant_id, event_type, payload,"
                    " next_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (delivery_id, event[5], event_type, payload, event[3], event[3]),
                )
                queued += 1
            conn.execute(
                "UPDATE event_cursors SET seq = ? WHERE name = 'webhooks'", (events[-1][0],)
            )
            return queued or -1  # -1: events were read, none for a webhook

        return await self._store.writer.run(job)

    async def due(self, now: float, limit: int) -> list[Delivery]:
        rows = await self._store._all(
            "SELECT delivery_id, tenant_id, event_type, payload, attempts, created_at"
            " FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ?"
            " ORDER BY next_at LIMIT ?",
            (now, limit),
        )
        return [Delivery(*r) for r in rows]

    async def next_due(self) -> float | None:
        row = await self._store._one(
            "SELECT min(next_at) FROM webhook_deliveries WHERE state = 'pending'"
        )
        return row[0] if row and row[0] is not None else None

    async def record(
        self,
        delivery_id: str,
        *,
        state: str,
        attempts: int,
        next_at: float,
        status: int | None,
        error: str | None,
    ) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, next_at = ?,"
                " last_status = ?, last_error = ? WHERE delivery_id = ?",
                (state, attempts, next_at, status, error, delivery_id),
            )
        )

    async def hold_tenant(self, tenant_id: str, state: str) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute(
                "UPDATE webhook_deliveries SET state = ? WHERE tenant_id = ? AND state = 'pending'",
                (state, tenant_id),
            )
        )

    async def deliveries(self, tenant_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self._store._all(
            "SELECT delivery_id, event_type, state, attempts, last_status, last_error, created_at"
            " FROM webhook_deliveries WHERE tenant_id = ? ORDER BY created_at DESC LIMIT ?",
            (tenant_id, limit),
        )
        keys = (
            "delivery_id",
            "event_type",
            "state",
            "attempts",
            "last_status",
            "last_error",
            "created_at",
        )
        return [
            {**dict(zip(keys, r, strict=True)), "created_at": to_rfc3339(r[-1])} for r in rows
        ]
