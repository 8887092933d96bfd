"""The single SQLite writer, with group commit.

Every write is a small synchronous job ``fn(conn)``. Jobs queue up while a
commit is in flight; when the writer is free it runs all queued jobs in one
transaction (each in its own savepoint, so one failing job fails alone) and
commits once. Commit and checkpoint, the only calls that wait on the disk,
run on a dedicated thread; the jobs themselves run on the event loop, because
each statement handed to another thread costs a GIL hand-off, which under load
is a wait of up to the interpreter's switch interval (5 ms) per statement.

A job of a few long statements (a bulk import's write of tens of thousands of rows)
may ask to run on that thread too (``off_loop=True``): SQLite runs each statement
without the GIL, so the loop goes on meanwhile. Each statement's end waits for the
GIL again, up to the interpreter's switch interval (5 ms) while the loop is busy, so
such a job must be a few statements over many rows, never a statement a row.

Auto-checkpoints are off: a passive checkpoint runs on this same connection
between commits about once a second, so there is never a second writer (SQLite
3.40 has the WAL-reset bug that two concurrent writers can trigger).

A passive checkpoint copies the log back but never waits for a reader, and the log
starts again from its beginning only if no reader is in it at the next write; with a
campaign's reads always under way that hardly ever happened, and a million-recipient
campaign's log grew to 2 GB. So once the log holds more than ``WAL_TRUNCATE_FRAMES``,
the checkpoint also waits up to ``WAL_TRUNCATE_WAIT_MS`` for the readers in it to
finish, and empties it; if they take longer, the next checkpoint (after a commit, a
second or more later) tries again. While it waits, commits wait too: up to 50 ms, once
a second, while the log is over the bound and readers are in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.logging import get_logger

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

log = get_logger("gateway.storage")


def connect(path: Path | str, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


# The writer's page cache, in KiB: 2 MiB in general. A bulk import gets 16 MiB, so that the
# recipients' index of a million-row import stays in memory. Campaigns to 200,000 ran no
# faster with more: 16 MiB throughout peaked 14 MB higher than 4 MiB (two alternating runs
# each), and 4 MiB 4-5 MB higher than 2 MiB (four alternating pairs, 2,997 / 2,977 msg/s).
CACHE_KIB = 2048
BULK_CACHE_KIB = 16384
BUSY_TIMEOUT_MS = 5000
WAL_TRUNCATE_FRAMES = 16384  # 64 MiB of 4 KiB pages
WAL_TRUNCATE_WAIT_MS = 50


# A queued job: the job, its answer, whether in a savepoint, whether off the loop.
_Entry = tuple[Job, "asyncio.Future[Any]", bool, bool]


def _in_savepoint(conn: sqlite3.Connection, job: Job) -> Any:
    conn.execute("SAVEPOINT job")
    try:
        result = job(conn)
    except BaseException:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        raise
    conn.execute("RELEASE job")
    return result


def _cache_size(kib: int) -> Job:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA cache_size=-{kib}")

    return job


class SqliteWriter:
    def __init__(
        self, path: Path | str, *, checkpoint_interval_s: float = 1.0, synchronous: str = "FULL"
    ) -> None:
        self._conn = connect(path, synchronous)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._bulk = 0  # bulk scopes open (see ``bulk``)
        self._pending: list[_Entry] = []
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._task: asyncio.Task[None] | None = None
        self._checkpoint_interval_s = checkpoint_interval_s
        self._last_checkpoint = time.monotonic()
        self._closed = False
        self.commits = 0
        self.jobs = 0
        self.truncations = 0  # times the log was emptied (see the module's docstring)

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="sqlite-writer")

    async def run(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        savepoint: bool = True,
        off_loop: bool = False,
    ) -> T:
        """Runs ``job`` in the next group commit; answers its result once durable.

        A job runs in a savepoint of its own, so that if it raises, its writes
        are undone and the rest of the batch commits; ``savepoint=False`` saves
        that cost for jobs that cannot fail halfway. ``off_loop=True`` runs the job
        on the writer's thread: for a few long statements only (see the module's
        docstring).
        """
        if self._closed:
            raise RuntimeError("writer is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((job, fut, savepoint, off_loop))
        self._wake.set()
        return await fut

    @contextlib.asynccontextmanager
    async def bulk(self) -> AsyncIterator[None]:
        """A scope of bulk writes (an import): the page cache is ``BULK_CACHE_KIB`` while
        any such scope is open, and back to ``CACHE_KIB`` (its pages freed) after the last."""
        self._bulk += 1
        try:
            if self._bulk == 1:
                await self.run(_cache_size(BULK_CACHE_KIB), savepoint=False)
            yield
        finally:
            self._bulk -= 1
            if self._bulk == 0 and not self._closed:  # even if the import was cancelled
                await asyncio.shield(self.run(_cache_size(CACHE_KIB), savepoint=False))

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch, self._pending = self._pending, []
            await self._commit_batch(loop, batch)
            if time.monotonic() - self._last_checkpoint >= self._checkpoint_interval_s:
                self._last_checkpoint = time.monotonic()
                await loop.run_in_executor(self._thread, self._checkpoint)

    async def _commit_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Entry]) -> None:
        conn = self._conn
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for _, fut, _, _ in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for job, fut, savepoint, off_loop in batch:
            if fut.cancelled():
                continue
            try:
                if off_loop:  # its statements run without the GIL while the loop goes on
                    if savepoint:
                        result = await loop.run_in_executor(self._thread, _in_savepoint, conn, job)
                    else:
                        result = await loop.run_in_executor(self._thread, job, conn)
                elif savepoint:
                    result = _in_savepoint(conn, job)
                else:
                    result = job(conn)
            except Exception as exc:
                results.append((fut, None, exc))
            else:
                results.append((fut, result, None))
        try:
            await loop.run_in_executor(self._thread, conn.execute, "COMMIT")
        except sqlite3.Error as exc:
            log.error("commit_failed", error=str(exc), jobs=len(batch))
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for fut, _, _ in results:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.commits += 1
        self.jobs += len(results)
        for fut, result, error in results:
            if fut.done():
                continue
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

    def _checkpoint(self) -> None:
        conn = self._conn
        try:
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > WAL_TRUNCATE_FRAMES:
                conn.execute(f"PRAGMA busy_timeout={WAL_TRUNCATE_WAIT_MS}")
                try:
                    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                if not busy:
                    self.truncations += 1
        except sqlite3.Error as exc:  # pragma: no cover - logged, retried next second
            log.warning("checkpoint_failed", error=str(exc))

    async def close(self) -> None:
        """Commits what is queued, checkpoints, and closes."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._checkpoint)
        self._conn.close()
        self._thread.shutdown(wait=True)
