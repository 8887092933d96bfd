"""The embedded store: SQLite in WAL mode, one group-committing writer, aiosqlite for reads."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from gateway.dispatch.ports import DeliveryReport
from gateway.domain.messages import (
    RELEASED_LEASE,
    RICH_ROUTES,
    Deferred,
    Event,
    Expired,
    Failed,
    IdempotencyRecord,
    MessageView,
    NewMessage,
    Outcome,
    QueuedMessage,
    Reroute,
    Retry,
    Settled,
    Status,
    Submitted,
    Suppressed,
    can_move,
    fallback_event,
    message_id_of,
    report_fits,
    wait_stage,
)
from gateway.logging import get_logger
from gateway.storage.base import (
    AcceptResult,
    DuplicateTenant,
    IdempotencyConflict,
    LinkRecord,
    LogFilter,
    ReportResult,
    ReviewState,
    TemplateRecord,
)
from gateway.storage.schema import migrate
from gateway.storage.writer import SqliteWriter, connect

log = get_logger("gateway.storage")
PARKED = 1e10  # added to a paused campaign's queue entries, taken off again on resume
# A deferred message (m) whose queue entry (q) waits for its window or quiet hours to open,
# not for a retry (a retry leaves the status as it was, and comes later as an event)
WAITS_FOR_OPENING = (
    "(SELECT e.type FROM events e WHERE e.message_id = q.message_id"
    " ORDER BY e.seq DESC LIMIT 1) = 'deferred'"
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# sort keys for writing rows in key order (one pass over the pages they touch)
_by_message_id = attrgetter("message_id")
_first = itemgetter(0)


_REVIEW_COLUMNS = (
    "tenant_id, template_id, version, vendor, state, reason, review_id, attempts, next_at,"
    " updated_at"
)
_MESSAGE_COLUMNS = (
    "message_id, tenant_id, to_number, status, reason, route, provider, provider_ref, category,"
    " template_id, template_version, campaign_id, client_ref, rendered, created_at, updated_at,"
    " expires_at"
)


class SqliteStore:
    def __init__(
        self, path: Path | str, *, checkpoint_interval_s: float = 1.0, synchronous: str = "FULL"
    ) -> None:
        self.path = Path(path)
        self._checkpoint_interval_s = checkpoint_interval_s
        self._synchronous = synchronous
        self._writer: SqliteWriter | None = None
        self._reader: aiosqlite.Connection | None = None
        self._point: sqlite3.Connection | None = None
        # whether a tenant overrides any number's carrier; this process is the database's
        # only writer (see release_leases), so the answer stays exact
        self._ported: dict[str, bool] = {}

    # lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the database holds customers' data, rendered codes and webhook secrets: only this
        # account may read it (SQLite gives its WAL and shared-memory files the same mode)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(self.path, 0o600)
        conn = connect(self.path)
        try:
            migrate(conn)
        finally:
            conn.close()
        self._writer = SqliteWriter(
            self.path,
            checkpoint_interval_s=self._checkpoint_interval_s,
            synchronous=self._synchronous,
        )
        self._writer.start()
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute("PRAGMA query_only=1")
        # Point reads by primary key on the event loop itself: microseconds, where a hop to
        # aiosqlite's thread costs a GIL hand-off (the click redirect needs them fast).
        self._point = sqlite3.connect(self.path, check_same_thread=False)
        self._point.execute("PRAGMA query_only=1")

    async def close(self) -> None:
        if self._point is not None:
            self._point.close()
            self._point = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    @property
    def writer(self) -> SqliteWriter:
        assert self._writer is not None, "store is not open"
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    async def ping(self) -> None:
        async with self.reader.execute("SELECT 1") as cur:
            await cur.fetchone()

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self.reader.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self.reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # tenants -----------------------------------------------------------------------------
    async def create_tenant(
        self, tenant_id: str, keys: Sequence[tuple[str, str]], now: float
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO tenants (tenant_id, created_at) VALUES (?, ?)", (tenant_id, now)
                )
            except sqlite3.IntegrityError:
                raise DuplicateTenant(tenant_id) from None
            conn.executemany(
                "INSERT INTO api_keys (key_hash, tenant_id, role, created_at) VALUES (?, ?, ?, ?)",
                [(h, tenant_id, role, now) for h, role in keys],
            )

        await self.writer.run(job)

    async def add_keys(self, tenant_id: str, keys: Sequence[tuple[str, str]], now: float) -> None:
        await self.writer.run(
            lambda conn: conn.executemany(
                "INSERT INTO api_keys (key_hash, tenant_id, role, created_at) VALUES (?, ?, ?, ?)",
                [(h, tenant_id, role, now) for h, role in keys],
            )
        )

    async def get_settings(self, tenant_id: str) -> dict[str, Any]:
        row = await self._one("SELECT settings FROM tenants WHERE tenant_id = ?", (tenant_id,))
        return orjson.loads(row[0]) if row else {}

    async def put_settings(self, tenant_id: str, settings: dict[str, Any]) -> None:
        text = dumps(settings)
        await self.writer.run(
            lambda conn: conn.execute(
                "UPDATE tenants SET settings = ? WHERE tenant_id = ?", (text, tenant_id)
            )
        )

    async def wake_deferred(self, tenant_id: str, now: float) -> int:
        """Deferred messages waiting for a later opening are due now, to be judged again by
        the send policy; one waiting out a retry's backoff (its status is still deferred,
        its latest event a retry) keeps its time, and a paused campaign's, parked far ahead,
        stay parked. The queue is read by due time, not the tenant's every message."""
        return await self.writer.run(
            lambda conn: conn.execute(
                "UPDATE dispatch_queue SET due_at = ?1 WHERE message_id IN"
                " (SELECT q.message_id FROM dispatch_queue q"
                " JOIN messages m ON m.message_id = q.message_id"
                " WHERE q.due_at > ?1 AND q.due_at < ?2"
                " AND m.tenant_id = ?3 AND m.status = 'deferred' AND " + WAITS_FOR_OPENING + ")",
                (now, PARKED, tenant_id),
            ).rowcount,
            off_loop=True,
        )

    async def find_key(self, key_hash: str) -> tuple[str, str] | None:
        row = await self._one(
            "SELECT tenant_id, role FROM api_keys WHERE key_hash = ?", (key_hash,)
        )
        return (row[0], row[1]) if row else None

    async def tenant_exists(self, tenant_id: str) -> bool:
        row = await self._one("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,))
        return row is not None

    async def revoke_key(self, key_hash: str) -> tuple[str, str] | None:
        def job(conn: sqlite3.Connection) -> tuple[str, str] | None:
            rows = conn.execute(
                "DELETE FROM api_keys WHERE key_hash = ? RETURNING tenant_id, role", (key_hash,)
            ).fetchall()
            return (rows[0][0], rows[0][1]) if rows else None

        return await self.writer.run(job)

    async def sign_out(self, session_hash: str, until: float, now: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM console_signouts WHERE until < ?", (now,))
            conn.execute(
                "INSERT OR REPLACE INTO console_signouts (session_hash, until) VALUES (?, ?)",
                (session_hash, until),
            )

        await self.writer.run(job)

    async def is_signed_out(self, session_hash: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM console_signouts WHERE session_hash = ?", (session_hash,)
        )
        return row is not None

    # brands ------------------------------------------------------------------------------
    async def put_brand(
        self, tenant_id: str, brand_id: str, body: dict[str, Any], now: float
    ) -> None:
        text = dumps(body)
        await self.writer.run(
            lambda conn: conn.execute(
                "INSERT INTO brands (tenant_id, brand_id, body, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, brand_id) DO UPDATE SET body = excluded.body,"
                " updated_at = excluded.updated_at",
                (tenant_id, brand_id, text, now),
            )
        )

    async def get_brand(self, tenant_id: str, brand_id: str) -> dict[str, Any] | None:
        row = await self._one(
            "SELECT body FROM brands WHERE tenant_id = ? AND brand_id = ?", (tenant_id, brand_id)
        )
        return orjson.loads(row[0]) if row else None

    async def list_brands(self, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
        rows = await self._all(
            "SELECT brand_id, body FROM brands WHERE tenant_id = ? ORDER BY brand_id", (tenant_id,)
        )
        return [(r[0], orjson.loads(r[1])) for r in rows]

    # templates ---------------------------------------------------------------------------
    async def put_template(
        self,
        tenant_id: str,
        template_id: str,
        body: dict[str, Any],
        now: float,
        reviews: dict[str, str | None] | None = None,
    ) -> TemplateRecord:
        text = dumps(body)

        def job(conn: sqlite3.Connection) -> int:
            (latest,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM templates"
                " WHERE tenant_id = ? AND template_id = ?",
                (tenant_id, template_id),
            ).fetchone()
            conn.execute(
                "INSERT INTO templates (tenant_id, template_id, version, body, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (tenant_id, template_id, latest + 1, text, now),
            )
            conn.executemany(
                "INSERT INTO template_reviews (tenant_id, template_id, version, vendor, state,"
                " reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        tenant_id,
                        template_id,
                        latest + 1,
                        vendor,
                        "pending" if reason is None else "not_applicable",
                        reason,
                        now,
                    )
                    for vendor, reason in (reviews or {}).items()
                ],
            )
            return int(latest) + 1

        version = await self.writer.run(job)
        return TemplateRecord(tenant_id, template_id, version, body, now)

    async def get_template(
        self, tenant_id: str, template_id: str, version: int | None = None
    ) -> TemplateRecord | None:
        if version is None:
            row = await self._one(
                "SELECT version, body, created_at FROM templates"
                " WHERE tenant_id = ? AND template_id = ?"
                " ORDER BY version DESC LIMIT 1",
                (tenant_id, template_id),
            )
        else:
            row = await self._one(
                "SELECT version, body, created_at FROM templates"
                " WHERE tenant_id = ? AND template_id = ? AND version = ?",
                (tenant_id, template_id, version),
            )
        if row is None:
            return None
        return TemplateRecord(tenant_id, template_id, row[0], orjson.loads(row[1]), row[2])

    async def list_templates(self, tenant_id: str) -> list[TemplateRecord]:
        rows = await self._all(
            "SELECT t.template_id, t.version, t.body, t.created_at FROM templates t"
            " WHERE t.tenant_id = ? AND t.version = (SELECT max(version) FROM templates"
            " WHERE tenant_id = t.tenant_id AND template_id = t.template_id)"
            " ORDER BY t.template_id",
            (tenant_id,),
        )
        return [TemplateRecord(tenant_id, r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows]

    # vendors' reviews --------------------------------------------------------------------
    async def reviews_for(
        self, tenant_id: str, template_id: str, version: int
    ) -> list[ReviewState]:
        rows = await self._all(
            f"SELECT {_REVIEW_COLUMNS} FROM template_reviews"
            " WHERE tenant_id = ? AND template_id = ? AND version = ? ORDER BY vendor",
            (tenant_id, template_id, version),
        )
        return [ReviewState(*r) for r in rows]

    async def due_reviews(self, now: float, limit: int) -> list[ReviewState]:
        rows = await self._all(
            f"SELECT {_REVIEW_COLUMNS} FROM template_reviews"
            " WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
            (now, limit),
        )
        return [ReviewState(*r) for r in rows]

    async def update_review(self, review: ReviewState) -> None:
        r = review
        await self.writer.run(
            lambda conn: conn.execute(
                "UPDATE template_reviews SET state = ?, reason = ?, review_id = ?, attempts = ?,"
                " next_at = ?, updated_at = ? WHERE tenant_id = ? AND template_id = ?"
                " AND version = ? AND vendor = ?",
                (
                    r.state,
                    r.reason,
                    r.review_id,
                    r.attempts,
                    r.next_at,
                    r.updated_at,
                    r.tenant_id,
                    r.template_id,
                    r.version,
                    r.vendor,
                ),
            )
        )

    async def find_review(self, vendor: str, review_id: str) -> ReviewState | None:
        row = await self._one(
            f"SELECT {_REVIEW_COLUMNS} FROM template_reviews WHERE vendor = ? AND review_id = ?",
            (vendor, review_id),
        )
        return ReviewState(*row) if row else None

    # portability -------------------------------------------------------------------------
    async def set_portability(
        self, tenant_id: str, number: str, carrier: str | None, now: float
    ) -> None:
        if carrier is None:
            sql, params = (
                "DELETE FROM portability WHERE tenant_id = ? AND number = ?",
                (tenant_id, number),
            )
        else:
            sql = (
                "INSERT INTO portability (tenant_id, number, carrier, updated_at) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (tenant_id, number) DO UPDATE SET"
                " carrier = excluded.carrier, updated_at = excluded.updated_at"
            )
            params = (tenant_id, number, carrier, now)  # type: ignore[assignment]
            # before the write, and never taken back (not even when the last override goes):
            # "maybe" is always safe, and a read in flight cannot overwrite it
            self._ported[tenant_id] = True
        await self.writer.run(lambda conn: conn.execute(sql, params))

    async def portability(self, tenant_id: str, numbers: Sequence[str]) -> dict[str, str]:
        ported = self._ported.get(tenant_id)
        if ported is None:
            row = await self._one(
                "SELECT 1 FROM portability WHERE tenant_id = ? LIMIT 1", (tenant_id,)
            )
            ported = self._ported.setdefault(tenant_id, row is not None)
        if not ported:  # most tenants override no number: no query per dispatch round
            return {}
        out: dict[str, str] = {}
        numbers = list(numbers)
        for start in range(0, len(numbers), 500):
            chunk = numbers[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                "SELECT number, carrier FROM portability"
                f" WHERE tenant_id = ? AND number IN ({marks})",
                (tenant_id, *chunk),
            )
            out.update({r[0]: r[1] for r in rows})
        return out

    # tracked links -----------------------------------------------------------------------
    async def find_link(self, token: str) -> LinkRecord | None:
        assert self._point is not None, "store is not open"
        row = self._point.execute(
            "SELECT token, tenant_id, message_id, button, label, url FROM links WHERE token = ?",
            (token,),
        ).fetchone()
        return LinkRecord(*row) if row else None

    async def revoke_pending(self, tenant_id: str, message_id: str, now: float) -> str | None:
        """Revokes a message not yet handed to a provider; answers what it found: "revoked",
        "in_flight" (being handed over right now), another status, or None (no such message)."""

        def job(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT status FROM messages WHERE message_id = ? AND tenant_id = ?",
                (message_id, tenant_id),
            ).fetchone()
            if row is None:
                return None
            if row[0] not in (Status.ACCEPTED, Status.DEFERRED):
                return str(row[0])
            leased = conn.execute(
                "SELECT lease_until > ? FROM dispatch_queue WHERE message_id = ?", (now, message_id)
            ).fetchone()
            if leased and leased[0]:
                return "in_flight"
            conn.execute("DELETE FROM dispatch_queue WHERE message_id = ?", (message_id,))
            _set_status(conn, message_id, Status.REVOKED, now, reason="revoked")
            _event(conn, message_id, "revoked", now)
            return "revoked_now"

        return await self.writer.run(job)

    async def mark_revoked(
        self, message_id: str, now: float, data: dict[str, Any], recalled: bool
    ) -> bool:
        """Records the provider's answer to a recall: revoked if it withdrew the message."""

        def job(conn: sqlite3.Connection) -> bool:
            moved = recalled and _set_status(
                conn, message_id, Status.REVOKED, now, reason="revoked"
            )
            if moved:
                conn.execute("DELETE FROM dispatch_queue WHERE message_id = ?", (message_id,))
            _event(conn, message_id, "revoked" if moved else "revoke_refused", now, **data)
            return moved

        return await self.writer.run(job)

    async def reply_target(
        self, phone: str, in_reply_to: str | None = None
    ) -> tuple[str, str] | None:
        """(message_id, tenant_id) of the message a reply from ``phone`` answers: the one the
        provider names (``in_reply_to``, its client reference), if it went to this phone;
        else the newest marketing message handed to a provider for ``phone`` (opting out
        concerns marketing), or the newest of any kind, if only one tenant wrote to it. A
        reply two tenants could own is nobody's: a bank must never see a reply (or an
        opt-out) meant for another."""
        if in_reply_to is not None:
            row = await self._one(
                "SELECT message_id, tenant_id FROM messages WHERE message_id = ? AND to_number = ?",
                (message_id_of(in_reply_to), phone),
            )
            if row is not None:
                return row[0], row[1]
        # what reached a provider (what the phone can answer) first; else anything queued;
        # a query per tenant, on the (tenant_id, to_number, created_at) index
        tenants = [t for (t,) in await self._all("SELECT tenant_id FROM tenants")]
        for reached in (" AND status IN ('submitted', 'delivered')", ""):
            owners = []
            for tenant_id in tenants:
                row = await self._one(
                    "SELECT message_id FROM messages WHERE tenant_id = ? AND to_number = ?"
                    f"{reached} ORDER BY category = 'marketing' DESC, created_at DESC LIMIT 1",
                    (tenant_id, phone),
                )
                if row is not None:
                    owners.append((row[0], tenant_id))
            if owners:
                return owners[0] if len(owners) == 1 else None
        return None

    async def record_reply(
        self,
        message_id: str,
        at: float,
        data: dict[str, Any],
        *,
        provider: str,
        provider_ref: str | None,
    ) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            if provider_ref is not None:  # seen before: the same reply delivered again
                seen = conn.execute(
                    "INSERT OR IGNORE INTO report_seen (provider, provider_ref, status)"
                    " VALUES (?, ?, 'mo')",
                    (provider, provider_ref),
                )
                if seen.rowcount == 0:
                    return False
            _event(conn, message_id, "replied", at, **data)
            return True

        return await self.writer.run(job)

    async def record_clicks(self, clicks: Sequence[tuple[LinkRecord, float, str | None]]) -> None:
        """Clicks, a batch at a time: ``clicked`` events, and each recipient's last click
        (``last_clicked_at``, ``last_clicked_route``) for segments to use: one update per
        message clicked in the batch (its latest click), however often it was tapped."""
        events = [
            (
                link.message_id,
                at,
                dumps(
                    {"button": link.button, "label": link.label, "user_agent": ua[:300]}
                    if ua
                    else {"button": link.button, "label": link.label}
                ),
            )
            for link, at, ua in clicks
        ]
        latest: dict[str, tuple[float, str]] = {}
        for link, at, _ in clicks:
            seen = latest.get(link.message_id)
            if seen is None or at >= seen[0]:
                latest[link.message_id] = (at, link.tenant_id)

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO events (message_id, type, at, data) VALUES (?, 'clicked', ?, ?)",
                events,
            )
            conn.executemany(
                "UPDATE recipients SET attrs = json_set(attrs, '$.last_clicked_at', ?,"
                " '$.last_clicked_route', (SELECT route FROM messages WHERE message_id = ?))"
                " WHERE tenant_id = ? AND phone = (SELECT to_number FROM messages"
                " WHERE message_id = ?)",
                [(at, mid, tenant, mid) for mid, (at, tenant) in latest.items()],
            )

        await self.writer.run(job, savepoint=False)

    # messages ----------------------------------------------------------------------------
    async def accept(
        self, message: NewMessage, idempotency: IdempotencyRecord | None = None
    ) -> AcceptResult:
        m = message

        def job(conn: sqlite3.Connection) -> AcceptResult:
            if idempotency is not None:
                earlier = claim_idempotency(conn, idempotency)
                if earlier is not None:
                    return AcceptResult(earlier, replayed=True)
            insert_message(conn, m)
            return AcceptResult(m.id)

        # Without an idempotency key nothing in the job can fail alone (ids are fresh), so it
        # needs no savepoint of its own.
        return await self.writer.run(job, savepoint=idempotency is not None)

    async def get_message(self, tenant_id: str, message_id: str) -> MessageView | None:
        row = await self._one(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id = ? AND tenant_id = ?",
            (message_id, tenant_id),
        )
        if row is None:
            return None
        events = await self._all(
            "SELECT type, at, data FROM events WHERE message_id = ? ORDER BY seq", (message_id,)
        )
        return MessageView(
            id=row[0],
            tenant_id=row[1],
            to=row[2],
            status=row[3],
            reason=row[4],
            route=row[5],
            provider=row[6],
            provider_ref=row[7],
            category=row[8],
            template_id=row[9],
            template_version=row[10],
            campaign_id=row[11],
            client_ref=row[12],
            rendered=orjson.loads(row[13]),
            created_at=row[14],
            updated_at=row[15],
            expires_at=row[16],
            events=[
                Event(Status.ACCEPTED, row[14]),
                *(Event(e[0], e[1], orjson.loads(e[2])) for e in events),
            ],
        )

    async def list_messages(
        self, tenant_id: str, where: LogFilter, before: str | None, limit: int
    ) -> list[tuple[Any, ...]]:
        clauses, params = ["tenant_id = ?"], [tenant_id]
        for column, value in (
            ("campaign_id", where.campaign_id),
            ("status", where.status),
            ("provider", where.provider),
            ("route", where.route),
            ("to_number", where.to),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if where.since is not None:
            clauses.append("created_at >= ?")
            params.append(where.since)  # type: ignore[arg-type]
        if where.until is not None:
            clauses.append("created_at < ?")
            params.append(where.until)  # type: ignore[arg-type]
        if before is not None:
            clauses.append("message_id < ?")
            params.append(before)
        rows = await self._all(
            "SELECT message_id, to_number, status, reason, route, provider, campaign_id,"
            " template_id, template_version, client_ref, category, created_at, updated_at"
            f" FROM messages WHERE {' AND '.join(clauses)} ORDER BY message_id DESC LIMIT ?",
            (*params, limit),
        )
        return [tuple(r) for r in rows]

    async def get_idempotency(self, tenant_id: str, key: str) -> IdempotencyRecord | None:
        row = await self._one(
            "SELECT request_hash, message_id, created_at FROM idempotency_keys"
            " WHERE tenant_id = ? AND key = ?",
            (tenant_id, key),
        )
        return IdempotencyRecord(tenant_id, key, row[0], row[1], row[2]) if row else None

    async def purge_idempotency(self, before: float) -> int:
        return await self.writer.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE created_at < ?", (before,)
                ).rowcount
            )
        )

    # dispatch ----------------------------------------------------------------------------
    async def release_leases(self) -> int:
        """At start: one process owns an SQLite file, so every lease is a dead process's."""
        return await self.writer.run(
            lambda conn: (
                conn.execute(
                    "UPDATE dispatch_queue SET lease_until = ? WHERE lease_until > ?",
                    (RELEASED_LEASE, RELEASED_LEASE),
                ).rowcount
            )
        )

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[QueuedMessage]:
        def job(conn: sqlite3.Connection) -> list[QueuedMessage]:
            # one read of the due entries with their messages, then their leases, in the
            # writer's transaction (so no other claim can come between the two)
            rows = conn.execute(
                # the rendered message as UTF-8 bytes, as orjson reads it (as TEXT it was
                # decoded to a str, then encoded again by orjson: ~1 µs a message)
                "SELECT q.message_id, m.tenant_id, m.to_number, m.category,"
                " CAST(m.rendered AS BLOB),"
                " m.route_pref, q.attempts, m.expires_at, m.status, m.template_id,"
                " m.template_version, q.stage, q.exclude, q.ref_suffix, m.route, m.provider,"
                " m.campaign_id, m.timezone, m.policy"
                " FROM dispatch_queue q LEFT JOIN messages m ON m.message_id = q.message_id"
                " WHERE q.due_at <= ? AND q.lease_until <= ? ORDER BY q.due_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            if not rows:
                return []
            orphans = [r[0] for r in rows if r[1] is None]
            if orphans:  # a queue entry without its message (a damaged database): nothing to send
                log.warning("queue_orphans_dropped", count=len(orphans))
                conn.executemany(
                    "DELETE FROM dispatch_queue WHERE message_id = ?", [(o,) for o in orphans]
                )
                rows = [r for r in rows if r[1] is not None]
            ids = [r[0] for r in rows]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                conn.execute(
                    "UPDATE dispatch_queue SET lease_until = ?"
                    f" WHERE message_id IN ({','.join('?' * len(chunk))})",
                    (lease_until, *chunk),
                )
            # A claim's messages share most of their values (tenant, category, status,
            # template, stage, route, provider, campaign, time zone, policy), and SQLite
            # makes a new object of each a row: one object a value a claim instead (a
            # campaign's peak 0.8-2.8 MB lower in four alternating pairs at 200,000).
            same: dict[Any, Any] = {}
            one = same.setdefault
            policies: dict[str, dict[str, Any]] = {}  # shared: never changed after the parse
            out = [  # positionally, in QueuedMessage's order: thousands a second
                QueuedMessage(
                    r[0],  # id
                    one(r[1], r[1]),  # tenant_id
                    r[2],  # to
                    one(r[3], r[3]),  # category
                    r[4],  # rendered, as stored: the dispatcher parses it when it plans
                    _routes(r[5]),  # route_pref
                    r[6],  # attempts
                    r[7],  # expires_at
                    one(r[8], r[8]),  # status
                    one(r[9], r[9]),  # template_id
                    r[10],  # template_version
                    one(r[11], r[11]),  # stage
                    _routes(r[12]),  # exclude
                    r[13],  # ref_suffix
                    one(r[14], r[14]),  # route
                    one(r[15], r[15]),  # provider
                    one(r[16], r[16]),  # campaign_id
                    one(r[17], r[17]),  # timezone
                    _policy(r[18], policies),  # policy
                )
                for r in rows
            ]
            out.sort(key=lambda q: q.id)
            return out

        return await self.writer.run(job)

    async def next_due(self) -> float | None:
        row = await self._one("SELECT min(max(due_at, lease_until)) FROM dispatch_queue")
        return row[0] if row and row[0] is not None else None

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if outcomes:
            await self.writer.run(lambda conn: _apply_outcomes(conn, outcomes))

    # events in ---------------------------------------------------------------------------
    async def apply_reports(
        self, provider: str, reports: Sequence[DeliveryReport], now: float
    ) -> list[ReportResult]:
        return await self.writer.run(lambda conn: _apply_reports(conn, provider, reports, now))


def claim_idempotency(conn: sqlite3.Connection, idempotency: IdempotencyRecord) -> str | None:
    """Records the key for the resource about to be made; answers the earlier resource's id
    if the key was used before with the same request, and raises ``IdempotencyConflict`` if
    with another. In the writer's transaction, so concurrent requests with one key run once.
    (``message_id`` holds the resource's id: a message, or a campaign.)"""
    try:
        conn.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, message_id,"
            " created_at) VALUES (?, ?, ?, ?, ?)",
            (
                idempotency.tenant_id,
                idempotency.key,
                idempotency.request_hash,
                idempotency.message_id,
                idempotency.created_at,
            ),
        )
    except sqlite3.IntegrityError:
        request_hash, resource_id = conn.execute(
            "SELECT request_hash, message_id FROM idempotency_keys"
            " WHERE tenant_id = ? AND key = ?",
            (idempotency.tenant_id, idempotency.key),
        ).fetchone()
        if request_hash != idempotency.request_hash:
            raise IdempotencyConflict(idempotency.key) from None
        return str(resource_id)
    return None


