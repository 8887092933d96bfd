"""Delivery reports on their way back to the gateway: scheduled, batched, signed, retried."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

import aiohttp
import structlog

from providers.mock.state import utc_now
from providers.signing import sign

log = structlog.get_logger(__name__)

BATCH_SIZE = 100
FLUSH_INTERVAL_S = 0.05
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
MAX_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Report:
    """One delivery report, decided when the message was accepted."""

    client_ref: str
    msg_id: str
    status: str  # "DELIVRD" or "UNDELIV"
    error_code: str | None = None


Destination = tuple[str, str]  # (provider, callback_url)


class ReportOutbox:
    """Holds reports until due, then POSTs them in batches of up to 100 per callback URL.

    A background task flushes every 50 ms, or at once when 100 are pending for
    one URL. A failed batch is retried with backoff (0.2 s doubling to 5 s, 20
    attempts) in its own task, so one unreachable gateway holds up no other.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        secret_for: Callable[[str], bytes],
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        first_backoff_s: float = FIRST_BACKOFF_S,
    ) -> None:
        self._session = session
        self._secret_for = secret_for
        self._flush_interval_s = flush_interval_s
        self._first_backoff_s = first_backoff_s
        self._pending: dict[Destination, list[dict[str, Any]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._ids = count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._run(), name="mock-dlr-flusher")

    async def close(self) -> None:
        """Cancel timers, the flusher and every delivery in flight; pending reports are lost."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = [*self._tasks, *([self._flusher] if self._flusher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._flusher = None

    def schedule(self, delay_s: float, provider: str, callback_url: str, report: Report) -> None:
        """Queue ``report`` for ``callback_url`` after ``delay_s`` seconds."""
        key = next(self._ids)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(
            delay_s, self._due, key, (provider, callback_url), report
        )

    def _due(self, key: int, dest: Destination, report: Report) -> None:
        self._timers.pop(key, None)
        pending = self._pending.setdefault(dest, [])
        pending.append(
            {
                "client_ref": report.client_ref,
                "msg_id": report.msg_id,
                "status": report.status,
                "error_code": report.error_code,
                "done_at": utc_now(),
            }
        )
        if len(pending) >= BATCH_SIZE:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval_s)
            self._wake.clear()
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for dest, reports in pending.items():
            for i in range(0, len(reports), BATCH_SIZE):
                task = asyncio.create_task(self._deliver(dest, reports[i : i + BATCH_SIZE]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, dest: Destination, reports: list[dict[str, Any]]) -> None:
        provider, url = dest
        body = json.dumps({"reports": reports}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Signature": sign(self._secret_for(provider), body),
        }
        backoff = self._first_backoff_s
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self._session.post(url, data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        return
                    problem = f"http {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt == MAX_ATTEMPTS:
                break
            log.debug("dlr_retry", provider=provider, attempt=attempt, problem=problem)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        log.warning(
            "dlr_dropped", provider=provider, url=url, reports=len(reports), problem=problem
        )
