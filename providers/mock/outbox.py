"""Callbacks on their way back to the gateway: scheduled, batched, signed, retried.

Delivery reports, delivery events and review verdicts all go this way; each
batch holds one kind (``Event.envelope``) for one callback URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from itertools import count
from typing import Any

import aiohttp
import structlog

from providers.mock.events import Event
from providers.signing import sign

log = structlog.get_logger(__name__)

BATCH_SIZE = 100
FLUSH_INTERVAL_S = 0.05
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
MAX_ATTEMPTS = 20


Destination = tuple[str, str, str]  # (provider, callback_url, envelope)
FollowUp = tuple[float, Event]  # (delay in seconds after the first is due, event)


class ReportOutbox:
    """Holds events until due, then POSTs them in batches of up to 100 per callback URL and kind.

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
        self._refs: dict[int, tuple[str, str]] = {}  # timer → (provider, client_ref)
        self._ids = count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._run(), name="mock-callback-flusher")

    async def close(self) -> None:
        """Cancel timers, the flusher and every delivery in flight; pending events are lost."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
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
        key = next(self._ids)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(
            delay_s, self._due, key, provider, callback_url, event, then
        )
        if ref is not None:
            self._refs[key] = (provider, ref)

    def recall(self, provider: str, ref: str) -> bool:
        """Cancels the reports not yet due for ``ref``: the phone never got the message."""
        keys = [k for k, v in self._refs.items() if v == (provider, ref)]
        for key in keys:
            self._refs.pop(key, None)
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
        return bool(keys)

    def _due(
        self, key: int, provider: str, callback_url: str, event: Event, then: FollowUp | None
    ) -> None:
        self._timers.pop(key, None)
        self._refs.pop(key, None)
        pending = self._pending.setdefault((provider, callback_url, event.envelope), [])
        pending.append(event.render())
        if len(pending) >= BATCH_SIZE:
            self._wake.set()
        if then is not None:
            self.schedule(then[0], provider, callback_url, then[1])

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval_s)
            self._wake.clear()
            self._flush()

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