def insert_message(conn: sqlite3.Connection, m: NewMessage, *, skip_existing: bool = False) -> bool:
    """One message with its links and its queue entry (or its first event, if it was born
    failed or suppressed). With ``skip_existing``, a message the database refuses as a
    repeat (one per campaign and recipient) is skipped: answers whether it was new."""
    return insert_messages(conn, (m,), skip_existing=skip_existing) == 1


def insert_messages(
    conn: sqlite3.Connection, messages: Sequence[NewMessage], *, skip_existing: bool = False
) -> int:
    """Messages as ``insert_message`` stores each; answers how many were new.

    The messages go in one by one (each may be refused as a repeat); their links, first
    events and queue entries then go in one statement each, the links in token order (their
    tokens are random: sorted, the token's index is walked once; the rows append).
    """
    sql = (
        "INSERT INTO messages (message_id, tenant_id, to_number, status, reason, category,"
        " route_pref, template_id, template_version, campaign_id, client_ref, rendered,"
        " created_at, updated_at, expires_at, timezone, policy)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        + (" ON CONFLICT DO NOTHING" if skip_existing else "")
    )
    links: list[tuple[str, str, str, str, str, str]] = []
    events: list[tuple[str, str, float, str]] = []
    queued: list[tuple[str, float]] = []
    new = 0
    for m in messages:
        inserted = conn.execute(
            sql,
            (
                m.id,
                m.tenant_id,
                m.to,
                m.status,
                m.reason,
                m.category,
                ",".join(m.route_pref),
                m.template_id,
                m.template_version,
                m.campaign_id,
                m.client_ref,
                dumps(m.rendered.as_dict()),
                m.created_at,
                m.created_at,
                m.expires_at,
                m.timezone,
                dumps(m.policy) if m.policy else None,
            ),
        ).rowcount
        if not inserted:
            continue
        new += 1
        links += [(k.token, m.tenant_id, m.id, k.button, k.label, k.url) for k in m.links]
        # Every message starts with an implicit "accepted" event at created_at (see
        # get_message); only a message born in another status stores a first event.
        if m.status != Status.ACCEPTED:
            events.append((m.id, m.status, m.created_at, dumps(_compact({"reason": m.reason}))))
        if m.status in (Status.ACCEPTED, Status.DEFERRED):
            queued.append((m.id, m.due_at))
    if links:
        links.sort(key=_first)
        conn.executemany(
            "INSERT INTO links (token, tenant_id, message_id, button, label, url)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            links,
        )
    if events:
        conn.executemany(
            "INSERT INTO events (message_id, type, at, data) VALUES (?, ?, ?, ?)", events
        )
    if queued:
        conn.executemany("INSERT INTO dispatch_queue (message_id, due_at) VALUES (?, ?)", queued)
    return new


