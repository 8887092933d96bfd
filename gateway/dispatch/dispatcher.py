"""The dispatcher: drains the durable queue into providers, at least once, never losing one.

A loop claims due messages in batches (a lease, so a crash hands them back),
routes each, groups them per provider into that provider's batch size and
submits the batches concurrently, bounded. Each outcome (submitted, retry
later, failed, expired, suppressed) is recorded in one write per batch. Only
this module decides to retry: providers just say what happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence

from gateway.clock import Clock
from gateway.dispatch.ports import Provider, Submission
from gateway.domain.messages import (
    Expired,
    Failed,
    Outcome,
    QueuedMessage,
    Retry,
    Submitted,
    Suppressed,
)
from gateway.domain.retry import backoff
from gateway.domain.routing import carrier_for
from gateway.errors import PermanentProviderError, RetryableProviderError
from gateway.logging import get_logger
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.storage.base import Store

log = get_logger("gateway.dispatch")


class Dispatcher:
    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        clock: Clock,
        settings: Settings,
        metrics: Metrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._clock = clock
        self._settings = settings
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._stopping = False
        self._slots = asyncio.Semaphore(settings.dispatch_concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.last_tick = time.monotonic()

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        released = await self._store.release_leases()
        if released:
            log.info("leases_released", count=released)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dispatcher")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Stops claiming, lets in-flight submissions finish (up to ``timeout_s``)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._inflight:
            done, pending = await asyncio.wait(self._inflight, timeout=timeout_s)
            for task in pending:
                task.cancel()
            log.info("dispatcher_drained", finished=len(done), abandoned=len(pending))

    # the loop ----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping:
            self.last_tick = time.monotonic()
            try:
                claimed = await self._claim()
            except Exception:
                log.exception("claim_failed")
                await asyncio.sleep(1.0)
                continue
            if claimed:
                for chunk_task in self._schedule(claimed):
                    self._inflight.add(chunk_task)
                    chunk_task.add_done_callback(self._inflight.discard)
                # Claim no further ahead than the providers can take before the leases run out.
                while len(self._inflight) >= 2 * self._settings.dispatch_concurrency:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            await self._idle()

    async def _idle(self) -> None:
        nxt = await self._store.next_due()
        delay = 1.0 if nxt is None else min(1.0, max(0.0, nxt - self._clock.now()))
        if delay > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
        self._wake.clear()

    async def _claim(self) -> list[QueuedMessage]:
        now = self._clock.now()
        claimed = await self._store.claim_due(
            now, self._settings.dispatch_batch, now + self._settings.dispatch_lease_s
        )
        self._metrics.queue_claimed.inc(len(claimed))
        return claimed

    async def run_once(self) -> int:
        """Claims what is due now and dispatches it completely; answers how many were claimed."""
        claimed = await self._claim()
        if claimed:
            await asyncio.gather(*self._schedule(claimed))
        return len(claimed)

    # routing and submission --------------------------------------------------------------
    def _schedule(self, claimed: Sequence[QueuedMessage]) -> list[asyncio.Task[None]]:
        now = self._clock.now()
        immediate: list[Outcome] = []
        per_provider: dict[str, list[QueuedMessage]] = defaultdict(list)
        for q in claimed:
            if q.expires_at <= now:
                immediate.append(Expired(q.id, now))
                continue
            provider = self._route(q)
            if provider is None:
                immediate.append(Suppressed(q.id, "no_route", now))
            else:
                per_provider[provider].append(q)
        loop = asyncio.get_running_loop()
        tasks = []
        if immediate:
            tasks.append(loop.create_task(self._record(immediate)))
        for name, messages in per_provider.items():
            size = self._providers[name].max_batch
            for start in range(0, len(messages), size):
                tasks.append(loop.create_task(self._submit(name, messages[start : start + size])))
        return tasks

    def _route(self, q: QueuedMessage) -> str | None:
        """The SMS route through the number's own carrier (rich routes come later)."""
        if "sms" not in q.route_pref:
            return None
        carrier = carrier_for(q.to)
        return carrier if carrier in self._providers else None

    async def _submit(self, name: str, batch: list[QueuedMessage]) -> None:
        provider = self._providers[name]
        callback = f"{self._settings.base_url}/callbacks/{name}/dlr"
        submissions = [Submission(q.id, q.to, "sms", q.rendered.text) for q in batch]
        attempt = max(q.attempts for q in batch) + 1
        async with self._slots:
            self._metrics.inflight.inc()
            started = time.perf_counter()
            try:
                results = await provider.submit(submissions, callback)
                error: Exception | None = None
            except (RetryableProviderError, PermanentProviderError) as exc:
                results, error = [], exc
            except Exception as exc:  # an adapter bug must not lose messages: retry them
                log.exception("provider_adapter_error", provider=name)
                results, error = [], RetryableProviderError("adapter_error", str(exc))
            finally:
                self._metrics.inflight.dec()
            elapsed = time.perf_counter() - started
        self._metrics.dispatch_seconds.labels(name).observe(elapsed)
        now = self._clock.now()
        outcomes: list[Outcome] = []
        if error is not None:
            outcome = "retry" if isinstance(error, RetryableProviderError) else "failed"
            outcomes = [self._failure(q, name, error, now) for q in batch]
        else:
            outcome = "ok"
            by_id = {r.message_id: r for r in results}
            for q in batch:
                r = by_id.get(q.id)
                if r is None:
                    outcomes.append(
                        self._failure(q, name, RetryableProviderError("no_answer"), now)
                    )
                elif r.error is not None:
                    outcomes.append(self._failure(q, name, r.error, now))
                else:
                    outcomes.append(
                        Submitted(q.id, name, "sms", r.provider_ref, now, q.attempts + 1)
                    )
        self._metrics.dispatch_attempts.labels(name, outcome).inc()
        log.info(
            "dispatch_attempt",
            provider=name,
            route="sms",
            size=len(batch),
            attempt=attempt,
            outcome=outcome,
            error=str(error) if error else None,
            latency_ms=round(elapsed * 1000, 2),
        )
        await self._record(outcomes)

    def _failure(self, q: QueuedMessage, provider: str, error: Exception, now: float) -> Outcome:
        if isinstance(error, PermanentProviderError):
            return Failed(
                q.id, error.code, now, provider=provider, route="sms", detail=error.detail
            )
        attempt = q.attempts + 1
        defer = error.defer if isinstance(error, RetryableProviderError) else None
        delay = backoff(
            attempt,
            base_s=self._settings.retry_base_s,
            max_s=self._settings.retry_max_s,
            defer=defer,
            rng=self._rng,
        )
        code = error.code if isinstance(error, RetryableProviderError) else type(error).__name__
        return Retry(q.id, min(now + delay, q.expires_at), now, provider, code, attempt)

    async def _record(self, outcomes: list[Outcome]) -> None:
        try:
            await self._store.record_outcomes(outcomes)
        except Exception:
            # The leases run out and the messages are claimed again: never lost.
            log.exception("record_outcomes_failed", count=len(outcomes))
            return
        for o in outcomes:
            self._metrics.messages.labels(_status_of(o)).inc()


def _status_of(o: Outcome) -> str:
    return {
        Submitted: "submitted",
        Retry: "retrying",
        Failed: "failed",
        Expired: "expired",
        Suppressed: "suppressed",
    }[type(o)]
