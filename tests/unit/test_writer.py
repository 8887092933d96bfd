"""The single SQLite writer: group commit, savepoints, and jobs run off the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.storage import writer as writer_module
from gateway.storage.writer import BULK_CACHE_KIB, CACHE_KIB, SqliteWriter


@pytest.fixture(name="writer")
async def _writer(tmp_path: Path) -> AsyncIterator[SqliteWriter]:
    w = SqliteWriter(tmp_path / "w.db")
    w.connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    w.start()
    yield w
    await w.close()


def _rows(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]
    finally:
        conn.close()


async def test_an_off_loop_job_runs_on_the_writers_thread_and_commits_with_its_group(
    writer: SqliteWriter, tmp_path: Path
) -> None:
    """A long statement runs on the writer's thread, not the loop's, while the loop goes on
    (a job queued meanwhile waits for the next commit); its rows are durable once answered."""
    loop_thread = threading.get_ident()
    started, release = threading.Event(), threading.Event()

    def long_statement(conn: sqlite3.Connection) -> int:
        started.set()
        assert release.wait(5)
        conn.execute("INSERT INTO t (n) SELECT value FROM json_each('[1, 2, 3]')")
        return threading.get_ident()

    heavy = asyncio.create_task(writer.run(long_statement, off_loop=True))
    assert await asyncio.to_thread(started.wait, 5)  # the loop is free while the job runs
    light = asyncio.create_task(writer.run(lambda c: c.execute("INSERT INTO t VALUES (4)")))
    await asyncio.sleep(0.01)
    assert not light.done()  # queued behind the group in flight
    release.set()
    assert await heavy != loop_thread
    await light
    assert _rows(tmp_path / "w.db") == [1, 2, 3, 4]


async def test_an_off_loop_job_that_fails_fails_alone(writer: SqliteWriter, tmp_path: Path) -> None:
    """A job that fails off the loop is undone whole, the statements before the failing one
    too; the other jobs of its group commit."""

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (n) VALUES (10)")  # undone by the job's savepoint
        conn.execute("INSERT INTO t (n) SELECT value FROM json_each('[11, 12, 11]')")

    first = writer.run(lambda c: c.execute("INSERT INTO t VALUES (1)"))
    bad = writer.run(failing, off_loop=True)
    last = writer.run(lambda c: c.execute("INSERT INTO t VALUES (2)"))
    results = await asyncio.gather(first, bad, last, return_exceptions=True)
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert _rows(tmp_path / "w.db") == [1, 2]


def _cache_kib(conn: sqlite3.Connection) -> int:
    return -int(conn.execute("PRAGMA cache_size").fetchone()[0])


async def test_the_page_cache_is_larger_only_while_a_bulk_scope_is_open(
    writer: SqliteWriter,
) -> None:
    """An import's scope raises the page cache; nested scopes (two imports at once) keep it
    raised until the last one ends, and even a scope that fails brings it back down."""

    async def cache() -> int:
        return await writer.run(_cache_kib, savepoint=False)

    assert await cache() == CACHE_KIB
    async with writer.bulk():
        assert await cache() == BULK_CACHE_KIB
        async with writer.bulk():
            assert await cache() == BULK_CACHE_KIB
        assert await cache() == BULK_CACHE_KIB
    assert await cache() == CACHE_KIB
    with pytest.raises(RuntimeError):
        async with writer.bulk():
            raise RuntimeError("the import broke off")
    assert await cache() == CACHE_KIB


async def _fill(writer: SqliteWriter, rows: int) -> None:
    """``rows`` rows of 3 KB, a commit each (so a checkpoint after each, at interval 0)."""
    for _ in range(rows):
        await writer.run(
            lambda c: c.execute("INSERT INTO t (n, b) VALUES (NULL, randomblob(3000))")
        )


@pytest.fixture(name="wal_writer")
async def _wal_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SqliteWriter]:
    monkeypatch.setattr(writer_module, "WAL_TRUNCATE_FRAMES", 60)
    monkeypatch.setattr(writer_module, "WAL_TRUNCATE_WAIT_MS", 10)
    w = SqliteWriter(tmp_path / "w.db", checkpoint_interval_s=0)
    w.connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, b BLOB)")
    w.start()
    yield w
    await w.close()


def _wal_bytes(tmp_path: Path) -> int:
    return (tmp_path / "w.db-wal").stat().st_size


async def test_a_log_past_its_bound_is_emptied_once_no_reader_is_in_it(
    wal_writer: SqliteWriter, tmp_path: Path
) -> None:
    """A reader holding its snapshot keeps the log (the checkpoint waits a moment for it,
    then writes go on); once it is done, the next checkpoint empties the log."""
    await _fill(wal_writer, 5)
    assert wal_writer.truncations == 0 and _wal_bytes(tmp_path) > 0  # under the bound: kept
    reader = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (5,)
        started = time.monotonic()
        await _fill(wal_writer, 40)  # past 60 frames, each checkpoint tries, and waits
        assert wal_writer.truncations == 0 and _wal_bytes(tmp_path) > 60 * 4096
        assert time.monotonic() - started < 5  # each try waits 10 ms, not the usual 5 s
        assert wal_writer.connection.execute("PRAGMA busy_timeout").fetchone() == (5000,)
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (5,)  # its snapshot
        reader.execute("COMMIT")
    finally:
        reader.close()
    await _fill(wal_writer, 1)  # the checkpoint runs between commits, on the writer's thread
    for _ in range(100):
        if wal_writer.truncations:
            break
        await asyncio.sleep(0.02)
    assert wal_writer.truncations == 1
    await _fill(wal_writer, 5)  # and writing goes on, from the start of the emptied log
    assert wal_writer.truncations == 1 and 0 < _wal_bytes(tmp_path) < 30 * 4096
    assert len(_rows(tmp_path / "w.db")) == 51