def _event(conn: sqlite3.Connection, message_id: str, type_: str, at: float, **data: Any) -> None:
    conn.execute(
        "INSERT INTO events (message_id, type, at, data) VALUES (?, ?, ?, ?)",
        (message_id, type_, at, dumps(_compact(data))),
    )


def _set_status(
    conn: sqlite3.Connection, message_id: str, status: str, at: float, **columns: Any
) -> bool:
    """Moves a message forward; answers False (and changes nothing) if that is not forward."""
    row = conn.execute("SELECT status FROM messages WHERE message_id = ?", (message_id,)).fetchone()
    if row is None or not can_move(row[0], status):
        return False
    sets = ", ".join(f"{k} = ?" for k in columns)
    conn.execute(
        f"UPDATE messages SET status = ?, updated_at = ?{', ' + sets if sets else ''}"
        " WHERE message_id = ?",
        (status, at, *columns.values(), message_id),
    )
    return True


def _apply_outcomes(conn: sqlite3.Connection, outcomes: Sequence[Outcome]) -> None:
    _apply_submitted(conn, [o for o in outcomes if isinstance(o, Submitted)])
    for o in outcomes:
        if isinstance(o, Submitted):
            continue  # recorded in bulk above
        elif isinstance(o, Reroute):
            _reroute(conn, o.message_id, o.route, o.at, o.ref_suffix)
            _event(
                conn,
                o.message_id,
                "fallback",
                o.at,
                **{"from": o.route, "to": "sms"},
                provider=o.provider,
                reason=o.reason,
            )
        elif isinstance(o, Settled):
            conn.execute("DELETE FROM dispatch_queue WHERE message_id = ?", (o.message_id,))
        elif isinstance(o, Deferred):
            conn.execute(
                "UPDATE dispatch_queue SET due_at = ?, lease_until = 0 WHERE message_id = ?",
                (o.until, o.message_id),
            )
            if _set_status(conn, o.message_id, Status.DEFERRED, o.at):
                _event(conn, o.message_id, "deferred", o.at, until=o.until)
        elif isinstance(o, Retry):
            conn.execute(
                "UPDATE dispatch_queue SET due_at = ?, lease_until = 0, attempts = ?"
                " WHERE message_id = ?",
                (o.due_at, o.attempt, o.message_id),
            )
            _event(
                conn,
                o.message_id,
                "retry",
                o.at,
                provider=o.provider,
                error=o.error,
                attempt=o.attempt,
                next_at=o.due_at,
            )
        elif isinstance(o, Failed):
            conn.execute("DELETE FROM dispatch_queue WHERE message_id = ?", (o.message_id,))
            if _set_status(
                conn,
                o.message_id,
                Status.FAILED,
                o.at,
                reason=o.reason,
                provider=o.provider,
                route=o.route,
            ):
                _event(
                    conn,
                    o.message_id,
                    "failed",
                    o.at,
                    reason=o.reason,
                    detail=o.detail,
                    provider=o.provider,
                )
        elif isinstance(o, Expired):
            conn.execute("DELETE FROM dispatch_queue WHERE message_id = ?", (o.message_id,))
            if _set_status(conn, o.message_id, Status.EXPIRED, o.at, reason=o.reason):
                _event(conn, o.message_id, "expired", o.at, reason=o.reason)
        elif isinstance(o, Suppressed):
            conn.execute("DELETE FROM dispatch_queue WHERE message_id = ?", (o.message_id,))
            if _set_status(conn, o.message_id, Status.SUPPRESSED, o.at, reason=o.reason):
                _event(conn, o.message_id, "suppressed", o.at, reason=o.reason)


