"""The single SQLite writer, with group commit, run on the event loop.

Every write is a small synchronous job ``job(conn, *args)``: a module-level function
and arguments that pickle, so that the same jobs can also run in a process of their
own (``gateway.storage.writer_process``, the production default). Jobs queue up while
a commit is in flight; when the writer is free it runs all queued jobs in one
transaction (each in its own savepoint, so one failing job fails alone) and commits
once. Here, commit and checkpoint, the only calls that wait on the disk, run on a
dedicated thread; the jobs themselves run on the event loop, because each statement
handed to another thread costs a GIL hand-off, which under load is a wait of up to the
interpreter's switch interval (5 ms) per statement.

Auto-checkpoints are off: a passive checkpoint runs on this same connection
between commits about once a second, so there is never a second writer (SQLite
3.40 has the WAL-reset bug that two concurrent writers can trigger).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.logging import get_logger

T = TypeVar("T")
Job = Callable[..., Any]  # job(conn, *args): module-level, so that it pickles
Request = tuple[Job, tuple[Any, ...], bool]  # (job, args, in a savepoint of its own)

log = get_logger("gateway.storage")


def connect(path: Path | str, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def open_writer_connection(path: Path | str, synchronous: str) -> sqlite3.Connection:
    conn = connect(path, synchronous)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    # 16 MiB of page cache: the recipients' index of a million-row import stays in memory
    conn.execute("PRAGMA cache_size=-16384")
    return conn


def run_jobs(
    conn: sqlite3.Connection, batch: list[Request]
) -> list[tuple[Any, BaseException | None]]:
    """Runs a batch's jobs in the open transaction; answers each one's (result, error).

    A job in a savepoint that raises has its writes undone and fails alone; one without
    (``savepoint=False``, for jobs that cannot fail halfway) saves the savepoint's cost.
    """
    results: list[tuple[Any, BaseException | None]] = []
    for job, args, savepoint in batch:
        if not savepoint:
            try:
                results.append((job(conn, *args), None))
            except Exception as exc:
                results.append((None, exc))
            continue
        conn.execute("SAVEPOINT job")
        try:
            result = job(conn, *args)
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            results.append((None, exc))
        else:
            conn.execute("RELEASE job")
            results.append((result, None))
    return results


def checkpoint(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error as exc:  # pragma: no cover - logged, retried next second
        log.warning("checkpoint_failed", error=str(exc))


class SqliteWriter:
    def __init__(
        self, path: Path | str, *, checkpoint_interval_s: float = 1.0, synchronous: str = "FULL"
    ) -> None:
        self._conn = open_writer_connection(path, synchronous)
        self._pending: list[tuple[Request, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._task: asyncio.Task[None] | None = None
        self._checkpoint_interval_s = checkpoint_interval_s
        self._last_checkpoint = time.monotonic()
        self._closed = False
        self.commits = 0
        self.jobs = 0

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="sqlite-writer")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self, job: Callable[..., T], *args: Any, savepoint: bool = True) -> T:
        """Runs ``job(conn, *args)`` in the next group commit; answers its result once durable.

        A job runs in a savepoint of its own, so that if it raises, its writes
        are undone and the rest of the batch commits; ``savepoint=False`` saves
        that cost for jobs that cannot fail halfway.
        """
        if self._closed:
            raise RuntimeError("writer is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(((job, args, savepoint), fut))
        self._wake.set()
        return await fut

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

    async def _commit_batch(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Request, asyncio.Future[Any]]],
    ) -> None:
        conn = self._conn
        live = [(request, fut) for request, fut in batch if not fut.cancelled()]
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        results = run_jobs(conn, [request for request, _ in live])
        try:
            await loop.run_in_executor(self._thread, conn.execute, "COMMIT")
        except sqlite3.Error as exc:
            log.error("commit_failed", error=str(exc), jobs=len(batch))
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.commits += 1
        self.jobs += len(results)
        for (_, fut), (result, error) in zip(live, results, strict=True):
            if fut.done():
                continue
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

    def _checkpoint(self) -> None:
        checkpoint(self._conn)

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
