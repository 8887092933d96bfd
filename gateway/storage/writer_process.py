"""The single SQLite writer in a process of its own: the production default.

Why a process: every write the gateway makes (an accepted message, a claim of the queue,
a batch of acknowledgements or reports, a batch of an import or a campaign) runs as a
job on the one writer connection. On the event loop those jobs take a third to a half of
the loop's time under load, and a thread cannot take them (each statement on another
thread is a GIL hand-off, a wait of up to 5 ms under load). In a child process they run
on the other core, beside the loop, and SQLite keeps its one writer.

The jobs are the same as for the in-loop writer (``gateway.storage.writer``): a
module-level function and its arguments, pickled. Requests go down a Unix socket pair as
length-prefixed frames, coalesced per loop iteration; the child reads all that has
arrived, runs it as one group commit (each job in its own savepoint) and answers each
job only once the commit is durable. Results and errors come back the same way.

The child stops only when its socket closes (it ignores SIGINT and SIGTERM, so a Ctrl-C
to the process group does not stop it before the gateway has drained): the gateway
closes it last, on shutdown, and if the gateway dies the child sees the socket close,
checkpoints and exits. If the child dies, every job in flight fails and every later one
is refused at once, /readyz answers 503, and the gateway's supervisor restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import pickle
import signal
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import Unavailable
from gateway.logging import configure_logging, get_logger
from gateway.storage.writer import Request, checkpoint, open_writer_connection, run_jobs

T = TypeVar("T")
log = get_logger("gateway.storage")

FRAME = struct.Struct("!I")
READY = -1  # the child's first frame: the connection is open
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


class WriterGone(Unavailable):
    """The writer process is not running: nothing can be written (a 503 to a client)."""


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


def take_frames(buf: bytearray) -> list[bytes]:
    """Cuts the complete frames off the front of ``buf`` (a partial one stays)."""
    out: list[bytes] = []
    pos, size = 0, len(buf)
    while size - pos >= FRAME.size:
        (length,) = FRAME.unpack_from(buf, pos)
        end = pos + FRAME.size + length
        if end > size:
            break
        out.append(bytes(buf[pos + FRAME.size : end]))
        pos = end
    del buf[:pos]
    return out


# the gateway's side ------------------------------------------------------------------------
class ProcessWriter:
    """Same interface as ``SqliteWriter``: ``run(job, *args)`` answers once durable."""

    def __init__(
        self, path: Path | str, *, checkpoint_interval_s: float = 1.0, synchronous: str = "FULL"
    ) -> None:
        self._path = Path(path)
        self._checkpoint_interval_s = checkpoint_interval_s
        self._synchronous = synchronous
        self._proc: asyncio.subprocess.Process | None = None
        self._transport: asyncio.Transport | None = None
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._ready: asyncio.Future[None] | None = None
        self._gone: str | None = "not started"
        self._closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.storage.writer_process",
                "--fd",
                str(theirs.fileno()),
                "--checkpoint-interval",
                str(self._checkpoint_interval_s),
                "--synchronous",
                self._synchronous,
                str(self._path),
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._ready = loop.create_future()
        self._gone = None
        transport, _ = await loop.create_unix_connection(lambda: _Replies(self), sock=ours)
        self._transport = transport  # type: ignore[assignment]
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except BaseException:
            await self._stop_process()
            raise
        log.info("writer_process_started", pid=self._proc.pid)

    @property
    def alive(self) -> bool:
        return self._gone is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def run(self, job: Callable[..., T], *args: Any, savepoint: bool = True) -> T:
        """Runs ``job(conn, *args)`` in the child's next group commit; answers its result
        once durable (see ``SqliteWriter.run``)."""
        if self._gone is not None or self._closing:
            raise WriterGone(f"the database writer is not running ({self._gone or 'closing'})")
        request_id = next(self._ids)
        data = frame((request_id, job, args, savepoint))  # fails here if it does not pickle
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._futures[request_id] = fut
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(out)

    # replies ---------------------------------------------------------------------------------
    def _answered(self, data: bytes) -> None:
        try:
            request_id, ok, value = pickle.loads(data)
        except Exception as exc:  # a result that does not unpickle here: a bug, said loudly
            log.error("writer_reply_unreadable", error=repr(exc))
            return
        if request_id == READY:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        fut = self._futures.pop(request_id, None)
        if fut is None or fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        reason = "closed" if self._closing else f"exited: {exc or 'its socket closed'}"
        self._gone = reason
        if not self._closing:
            log.error("writer_process_lost", reason=reason, pending=len(self._futures))
        error = WriterGone(f"the database writer {reason}")
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(error)
        self._futures.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)

    # shutdown --------------------------------------------------------------------------------
    async def close(self) -> None:
        """Waits for the jobs in flight, then closes the socket: the child commits what it
        holds, checkpoints and exits."""
        self._closing = True
        pending = [f for f in self._futures.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
        await self._stop_process()

    async def _stop_process(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._proc is None:
            return
        try:
            code = await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("writer_process_killed", pid=self._proc.pid)
            self._proc.kill()
            code = await self._proc.wait()
        if code != 0:
            log.error("writer_process_exit", code=code)
        self._gone = self._gone or "closed"


class _Replies(asyncio.Protocol):
    def __init__(self, writer: ProcessWriter) -> None:
        self._writer = writer
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        for one in take_frames(self._buf):
            self._writer._answered(one)

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer._lost(exc)


# the child's side --------------------------------------------------------------------------
def _reply(request_id: int, ok: bool, value: Any) -> bytes:
    try:
        return frame((request_id, ok, value))
    except Exception as exc:  # a result or an error that does not pickle: said, not lost
        error = RuntimeError(f"{type(value).__name__}: {value} (unpicklable: {exc})")
        return frame((request_id, False, error))


def _commit(
    conn: sqlite3.Connection, requests: list[tuple[int, Request]]
) -> list[tuple[int, bool, Any]]:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return [(rid, False, exc) for rid, _ in requests]
    results = run_jobs(conn, [request for _, request in requests])
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        log.error("commit_failed", error=str(exc), jobs=len(requests))
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        return [(rid, False, exc) for rid, _ in requests]
    return [
        (rid, error is None, result if error is None else error)
        for (rid, _), (result, error) in zip(requests, results, strict=True)
    ]


def serve(sock: socket.socket, path: Path, checkpoint_interval_s: float, synchronous: str) -> None:
    """Group commits until the socket closes; then a last checkpoint."""
    conn = open_writer_connection(path, synchronous)
    sock.sendall(frame((READY, True, None)))
    buf = bytearray()
    last_checkpoint = time.monotonic()
    dirty = False
    open_ = True
    while open_:
        sock.settimeout(checkpoint_interval_s if dirty else None)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            chunk = None
        if chunk == b"":
            open_ = False
        elif chunk:
            buf += chunk
            sock.setblocking(False)
            try:  # everything that has arrived goes into this one commit
                while more := sock.recv(1 << 20):
                    buf += more
                else:
                    open_ = False
            except BlockingIOError:
                pass
        requests: list[tuple[int, Request]] = []
        replies: list[bytes] = []
        for data in take_frames(buf):
            try:
                request_id, job, args, savepoint = pickle.loads(data)
            except Exception as exc:  # pragma: no cover - both sides run the same code
                log.error("writer_request_unreadable", error=repr(exc))
                continue
            requests.append((request_id, (job, args, savepoint)))
        if requests:
            replies = [_reply(*r) for r in _commit(conn, requests)]
            dirty = True
        if replies:
            sock.setblocking(True)
            try:
                sock.sendall(b"".join(replies))
            except OSError:  # the gateway is gone: what was committed stays committed
                open_ = False
        if dirty and (not open_ or time.monotonic() - last_checkpoint >= checkpoint_interval_s):
            checkpoint(conn)
            last_checkpoint = time.monotonic()
            dirty = False
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway.storage.writer_process")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--checkpoint-interval", type=float, default=1.0)
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    # Only the socket's closing stops this process: the gateway closes it after draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(os.environ.get("GATEWAY_LOG_LEVEL", "info").lower())
    sock = socket.socket(fileno=args.fd)
    try:
        serve(sock, args.path, args.checkpoint_interval, args.synchronous)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