def _apply_submitted(conn: sqlite3.Connection, subs: list[Submitted]) -> None:
    """Providers' acknowledgements, a batch at a time (one statement per kind, not per row).

    A delivery report may have overtaken the acknowledgement: the status only moves from
    accepted or deferred to submitted, never back from delivered; the route is recorded.
    """
    if not subs:
        return
    subs.sort(key=_by_message_id)  # in key order: one pass over the pages they touch
    conn.executemany(
        "INSERT INTO events (message_id, type, at, data) VALUES (?, 'fallback', ?, ?)",
        [(o.message_id, o.at, dumps(fallback_event(o))) for o in subs if o.fallbacks],
    )
    conn.executemany(
        "DELETE FROM dispatch_queue WHERE message_id = ?",
        [(o.message_id,) for o in subs if o.wait_until is None],
    )
    conn.executemany(  # wait for its report: a rich route then falls back, an SMS expires
        "UPDATE dispatch_queue SET stage = ?, due_at = ?, lease_until = 0 WHERE message_id = ?",
        [
            (wait_stage(o.route), o.wait_until, o.message_id)
            for o in subs
            if o.wait_until is not None
        ],
    )
    conn.executemany(  # handed over under a new reference: no report of it is seen yet
        "UPDATE messages SET route = ?, provider = ?, provider_ref = ?, updated_at = ?,"
        " status = CASE WHEN status IN ('accepted', 'deferred') THEN 'submitted' ELSE status END,"
        " reports = CASE WHEN provider_ref IS NULL OR provider_ref = ?3 THEN reports ELSE 0 END"
        " WHERE message_id = ?",
        [(o.route, o.provider, o.provider_ref, o.at, o.message_id) for o in subs],
    )
    conn.executemany(
        "INSERT INTO events (message_id, type, at, data) VALUES (?, 'submitted', ?, ?)",
        [(o.message_id, o.at, _submitted_data(o)) for o in subs],
    )


