"""Versioned schema migrations, applied in order at start (``PRAGMA user_version``)."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: tenants, keys, brands, templates, messages, events, the dispatch queue, idempotency
    """
    CREATE TABLE tenants (
        tenant_id   TEXT PRIMARY KEY,
        settings    TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL
    );
    CREATE TABLE api_keys (
        key_hash    TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL REFERENCES tenants(tenant_id),
        role        TEXT NOT NULL CHECK (role IN ('campaign', 'ops')),
        created_at  REAL NOT NULL
    );
    CREATE TABLE brands (
        tenant_id   TEXT NOT NULL,
        brand_id    TEXT NOT NULL,
        body        TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (tenant_id, brand_id)
    );
    CREATE TABLE templates (
        tenant_id   TEXT NOT NULL,
        template_id TEXT NOT NULL,
        version     INTEGER NOT NULL,
        body        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (tenant_id, template_id, version)
    );
    CREATE TABLE messages (
        message_id       TEXT PRIMARY KEY,
        tenant_id        TEXT NOT NULL,
        to_number        TEXT NOT NULL,
        status           TEXT NOT NULL,
        reason           TEXT,
        category         TEXT NOT NULL,
        route            TEXT,
        provider         TEXT,
        provider_ref     TEXT,
        route_pref       TEXT NOT NULL DEFAULT '',
        template_id      TEXT NOT NULL,
        template_version INTEGER NOT NULL,
        campaign_id      TEXT,
        client_ref       TEXT,
        rendered         TEXT NOT NULL,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        expires_at       REAL NOT NULL
    );
    CREATE INDEX messages_tenant ON messages (tenant_id, message_id);
    CREATE TABLE events (
        seq         INTEGER PRIMARY KEY,
        message_id  TEXT NOT NULL,
        type        TEXT NOT NULL,
        at          REAL NOT NULL,
        data        TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_message ON events (message_id, seq);
    CREATE TABLE dispatch_queue (
        message_id  TEXT PRIMARY KEY,
        due_at      REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX dispatch_queue_due ON dispatch_queue (due_at);
    CREATE TABLE report_seen (
        provider     TEXT NOT NULL,
        provider_ref TEXT NOT NULL,
        status       TEXT NOT NULL,
        PRIMARY KEY (provider, provider_ref, status)
    ) WITHOUT ROWID;
    CREATE TABLE idempotency_keys (
        tenant_id    TEXT NOT NULL,
        key          TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        message_id   TEXT NOT NULL,
        created_at   REAL NOT NULL,
        PRIMARY KEY (tenant_id, key)
    );
    CREATE INDEX idempotency_created ON idempotency_keys (created_at);
    """,
    # 2: tracked links, and vendors' reviews of template versions
    """
    CREATE TABLE links (
        token       TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        button      TEXT NOT NULL,
        label       TEXT NOT NULL,
        url         TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX links_message ON links (message_id);
    CREATE TABLE template_reviews (
        tenant_id   TEXT NOT NULL,
        template_id TEXT NOT NULL,
        version     INTEGER NOT NULL,
        vendor      TEXT NOT NULL,
        state       TEXT NOT NULL,
        reason      TEXT,
        review_id   TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     REAL NOT NULL DEFAULT 0,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (tenant_id, template_id, version, vendor)
    );
    CREATE INDEX template_reviews_due ON template_reviews (state, next_at);
    """,
    # 3: routing: the queue remembers a message's stage and the routes it gave up on;
    #    tenants override the carrier of ported numbers
    """
    ALTER TABLE dispatch_queue ADD COLUMN stage TEXT NOT NULL DEFAULT 'send';
    ALTER TABLE dispatch_queue ADD COLUMN exclude TEXT NOT NULL DEFAULT '';
    ALTER TABLE dispatch_queue ADD COLUMN ref_suffix INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE portability (
        tenant_id   TEXT NOT NULL,
        number      TEXT NOT NULL,
        carrier     TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (tenant_id, number)
    ) WITHOUT ROWID;
    """,
    # 4: audiences and campaigns: recipients, segments, opt-outs, campaigns; a message
    #    carries its recipient's time zone and its sending policy (window, cap)
    """
    CREATE TABLE recipients (
        tenant_id   TEXT NOT NULL,
        phone       TEXT NOT NULL,
        tags        TEXT NOT NULL DEFAULT '[]',
        attrs       TEXT NOT NULL DEFAULT '{}',
        timezone    TEXT NOT NULL DEFAULT 'Asia/Shanghai',
        updated_at  REAL NOT NULL,
        PRIMARY KEY (tenant_id, phone)
    ) WITHOUT ROWID;
    CREATE TABLE segments (
        tenant_id   TEXT NOT NULL,
        segment_id  TEXT NOT NULL,
        rule        TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (tenant_id, segment_id)
    );
    CREATE TABLE opt_outs (
        tenant_id   TEXT NOT NULL,
        phone       TEXT NOT NULL,
        at          REAL NOT NULL,
        source      TEXT NOT NULL,
        PRIMARY KEY (tenant_id, phone)
    ) WITHOUT ROWID;
    CREATE TABLE campaigns (
        campaign_id TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        name        TEXT NOT NULL,
        body        TEXT NOT NULL,
        state       TEXT NOT NULL,
        cursor      TEXT,
        targeted    INTEGER NOT NULL DEFAULT 0,
        fanned_out  INTEGER NOT NULL DEFAULT 0,
        start_at    REAL NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX campaigns_tenant ON campaigns (tenant_id, campaign_id);
    ALTER TABLE messages ADD COLUMN timezone TEXT;
    ALTER TABLE messages ADD COLUMN policy TEXT;
    CREATE UNIQUE INDEX messages_campaign_to ON messages (campaign_id, to_number)
        WHERE campaign_id IS NOT NULL;
    CREATE INDEX messages_recipient ON messages (tenant_id, to_number, created_at);
    """,
    # 5: webhooks out: one endpoint per tenant, a durable outbox fed from the event log
    """
    CREATE TABLE webhooks (
        tenant_id   TEXT PRIMARY KEY,
        url         TEXT NOT NULL,
        events      TEXT NOT NULL,
        secret      TEXT NOT NULL,
        enabled     INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        delivery_id TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        event_type  TEXT NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     REAL NOT NULL,
        last_status INTEGER,
        last_error  TEXT,
        created_at  REAL NOT NULL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
    CREATE TABLE event_cursors (
        name        TEXT PRIMARY KEY,
        seq         INTEGER NOT NULL
    );
    """,
    # 6: recipients in a rowid table: a million-row import in random number order appends
    #    fat rows and scatters only small index entries (far fewer dirty pages per commit)
    """
    CREATE TABLE recipients_new (
        tenant_id   TEXT NOT NULL,
        phone       TEXT NOT NULL,
        tags        TEXT NOT NULL DEFAULT '[]',
        attrs       TEXT NOT NULL DEFAULT '{}',
        timezone    TEXT NOT NULL DEFAULT 'Asia/Shanghai',
        updated_at  REAL NOT NULL
    );
    INSERT INTO recipients_new SELECT tenant_id, phone, tags, attrs, timezone, updated_at
        FROM recipients;
    DROP TABLE recipients;
    ALTER TABLE recipients_new RENAME TO recipients;
    CREATE UNIQUE INDEX recipients_phone ON recipients (tenant_id, phone);
    """,
    # 7: which reports a message's current hand-over has had, as bits on the message
    #    (delivered 1, failed 2, displayed 4) instead of a row per report in report_seen,
    #    whose random references cost ~14 µs an insert and grew without end; report_seen
    #    keeps the replies' references
    """
    ALTER TABLE messages ADD COLUMN reports INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET reports = (
        SELECT coalesce(sum(CASE r.status WHEN 'delivered' THEN 1 WHEN 'failed' THEN 2
                                          WHEN 'displayed' THEN 4 ELSE 0 END), 0)
        FROM report_seen r
        WHERE r.provider = messages.provider AND r.provider_ref = messages.provider_ref)
    WHERE provider_ref IS NOT NULL;
    DELETE FROM report_seen WHERE status IN ('delivered', 'failed', 'displayed');
    """,
    # 8: console sessions signed out before they expire, kept across restarts (the SHA-256
    #    of the cookie, never the cookie), each until it would have expired anyway
    """
    CREATE TABLE console_signouts (
        session_hash TEXT PRIMARY KEY,
        until        REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 9: tracked links in a rowid table: a link's row is appended, and only the small entry
    #    of the token's index goes to its random place. Keyed by the token, each ~150-byte
    #    row went to a random page of a table that grows with every message (measured in
    #    SQLite alone, 1,000 links a commit: 26 -> 10 us a link beside 100,000 others,
    #    41 -> 27 beside 1,000,000). The move rewrites the table once, at the first start
    #    after an upgrade: about 7 s a million links here.
    """
    CREATE TABLE links_new (
        token       TEXT NOT NULL,
        tenant_id   TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        button      TEXT NOT NULL,
        label       TEXT NOT NULL,
        url         TEXT NOT NULL
    );
    INSERT INTO links_new SELECT token, tenant_id, message_id, button, label, url
        FROM links ORDER BY message_id;
    DROP TABLE links;
    ALTER TABLE links_new RENAME TO links;
    CREATE UNIQUE INDEX links_token ON links (token);
    CREATE INDEX links_message ON links (message_id);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Applies every migration newer than the database's; answers the resulting version."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    for version, script in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
