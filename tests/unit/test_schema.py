"""Migrations: a database made by an earlier version is carried forward with its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.storage.schema import MIGRATIONS, migrate

LINKS_IN_A_ROWID_TABLE = 9


def _at_version(path: Path, version: int) -> sqlite3.Connection:
    """A database as the migrations up to ``version`` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:version]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_links_move_to_a_rowid_table_with_their_rows_and_a_unique_token(
    tmp_path: Path,
) -> None:
    conn = _at_version(tmp_path / "old.db", LINKS_IN_A_ROWID_TABLE - 1)
    rows = [
        ("tok_b_00001", "bank_a", "01M2", "buttons.0", "查看详情", "https://bank.example/b"),
        ("tok_a_00001", "bank_a", "01M1", "sms", "", "https://bank.example/a"),
    ]
    conn.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?, ?)", rows)

    assert migrate(conn) == len(MIGRATIONS)

    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'links'").fetchone()
    assert "WITHOUT ROWID" not in sql
    indexes = {r[1]: r[2] for r in conn.execute("PRAGMA index_list(links)")}
    assert indexes == {"links_token": 1, "links_message": 0}  # name: unique
    for row in rows:
        found = conn.execute(
            "SELECT token, tenant_id, message_id, button, label, url FROM links WHERE token = ?",
            (row[0],),
        ).fetchone()
        assert found == row
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO links VALUES (?, ?, ?, ?, ?, ?)", rows[0])
    plan = " ".join(
        str(r[-1])
        for r in conn.execute("EXPLAIN QUERY PLAN SELECT url FROM links WHERE token = 'x'")
    )
    assert "links_token" in plan
    assert migrate(conn) == len(MIGRATIONS)  # applied once: a second start changes nothing
    assert conn.execute("SELECT count(*) FROM links").fetchone() == (2,)