def _submitted_data(o: Submitted) -> str:
    data: dict[str, Any] = {"provider": o.provider, "route": o.route}
    if o.provider_ref is not None:
        data["provider_ref"] = o.provider_ref
    if o.client_ref is not None and o.client_ref != o.message_id:
        data["client_ref"] = o.client_ref
    data["attempt"] = o.attempt
    return dumps(data)


_ROUTE_LISTS: dict[str, tuple[str, ...]] = {}


def _policy(stored: str | None, parsed: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A message's stored send policy, parsed once for every message of a claim that has it."""
    if not stored:
        return None
    policy = parsed.get(stored)
    if policy is None:
        policy = parsed[stored] = orjson.loads(stored)
    return policy


def _routes(stored: str) -> tuple[str, ...]:
    """``"vendor_card,sms"`` → ``("vendor_card", "sms")``; the few lists there are, kept."""
    routes = _ROUTE_LISTS.get(stored)
    if routes is None:
        routes = tuple(p for p in stored.split(",") if p)
        if len(_ROUTE_LISTS) < 1024:
            _ROUTE_LISTS[stored] = routes
    return routes


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _reroute(
    conn: sqlite3.Connection, message_id: str, route: str, at: float, ref_suffix: int
) -> None:
    """Queues the message again, now, for the SMS: a rich route that gave up is not followed
    by another rich route (each would wait out its own timeout), only by the fallback."""
    del route  # every rich route is excluded from now on, whichever gave up
    conn.execute(
        "INSERT INTO dispatch_queue (message_id, due_at, lease_until, stage, exclude, ref_suffix)"
        " VALUES (?, ?, 0, 'send', ?, ?) ON CONFLICT (message_id) DO UPDATE SET"
        " due_at = excluded.due_at, lease_until = 0, stage = 'send', exclude = excluded.exclude,"
        " ref_suffix = excluded.ref_suffix",
        (message_id, at, ",".join(RICH_ROUTES), ref_suffix),
    )


_REPORT_BITS = {"delivered": 1, "failed": 2, "displayed": 4}  # ``messages.reports``


def _apply_reports(
    conn: sqlite3.Connection, provider: str, reports: Sequence[DeliveryReport], now: float
) -> list[ReportResult]:
    """A batch of reports with a handful of statements, not a handful per report.

    Each (provider, reference, status) applies once: a message keeps a bit per report kind
    for its current hand-over (``messages.reports``, reset when it is handed over under a
    new reference); statuses only move forward; a rich route's failure reroutes to the SMS
    instead of failing the message.
    """
    ids = list({r.message_id for r in reports})
    rows: dict[str, list[Any]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            "SELECT message_id, tenant_id, provider, route, status, provider_ref, route_pref,"
            " (SELECT lease_until FROM dispatch_queue q WHERE q.message_id = m.message_id),"
            f" reports FROM messages m WHERE message_id IN ({marks})",
            chunk,
        ):
            rows[row[0]] = list(row[1:])
    results: list[ReportResult] = []
    seen_now: dict[str, list[Any]] = {}  # messages whose report bits this batch sets
    events: list[tuple[str, str, float, str]] = []
    # each message's one status change this batch (a final status is never left): its
    # report bits are added at the end, when every report of the batch has set its own
    updates: dict[str, tuple[Any, ...]] = {}
    dequeue: list[tuple[str]] = []
    for r in reports:
        row = rows.get(r.message_id)
        if row is None:
            results.append(ReportResult(r.message_id, applied=False))
            continue
        tenant_id, current_provider, route, current, current_ref, route_pref, lease, bits = row
        if not report_fits(current_provider, current_ref, lease, provider, r.provider_ref):
            # a late report of an earlier route, or another provider's: it settles nothing
            results.append(ReportResult(r.message_id, applied=False, tenant_id=tenant_id))
            continue
        bit = _REPORT_BITS[r.status]
        if bits & bit:  # this kind of report for this hand-over came before
            results.append(ReportResult(r.message_id, applied=False, tenant_id=tenant_id))
            continue
        row[7] = bits | bit
        seen_now[r.message_id] = row
        if r.status == "displayed":
            events.append(
                (
                    r.message_id,
                    "displayed",
                    now,
                    dumps(_compact({"provider": provider, "provider_at": r.at})),
                )
            )
            results.append(ReportResult(r.message_id, True, "displayed", tenant_id))
            continue
        status = Status.DELIVERED if r.status == "delivered" else Status.FAILED
        if (
            status == Status.FAILED
            and route in RICH_ROUTES
            and current_provider == provider
            and current == Status.SUBMITTED
            and "sms" in route_pref.split(",")
        ):
            # A rich route could not deliver: not final, the SMS fallback goes next, unless
            # it is under way already (the rich timeout came first): one SMS, not two.
            queued = conn.execute(
                "SELECT ref_suffix, stage FROM dispatch_queue WHERE message_id = ?",
                (r.message_id,),
            ).fetchone()
            if queued is not None and queued[1] != "rich_wait":
                results.append(ReportResult(r.message_id, False, "rerouted", tenant_id))
                continue
            _reroute(conn, r.message_id, route, now, (queued[0] if queued else 0) + 1)
            events.append(
                (
                    r.message_id,
                    "fallback",
                    now,
                    dumps(
                        {
                            "from": route,
                            "to": "sms",
                            "provider": provider,
                            "reason": f"dlr_failed:{r.error_code or 'unknown'}",
                        }
                    ),
                )
            )
            results.append(ReportResult(r.message_id, True, "rerouted", tenant_id))
            continue
        if not can_move(current, status):  # an out-of-order report changes nothing
            results.append(ReportResult(r.message_id, False, status.value, tenant_id))
            continue
        row[3] = status  # a later report in this batch sees this one
        if current_provider is None:
            row[1] = provider
        updates[r.message_id] = (
            status.value,
            now,
            r.error_code if status == Status.FAILED else None,
            provider,
            r.provider_ref,
        )
        dequeue.append((r.message_id,))
        events.append(
            (
                r.message_id,
                status.value,
                now,
                dumps(
                    _compact(
                        {"provider": provider, "provider_at": r.at, "error_code": r.error_code}
                    )
                ),
            )
        )
        results.append(ReportResult(r.message_id, True, status.value, tenant_id))
    # each statement in key order: one pass over the pages it touches (see _apply_submitted);
    # a message's own events keep their order (the sort is stable)
    conn.executemany(
        "UPDATE messages SET status = ?, updated_at = ?, reason = coalesce(?, reason),"
        " provider = coalesce(provider, ?), provider_ref = coalesce(provider_ref, ?),"
        " reports = ? WHERE message_id = ?",
        [(*u, seen_now[mid][7], mid) for mid, u in sorted(updates.items())],
    )
    conn.executemany(  # the bits of the reports that moved no status (displayed, reroutes…)
        "UPDATE messages SET reports = ? WHERE message_id = ?",
        [(row[7], mid) for mid, row in sorted(seen_now.items()) if mid not in updates],
    )
    conn.executemany("DELETE FROM dispatch_queue WHERE message_id = ?", sorted(dequeue))
    events.sort(key=_first)
    conn.executemany("INSERT INTO events (message_id, type, at, data) VALUES (?, ?, ?, ?)", events)
    return results
