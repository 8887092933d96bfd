"""Events in from providers: signed delivery reports, verified before anything changes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

from gateway.clock import Clock
from gateway.dispatch.ports import Provider
from gateway.dispatch.reviews import record_verdicts
from gateway.domain.messages import message_id_of
from gateway.domain.phones import InvalidNumber, to_e164
from gateway.errors import InvalidInput, NotFound, Unauthenticated
from gateway.logging import get_logger
from gateway.metrics import Metrics
from gateway.storage.audience import SqliteAudience
from gateway.storage.base import ReportResult, Store
from gateway.usecases.catalog import Catalog

log = get_logger("gateway.events_in")


def provider_for(providers: Mapping[str, Provider], name: str) -> Provider:
    provider = providers.get(name)
    if provider is None:
        raise NotFound(f"no provider {name!r}")
    return provider


async def receive_reports(
    store: Store,
    providers: Mapping[str, Provider],
    clock: Clock,
    metrics: Metrics,
    name: str,
    body: bytes,
    signature: str | None,
) -> list[ReportResult]:
    """Applies a batch of delivery reports once each; forged batches change nothing (401)."""
    provider = provider_for(providers, name)
    if not provider.verify(body, signature):
        metrics.reports.labels(name, "forged").inc()
        raise Unauthenticated("bad or missing X-Signature")
    try:
        reports = [
            replace(r, message_id=message_id_of(r.message_id)) for r in provider.parse_reports(body)
        ]
    except ValueError as exc:
        raise InvalidInput.field(["body"], f"not a delivery report batch: {exc}") from None
    results = await store.apply_reports(name, reports, clock.now())
    applied = [r for r in results if r.applied]
    if applied:
        metrics.reports.labels(name, "applied").inc(len(applied))
    if len(applied) < len(results):
        metrics.reports.labels(name, "ignored").inc(len(results) - len(applied))
    for status, count in Counter(r.status for r in applied if r.status).items():
        metrics.entered(status, count)
    return results


async def receive_reviews(
    store: Store,
    providers: Mapping[str, Provider],
    catalog: Catalog,
    clock: Clock,
    name: str,
    body: bytes,
    signature: str | None,
) -> int:
    """A vendor's signed verdicts on template versions; forged calls change nothing (401)."""
    provider = provider_for(providers, name)
    if not provider.verify(body, signature):
        raise Unauthenticated("bad or missing X-Signature")
    parse = getattr(provider, "parse_reviews", None)
    if parse is None:
        raise NotFound(f"{name} reviews no templates")
    try:
        results = parse(body)
    except ValueError as exc:
        raise InvalidInput.field(["body"], f"not a review batch: {exc}") from None
    return await record_verdicts(store, catalog, clock, name, results)


OPT_OUT_WORDS = frozenset({"td", "t", "r", "退订", "拒收", "stop", "unsub"})


def is_opt_out(text: str) -> bool:
    """``TD``, ``T``, ``R``, ``退订``, ``拒收``, ``STOP``, ``UNSUB``, any case, trimmed."""
    return text.strip().casefold() in OPT_OUT_WORDS


async def receive_replies(
    store: Store,
    audience: SqliteAudience | None,
    providers: Mapping[str, Provider],
    clock: Clock,
    name: str,
    body: bytes,
    signature: str | None,
) -> int:
    """Replies from phones: opt-out words opt the number out of the marketing of the tenant
    whose message the reply answers (see ``Store.reply_target``); every reply is a
    ``replied`` event on that message, once (a reply delivered again under the provider's
    same reference is not counted or recorded again)."""
    provider = provider_for(providers, name)
    if not provider.verify(body, signature):
        raise Unauthenticated("bad or missing X-Signature")
    try:
        inbound = provider.parse_inbound(body)
    except ValueError as exc:
        raise InvalidInput.field(["body"], f"not a reply batch: {exc}") from None
    matched = 0
    for mo in inbound:
        try:
            phone = to_e164(mo.from_number)
        except InvalidNumber:
            continue
        latest = await store.reply_target(phone, mo.in_reply_to)
        if latest is None:  # no message to that phone, or two tenants could own the reply
            log.info("reply_unmatched", provider=name, phone=phone)
            continue
        message_id, tenant_id = latest
        now = clock.now()
        opt_out = is_opt_out(mo.text)
        if opt_out and audience is not None:
            await audience.opt_out(tenant_id, phone, f"reply:{name}", now)
        # opted out first (doing it twice changes nothing), then the reply, once
        fresh = await store.record_reply(
            message_id,
            now,
            {"text": mo.text[:500], "opt_out": opt_out, "provider": name},
            provider=name,
            provider_ref=mo.provider_ref,
        )
        matched += fresh
    return matched
