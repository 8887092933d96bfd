"""Callbacks on their way back to the gateway: scheduled, batched, signed, retried.

Delivery reports, delivery events and review verdicts all go this way; each
batch holds one kind (``Event.envelope``) for one callback URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import Any, NamedTuple

import aiohttp
import structlog

from providers.mock.events import Event
from providers.signing import sign

log = structlog.get_logger(__name__)

BATCH_SIZE = 100
FLUSH_INTERVAL_S = 0.05
TAKE_INTERVAL_S = 0.01
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
MAX_ATTEMPTS = 20


Destination = tuple[str, str, str]  # (provider, callback_url, envelope)
FollowUp = tuple[float, Event]  # (delay in seconds after the first is due, event)


class _Due(NamedTuple):
    at: float  # the loop's clock
    key: int
    provider: str
    callback_url: str
    event: Event
    then: FollowUp | None
    ref: str | None


class ReportOutbox:
    """Holds events until due, then POSTs them in batches of up to 100 per callback URL and kind.

    Events wait in one first-in-first-out queue per delay: every event of a queue was
    scheduled with the same delay on a monotonic clock, so the queue is in due order
    and taking what is due costs nothing for what is not (a timer per event cost
    more than the rest of taking a message). A background task takes what is due
    every 10 ms and flushes every 50 ms, or at once when 100 are pending for one
    URL. A failed batch is retried with backoff (0.2 s doubling to 5 s, 20
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
        self._queues: dict[float, deque[_Due]] = {}
        self._recalled: set[int] = set()
        self._ids = count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._run(), name="mock-callback-flusher")

    async def close(self) -> None:
        """Drop what is not due, cancel the flusher and every delivery in flight."""
        self._queues.clear()
        self._recalled.clear()
        tasks = [*self._tasks, *([self._flusher] if self._flusher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._flusher = None

    def schedule(
        self,
        delay_s: float,
        provider: str,
        callback_url: str,
        event: Event,
        *,
        then: FollowUp | None = None,
        ref: str | None = None,
    ) -> None:
        """Queue ``event`` for ``callback_url`` after ``delay_s`` seconds.

        ``then`` is queued once ``event`` is due, after its own delay, so it is
        never sent before ``event`` is (e.g. DISPLAYED after DELIVERED).
        """
        delay_s = max(0.0, delay_s)
        queue = self._queues.get(delay_s)
        if queue is None:
            queue = self._queues[delay_s] = deque()
        at = asyncio.get_running_loop().time() + delay_s
        queue.append(_Due(at, next(self._ids), provider, callback_url, event, then, ref))
        if delay_s == 0:
            self._wake.set()

    def recall(self, provider: str, ref: str) -> bool:
        """Cancels the reports not yet due for ``ref``: the phone never got the message."""
        found = False
        for queue in self._queues.values():
            for due in queue:
                if due.ref == ref and due.provider == provider and due.key not in self._recalled:
                    self._recalled.add(due.key)
                    found = True
        return found

    def _take_due(self) -> None:
        now = asyncio.get_running_loop().time()
        for queue in list(self._queues.values()):
            while queue and queue[0].at <= now:
                due = queue.popleft()
                if due.key in self._recalled:
                    self._recalled.discard(due.key)
                    continue
                dest = (due.provider, due.callback_url, due.event.envelope)
                pending = self._pending.setdefault(dest, [])
                pending.append(due.event.render())
                if due.then is not None:
                    delay_s, event = due.then
                    self.schedule(delay_s, due.provider, due.callback_url, event)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        flushed = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TAKE_INTERVAL_S)
            self._wake.clear()
            try:
                self._take_due()
                full = any(len(items) >= BATCH_SIZE for items in self._pending.values())
                if full or loop.time() - flushed >= self._flush_interval_s:
                    flushed = loop.time()
                    self._flush()
            except Exception:  # one bad event must not stop every later one
                log.exception("outbox_tick_failed")

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for dest, items in pending.items():
            for i in range(0, len(items), BATCH_SIZE):
                task = asyncio.create_task(self._deliver(dest, items[i : i + BATCH_SIZE]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, dest: Destination, items: list[dict[str, Any]]) -> None:
        provider, url, envelope = dest
        body = json.dumps({envelope: items}).encode()
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
            log.debug(
                "callback_retry", provider=provider, kind=envelope, attempt=attempt, problem=problem
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        log.warning(
            "callback_dropped",
            provider=provider,
            kind=envelope,
            url=url,
            items=len(items),
            problem=problem,
        )
