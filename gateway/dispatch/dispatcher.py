"""The dispatcher: drains the durable queue into providers, at least once, never losing one.

A loop claims due messages in batches (a lease: a crash hands them back), plans each
one's route (carrier from the number, handset and 5G capability from cached batch
lookups, the template's vendor approvals, open circuits), groups them per provider
and route into that provider's batch size, and submits the batches concurrently,
within each provider's rate. Outcomes are recorded in one write per batch.

Rich routes are opportunistic: a rich route is chosen only where the phone can show it
(capable, approved, circuit closed); when the chosen one cannot deliver (refused, an
open circuit, a failed or missing delivery report) the message goes to the SMS, with a
``fallback`` event saying why, unless the send asked for rich routes only. SMS
failures are retried with exponential backoff and jitter until the message's TTL
runs out. Only this module decides to retry: providers just say what happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import orjson
from aiolimiter import AsyncLimiter

from cards.targets import route_payload
from cards.vendors import Skip
from gateway.clock import Clock
from gateway.dispatch.capability import CapabilityCache
from gateway.dispatch.circuit import CircuitBreaker
from gateway.dispatch.health import ProviderHealth
from gateway.dispatch.policy import SendPolicy
from gateway.dispatch.ports import Provider, Submission
from gateway.domain.messages import (
    FINAL,
    RICH_ROUTES,
    Deferred,
    Expired,
    Failed,
    Outcome,
    QueuedMessage,
    Rendered,
    Reroute,
    Retry,
    Settled,
    Submitted,
    Suppressed,
)
from gateway.domain.retry import backoff
from gateway.domain.routing import Candidate, Capability, carrier_for, plan_route
from gateway.errors import PermanentProviderError, ProviderError, RetryableProviderError
from gateway.logging import get_logger
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.storage.base import Store

log = get_logger("gateway.dispatch")

RICH = frozenset(RICH_ROUTES)
# retryable failures that say the provider did not take the batch (held here, or refused)
_UNSENT = frozenset({"rate_limited", "circuit_open"})
# how long a stop waits for the rounds it cancelled to record what they had sent, and how
# long such a round waits for its batches to take their cancel
_RECORD_ON_CANCEL_S = 5.0
_CANCEL_GRACE_S = 1.0
_NOTHING: frozenset[str] = frozenset()


class Approvals(Protocol):
    """Which vendors approved a template version (the catalog answers)."""

    async def approved_vendors(
        self, tenant_id: str, template_id: str, version: int
    ) -> frozenset[str]: ...


class NoApprovals:
    async def approved_vendors(
        self, tenant_id: str, template_id: str, version: int
    ) -> frozenset[str]:
        return frozenset()


@dataclass(slots=True)  # not frozen: one a message planned (see QueuedMessage); not changed
class _Planned:
    message: QueuedMessage
    candidate: Candidate
    submission: Submission
    fallbacks: tuple[tuple[str, str], ...]


class Dispatcher:
    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        clock: Clock,
        settings: Settings,
        metrics: Metrics,
        *,
        approvals: Approvals | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._clock = clock
        self._settings = settings
        self._metrics = metrics
        self.approvals: Approvals = approvals or NoApprovals()
        self.policy: SendPolicy | None = None
        self.capabilities = CapabilityCache(
            providers,
            clock,
            ttl_s=settings.capability_ttl_s,
            max_entries=settings.capability_cache_entries,
        )
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._stopping = False
        self._slots = asyncio.Semaphore(settings.dispatch_concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._health: dict[str, ProviderHealth] = {}
        self._limiters: dict[str, AsyncLimiter] = {}
        self._paused_until: dict[str, float] = {}
        self.last_tick = time.monotonic()

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        released = await self._store.release_leases()
        if released:
            log.info("leases_released", count=released)
        self._stopping = False
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
            if pending:  # a cancelled round records what it sent, while the store is open
                await asyncio.wait(pending, timeout=_RECORD_ON_CANCEL_S)
            log.info("dispatcher_drained", finished=len(done), abandoned=len(pending))

    # provider state ------------------------------------------------------------------------
    def health(self, name: str) -> ProviderHealth:
        h = self._health.get(name)
        if h is None:
            breaker = CircuitBreaker(
                self._clock,
                threshold=self._settings.circuit_threshold,
                cooldown_s=self._settings.circuit_cooldown_s,
            )
            h = self._health[name] = ProviderHealth(name, breaker)
        return h

    def provider_views(self) -> list[dict[str, object]]:
        return [
            {**self.health(name).view(), "routes": sorted(p.routes), "max_batch": p.max_batch}
            for name, p in sorted(self._providers.items())
        ]

    def _limiter(self, name: str) -> AsyncLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            rate = self._settings.provider_rates.get(name, self._settings.provider_rate_per_s)
            limiter = self._limiters[name] = AsyncLimiter(max(1.0, rate), 1.0)
        return limiter

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
                task = asyncio.get_running_loop().create_task(self._process(claimed))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                # Claim no further ahead than the providers can take before the leases run out.
                while len(self._inflight) >= self._settings.dispatch_inflight_claims:
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
            await self._process(claimed)
        return len(claimed)

    async def _process(self, claimed: Sequence[QueuedMessage]) -> None:
        try:
            await self._dispatch(claimed)
        except Exception:
            # The leases run out and the messages are claimed again: never lost.
            log.exception("dispatch_round_failed", count=len(claimed))

    # planning ----------------------------------------------------------------------------
    async def _dispatch(self, claimed: Sequence[QueuedMessage]) -> None:
        now = self._clock.now()
        immediate: list[Outcome] = []
        sendable: list[QueuedMessage] = []
        for q in claimed:
            if q.stage == "rich_wait":
                if q.status == "submitted" and q.route in RICH and q.provider and _has_sms(q):
                    immediate.append(
                        Reroute(q.id, now, q.route, q.provider, "rich_timeout", q.ref_suffix + 1)
                    )
                else:
                    immediate.append(Settled(q.id))
            elif q.stage == "report_wait":  # an SMS whose report never came
                final = q.status in FINAL
                immediate.append(Settled(q.id) if final else Expired(q.id, now, "no_report"))
            elif q.status in FINAL:
                immediate.append(Settled(q.id))
            elif q.expires_at <= now:
                immediate.append(Expired(q.id, now))
            else:
                sendable.append(q)
        reserved: list[QueuedMessage] = []
        if self.policy is not None and sendable:
            held = await self.policy.hold(sendable, now)
            if held:
                immediate.extend(held.values())
                sendable = [q for q in sendable if q.id not in held]
            reserved = sendable
        groups: dict[tuple[str, str], list[_Planned]] = defaultdict(list)
        for item in await self._plan(sendable, now):
            if isinstance(item, _Planned):
                groups[(item.candidate.provider, item.candidate.route)].append(item)
            else:
                immediate.append(item)
        if immediate:
            await self._record(immediate)
        await self._submit_claim(groups, reserved)

    async def _submit_claim(
        self, groups: Mapping[tuple[str, str], list[_Planned]], reserved: list[QueuedMessage]
    ) -> None:
        """Submits a claim's provider batches concurrently and records their outcomes.

        In one write, not one per batch: a claim's batches interleave over the same pages of
        `messages`, and writing them in one pass, in key order, cost ~16 µs a message where
        a write per batch cost ~24 (measured on the drain's database). A batch still out at
        half the lease does not hold back what went before it: that is recorded then, long
        before its leases run out. What was sent is recorded even if the round is cancelled
        (a stop that could not wait for a slow provider, see ``stop``).
        """
        sent: list[Outcome] = []

        async def submit(name: str, route: str, items: list[_Planned]) -> None:
            sent.extend(await self._submit(name, route, items))

        tasks: list[asyncio.Future[None]] = []
        for (name, route), items in groups.items():
            size = self._providers[name].max_batch
            for start in range(0, len(items), size):
                part = items[start : start + size]
                tasks.append(asyncio.ensure_future(submit(name, route, part)))
        try:
            if tasks:
                _, slow = await asyncio.wait(tasks, timeout=self._settings.dispatch_lease_s / 2)
                if slow:
                    early = await self._record_sent(sent)
                    if self.policy is not None and reserved and early:
                        # the database counts these for their caps now, not the policy
                        ids = {o.message_id for o in early}
                        self.policy.release([q for q in reserved if q.id in ids])
                    await asyncio.wait(slow)
        finally:
            out = [task for task in tasks if not task.done()]
            for task in out:  # only when this round itself was cancelled
                task.cancel()
            if out:  # a batch that ignores its cancel still gets its outcomes recorded
                await asyncio.wait(out, timeout=_CANCEL_GRACE_S)
            for task in tasks:
                error = None if not task.done() or task.cancelled() else task.exception()
                if error is not None:  # a bug: its messages' leases run out, never lost
                    log.error("dispatch_batch_failed", error=repr(error))
            try:
                await self._record_sent(sent)
            finally:
                if self.policy is not None and reserved:
                    self.policy.release(reserved)

    async def _record_sent(self, sent: list[Outcome]) -> list[Outcome]:
        """Records, and takes out of ``sent``, the outcomes collected so far (answered):
        shielded, so a cancel that lands mid-write does not undo it."""
        done = sent[:]
        sent.clear()
        if done:
            await asyncio.shield(self._record(done))
        return done

    async def _plan(
        self, messages: Sequence[QueuedMessage], now: float
    ) -> list[_Planned | Outcome]:
        if not messages:
            return []
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for q in messages:
            by_tenant[q.tenant_id].append(q.to)
        overrides = {t: await self._store.portability(t, nums) for t, nums in by_tenant.items()}
        carriers = {q.id: carrier_for(q.to, overrides[q.tenant_id]) for q in messages}
        wants_rich = {
            q.to: carriers[q.id]
            for q in messages
            if _may_go_rich(q.route_pref, q.exclude) and _has_card(q)
        }
        capabilities: dict[str, Capability] = {}
        if wants_rich:
            capabilities = await self.capabilities.resolve(wants_rich)
        blocked = frozenset(n for n, h in self._health.items() if h.breaker.blocked())
        out: list[_Planned | Outcome] = []
        approvals: dict[tuple[str, str, int], frozenset[str]] = {}  # asked once a round
        for q in messages:
            # parsed one at a time, for this plan only: parsed all at once, a claim's cards
            # took ~3.8 KB each (7.5 MB a claim of 2,000), and what waits to be sent keeps
            # its submission, not these
            r = _rendering(q)
            approved: frozenset[str] = frozenset()
            if r.card is not None and "vendor_card" in q.route_pref:
                version = (q.tenant_id, q.template_id, q.template_version)
                found = approvals.get(version)
                if found is None:
                    found = approvals[version] = await self.approvals.approved_vendors(*version)
                approved = found
            plan = plan_route(
                q.route_pref,
                carrier=carriers[q.id] if carriers[q.id] in self._providers else None,
                capability=capabilities.get(q.to),
                has_card=r.card is not None,
                approved_vendors=approved,
                open_circuits=blocked,
                exclude=frozenset(q.exclude) if q.exclude else _NOTHING,
            )
            out.append(self._first_sendable(q, r, plan.candidates, list(plan.skipped), now))
        return out

    def _first_sendable(
        self,
        q: QueuedMessage,
        rendered: Rendered,
        candidates: Sequence[Candidate],
        skipped: list[tuple[str, str]],
        now: float,
    ) -> _Planned | Outcome:
        for candidate in candidates:
            payload = None
            if candidate.route in RICH:
                assert rendered.card is not None
                try:
                    payload = route_payload(
                        candidate.route,
                        candidate.provider,
                        rendered.card,
                        rendered.kind,
                        rendered.brand,
                    )
                except Skip as skip:
                    skipped.append((candidate.route, skip.reason))
                    continue
            # A fallback is the SMS sent because a preferred rich route could not be used;
            # one rich route chosen over another is only the choice of route.
            fallbacks: tuple[tuple[str, str], ...] = ()
            if candidate.route == "sms":
                fallbacks = tuple(
                    (route, reason)
                    for route, reason in skipped
                    if route in RICH and reason != "no_card"
                )
            submission = Submission(
                q.client_ref,
                q.to,
                candidate.route,  # type: ignore[arg-type]
                rendered.text,
                payload,
            )
            return _Planned(q, candidate, submission, fallbacks)
        return Suppressed(q.id, "no_route", now)

    # submission --------------------------------------------------------------------------
    async def _submit(self, name: str, route: str, items: list[_Planned]) -> list[Outcome]:
        """Submits one provider batch; answers each message's outcome (recorded by the caller)."""
        provider = self._providers[name]
        health = self.health(name)
        now = self._clock.now()
        paused = self._paused_until.get(name, 0.0) - now
        if paused > 0 or not health.breaker.allow():
            reason = "rate_limited" if paused > 0 else "circuit_open"
            defer = paused if paused > 0 else health.breaker.retry_in()
            held = RetryableProviderError(reason, defer=max(defer, 0.1))
            return [self._failure(p, name, route, held, now) for p in items]
        callback = f"{self._settings.base_url}/callbacks/{name}/dlr"
        batch = [p.submission for p in items]
        attempt = max(p.message.attempts for p in items) + 1
        error: ProviderError | None = None
        results = []
        limiter = self._limiter(name)
        try:  # waiting for the rate past a fraction of the lease would let it run out
            await asyncio.wait_for(
                limiter.acquire(min(len(batch), limiter.max_rate)),
                timeout=self._settings.dispatch_lease_s / 4,
            )
        except TimeoutError:
            held = RetryableProviderError("rate_limited", defer=1.0)
            return [self._failure(p, name, route, held, now) for p in items]
        async with self._slots:
            self._metrics.inflight.inc()
            started = time.perf_counter()
            try:
                results = await provider.submit(batch, callback)
            except ProviderError as exc:
                error = exc
            except Exception as exc:  # an adapter bug must not lose messages: retry them
                log.exception("provider_adapter_error", provider=name)
                error = RetryableProviderError("adapter_error", str(exc))
            finally:
                self._metrics.inflight.dec()
            elapsed = time.perf_counter() - started
        self._metrics.dispatch_seconds.labels(name).observe(elapsed)
        now = self._clock.now()
        if isinstance(error, RetryableProviderError) and error.code == "rate_limited":
            self._paused_until[name] = now + (error.defer or 1.0)
        elif isinstance(error, RetryableProviderError):
            health.breaker.failure()
        else:
            health.breaker.success()
        health.record(error is None, elapsed, len(batch))
        outcomes: list[Outcome] = []
        if error is not None:
            outcome = "retry" if isinstance(error, RetryableProviderError) else "failed"
            outcomes = [self._failure(p, name, route, error, now) for p in items]
        else:
            outcome = "ok"
            by_ref = {r.message_id: r for r in results}
            for p in items:
                r = by_ref.get(p.submission.message_id)
                if r is None:
                    missing = RetryableProviderError("no_answer")
                    outcomes.append(self._failure(p, name, route, missing, now))
                elif r.error is not None:
                    if r.error.code == "not_capable":
                        self.capabilities.forget(p.message.to)
                    outcomes.append(self._failure(p, name, route, r.error, now))
                else:
                    # its report is awaited until the rich timeout, or an SMS's expiry
                    rich_until = now + self._settings.rich_timeout_s
                    wait = rich_until if route in RICH else p.message.expires_at
                    outcomes.append(
                        Submitted(
                            p.message.id,
                            name,
                            route,
                            r.provider_ref,
                            now,
                            p.message.attempts + 1,
                            p.fallbacks,
                            wait,
                            p.submission.message_id,
                        )
                    )
        self._metrics.dispatch_attempts.labels(name, outcome).inc()
        log.info(
            "dispatch_attempt",
            provider=name,
            route=route,
            size=len(batch),
            attempt=attempt,
            outcome=outcome,
            error=str(error) if error else None,
            latency_ms=round(elapsed * 1000, 2),
        )
        return outcomes

    def _failure(
        self, p: _Planned, provider: str, route: str, error: ProviderError, now: float
    ) -> Outcome:
        q = p.message
        if route in RICH and _has_sms(q):  # a rich route gives up at once: the SMS goes
            # under a fresh reference if the provider may have taken the rich one (no answer,
            # a 5xx): a carrier would drop an SMS under the same reference as a repeat
            maybe_taken = isinstance(error, RetryableProviderError) and error.code not in _UNSENT
            suffix = q.ref_suffix + 1 if maybe_taken else q.ref_suffix
            return Reroute(q.id, now, route, provider, error.code, suffix)
        if isinstance(error, PermanentProviderError):
            return Failed(
                q.id, error.code, now, provider=provider, route=route, detail=error.detail
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
        return Retry(q.id, min(now + delay, q.expires_at), now, provider, error.code, attempt)

    async def _record(self, outcomes: list[Outcome]) -> None:
        try:
            await self._store.record_outcomes(outcomes)
        except Exception:
            # The leases run out and the messages are claimed again: never lost.
            log.exception("record_outcomes_failed", count=len(outcomes))
            return
        entered = Counter(_STATUS_OF.get(type(o)) for o in outcomes)
        for status, count in entered.items():
            if status:
                self._metrics.entered(status, count)
        if entered["rerouted"]:
            self.wake()


@lru_cache(maxsize=256)
def _may_go_rich(route_pref: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether a rich route is left to try (the few combinations there are, worked out once)."""
    return any(r in RICH and r not in exclude for r in route_pref)


def _rendering(q: QueuedMessage) -> Rendered:
    """A claimed message's rendering, parsed from its stored JSON."""
    return Rendered.from_dict(orjson.loads(q.rendered))


def _has_card(q: QueuedMessage) -> bool:
    """Whether a claimed message's rendering has a card, without parsing it.

    The rendering is stored as orjson writes ``Rendered.as_dict()``: compact, with the
    ``card`` key only when there is a card. Inside a JSON string a quote is escaped, so
    ``"card":`` can only be a key: the card's own, or one inside the card. The brand, the
    only other object there, has no such key. (A row holding ``"card":null`` would cost
    its number a needless capability lookup, nothing more: the plan reads the parsed card.)
    """
    return b'"card":' in q.rendered


def _has_sms(q: QueuedMessage) -> bool:
    """Whether the message may fall back to the SMS (a send can ask for rich routes only)."""
    return "sms" in q.route_pref


_STATUS_OF: dict[type, str] = {
    Deferred: "deferred",
    Submitted: "submitted",
    Retry: "retrying",
    Failed: "failed",
    Expired: "expired",
    Suppressed: "suppressed",
    Reroute: "rerouted",
}
