"""An in-memory store with the same behaviour as ``SqliteStore``, for fast service tests."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from gateway.dispatch.ports import DeliveryReport
from gateway.domain.messages import (
    RELEASED_LEASE,
    RICH_ROUTES,
    Deferred,
    Event,
    Expired,
    Failed,
    IdempotencyRecord,
    MessageView,
    NewMessage,
    Outcome,
    QueuedMessage,
    Reroute,
    Retry,
    Settled,
    Status,
    Submitted,
    Suppressed,
    can_move,
    fallback_event,
    message_id_of,
    report_fits,
    wait_stage,
)
from gateway.storage.base import (
    AcceptResult,
    DuplicateTenant,
    IdempotencyConflict,
    LinkRecord,
    LogFilter,
    ReportResult,
    ReviewState,
    TemplateRecord,
)


@dataclass
class _Queued:
    due_at: float
    lease_until: float = 0.0
    attempts: int = 0
    stage: str = "send"
    exclude: tuple[str, ...] = ()
    ref_suffix: int = 0


@dataclass
class _Message:
    new: NewMessage
    status: str
    reason: str | None
    updated_at: float
    route: str | None = None
    provider: str | None = None
    provider_ref: str | None = None
    events: list[Event] = field(default_factory=list)


class MemoryStore:
    def __init__(self) -> None:
        self.tenants: dict[str, float] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.signouts: dict[str, float] = {}  # session hash → when it would have expired
        self.brands: dict[tuple[str, str], dict[str, Any]] = {}
        self.templates: dict[tuple[str, str], list[TemplateRecord]] = {}
        self.messages: dict[str, _Message] = {}
        self.queue: dict[str, _Queued] = {}
        self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        self.reports_seen: set[tuple[str, str, str]] = set()
        self.reviews: dict[tuple[str, str, int, str], ReviewState] = {}
        self.links: dict[str, LinkRecord] = {}
        self.ported: dict[tuple[str, str], str] = {}
        self.settings: dict[str, dict[str, Any]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def create_tenant(
        self, tenant_id: str, keys: Sequence[tuple[str, str]], now: float
    ) -> None:
        if tenant_id in self.tenants:
            raise DuplicateTenant(tenant_id)
        self.tenants[tenant_id] = now
        for key_hash, role in keys:
            self.keys[key_hash] = (tenant_id, role)

    async def add_keys(self, tenant_id: str, keys: Sequence[tuple[str, str]], now: float) -> None:
        for key_hash, role in keys:
            self.keys[key_hash] = (tenant_id, role)

    async def get_settings(self, tenant_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.settings.get(tenant_id, {}))

    async def put_settings(self, tenant_id: str, settings: dict[str, Any]) -> None:
        self.settings[tenant_id] = copy.deepcopy(settings)

    async def wake_deferred(self, tenant_id: str, now: float) -> int:
        woken = 0
        for mid, q in self.queue.items():
            m = self.messages[mid]
            if (
                m.new.tenant_id == tenant_id
                and m.status == Status.DEFERRED
                and q.due_at > now
                and m.events
                and m.events[-1].type == "deferred"  # not a retry's backoff
            ):
                q.due_at = now
                woken += 1
        return woken

    async def find_key(self, key_hash: str) -> tuple[str, str] | None:
        return self.keys.get(key_hash)

    async def tenant_exists(self, tenant_id: str) -> bool:
        return tenant_id in self.tenants

    async def revoke_key(self, key_hash: str) -> tuple[str, str] | None:
        return self.keys.pop(key_hash, None)

    async def sign_out(self, session_hash: str, until: float, now: float) -> None:
        for stale in [h for h, t in self.signouts.items() if t < now]:
            del self.signouts[stale]
        self.signouts[session_hash] = until

    async def is_signed_out(self, session_hash: str) -> bool:
        return session_hash in self.signouts

    async def put_brand(
        self, tenant_id: str, brand_id: str, body: dict[str, Any], now: float
    ) -> None:
        self.brands[(tenant_id, brand_id)] = copy.deepcopy(body)

    async def get_brand(self, tenant_id: str, brand_id: str) -> dict[str, Any] | None:
        body = self.brands.get((tenant_id, brand_id))
        return copy.deepcopy(body) if body is not None else None

    async def list_brands(self, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
        return sorted((b, copy.deepcopy(v)) for (t, b), v in self.brands.items() if t == tenant_id)

    async def put_template(
        self,
        tenant_id: str,
        template_id: str,
        body: dict[str, Any],
        now: float,
        reviews: dict[str, str | None] | None = None,
    ) -> TemplateRecord:
        versions = self.templates.setdefault((tenant_id, template_id), [])
        record = TemplateRecord(tenant_id, template_id, len(versions) + 1, copy.deepcopy(body), now)
        versions.append(record)
        for vendor, reason in (reviews or {}).items():
            state = "pending" if reason is None else "not_applicable"
            self.reviews[(tenant_id, template_id, record.version, vendor)] = ReviewState(
                tenant_id, template_id, record.version, vendor, state, reason, None, 0, 0.0, now
            )
        return record

    async def reviews_for(
        self, tenant_id: str, template_id: str, version: int
    ) -> list[ReviewState]:
        return sorted(
            (r for k, r in self.reviews.items() if k[:3] == (tenant_id, template_id, version)),
            key=lambda r: r.vendor,
        )

    async def due_reviews(self, now: float, limit: int) -> list[ReviewState]:
        due = [r for r in self.reviews.values() if r.state == "pending" and r.next_at <= now]
        return sorted(due, key=lambda r: r.next_at)[:limit]

    async def update_review(self, review: ReviewState) -> None:
        key = (review.tenant_id, review.template_id, review.version, review.vendor)
        if key in self.reviews:
            self.reviews[key] = review

    async def find_review(self, vendor: str, review_id: str) -> ReviewState | None:
        for r in self.reviews.values():
            if r.vendor == vendor and r.review_id == review_id:
                return r
        return None

    async def find_link(self, token: str) -> LinkRecord | None:
        return self.links.get(token)

    async def revoke_pending(self, tenant_id: str, message_id: str, now: float) -> str | None:
        rec = self.messages.get(message_id)
        if rec is None or rec.new.tenant_id != tenant_id:
            return None
        q = self.queue.get(message_id)
        if rec.status in (Status.ACCEPTED, Status.DEFERRED):
            if q is not None and q.lease_until > now:
                return "in_flight"
            self.queue.pop(message_id, None)
            self._move(message_id, Status.REVOKED, now, reason="revoked")
            self._event(message_id, "revoked", now)
            return "revoked_now"
        return rec.status

    async def mark_revoked(
        self, message_id: str, now: float, data: dict[str, Any], recalled: bool
    ) -> bool:
        moved = recalled and self._move(message_id, Status.REVOKED, now, reason="revoked")
        if moved:
            self.queue.pop(message_id, None)
        self._event(message_id, "revoked" if moved else "revoke_refused", now, **data)
        return moved

    async def reply_target(
        self, phone: str, in_reply_to: str | None = None
    ) -> tuple[str, str] | None:
        if in_reply_to is not None:
            named = self.messages.get(message_id_of(in_reply_to))
            if named is not None and named.new.to == phone:
                return named.new.id, named.new.tenant_id
        to_phone = [m for m in self.messages.values() if m.new.to == phone]
        reached = [m for m in to_phone if m.status in (Status.SUBMITTED, Status.DELIVERED)]
        found = reached or to_phone  # what reached a provider first (see SqliteStore)
        if not found or len({m.new.tenant_id for m in found}) > 1:
            return None  # nobody's, or two tenants': nobody's
        latest = max(found, key=lambda m: (m.new.category == "marketing", m.new.created_at))
        return latest.new.id, latest.new.tenant_id

    async def record_reply(
        self,
        message_id: str,
        at: float,
        data: dict[str, Any],
        *,
        provider: str,
        provider_ref: str | None,
    ) -> bool:
        if provider_ref is not None:
            if (provider, provider_ref, "mo") in self.reports_seen:
                return False
            self.reports_seen.add((provider, provider_ref, "mo"))
        self._event(message_id, "replied", at, **data)
        return True

    async def record_clicks(self, clicks: Sequence[tuple[LinkRecord, float, str | None]]) -> None:
        for link, at, user_agent in clicks:
            if link.message_id in self.messages:
                self._event(
                    link.message_id,
                    "clicked",
                    at,
                    button=link.button,
                    label=link.label,
                    user_agent=(user_agent or "")[:300] or None,
                )

    async def get_template(
        self, tenant_id: str, template_id: str, version: int | None = None
    ) -> TemplateRecord | None:
        versions = self.templates.get((tenant_id, template_id), [])
        if not versions:
            return None
        if version is None:
            return versions[-1]
        return versions[version - 1] if 1 <= version <= len(versions) else None

    async def list_templates(self, tenant_id: str) -> list[TemplateRecord]:
        return [v[-1] for (t, _), v in sorted(self.templates.items()) if t == tenant_id]

    async def accept(
        self, message: NewMessage, idempotency: IdempotencyRecord | None = None
    ) -> AcceptResult:
        if idempotency is not None:
            key = (idempotency.tenant_id, idempotency.key)
            earlier = self.idempotency.get(key)
            if earlier is not None:
                if earlier.request_hash != idempotency.request_hash:
                    raise IdempotencyConflict(idempotency.key)
                return AcceptResult(earlier.message_id, replayed=True)
            self.idempotency[key] = idempotency
        m = message
        data = {"reason": m.reason} if m.reason else {}
        for k in m.links:
            self.links[k.token] = LinkRecord(k.token, m.tenant_id, m.id, k.button, k.label, k.url)
        events = [Event(Status.ACCEPTED, m.created_at)]
        if m.status != Status.ACCEPTED:
            events.append(Event(m.status, m.created_at, data))
        self.messages[m.id] = _Message(m, m.status, m.reason, m.created_at, events=events)
        if m.status in (Status.ACCEPTED, Status.DEFERRED):
            self.queue[m.id] = _Queued(m.due_at)
        return AcceptResult(m.id)

    async def get_message(self, tenant_id: str, message_id: str) -> MessageView | None:
        rec = self.messages.get(message_id)
        if rec is None or rec.new.tenant_id != tenant_id:
            return None
        n = rec.new
        return MessageView(
            id=n.id,
            tenant_id=n.tenant_id,
            to=n.to,
            status=rec.status,
            reason=rec.reason,
            route=rec.route,
            provider=rec.provider,
            provider_ref=rec.provider_ref,
            category=n.category,
            template_id=n.template_id,
            template_version=n.template_version,
            campaign_id=n.campaign_id,
            client_ref=n.client_ref,
            rendered=n.rendered.as_dict(),
            created_at=n.created_at,
            updated_at=rec.updated_at,
            expires_at=n.expires_at,
            events=list(rec.events),
        )

    async def list_messages(
        self, tenant_id: str, where: LogFilter, before: str | None, limit: int
    ) -> list[tuple[Any, ...]]:
        out = []
        for mid in sorted(self.messages, reverse=True):
            rec = self.messages[mid]
            n = rec.new
            row = (
                mid,
                n.to,
                rec.status,
                rec.reason,
                rec.route,
                rec.provider,
                n.campaign_id,
                n.template_id,
                n.template_version,
                n.client_ref,
                n.category,
                n.created_at,
                rec.updated_at,
            )
            checks = (
                (where.campaign_id, n.campaign_id),
                (where.status, rec.status),
                (where.provider, rec.provider),
                (where.route, rec.route),
                (where.to, n.to),
            )
            if n.tenant_id != tenant_id or (before is not None and mid >= before):
                continue
            if any(want is not None and want != got for want, got in checks):
                continue
            if where.since is not None and n.created_at < where.since:
                continue
            if where.until is not None and n.created_at >= where.until:
                continue
            out.append(row)
            if len(out) == limit:
                break
        return out

    async def get_idempotency(self, tenant_id: str, key: str) -> IdempotencyRecord | None:
        return self.idempotency.get((tenant_id, key))

    async def purge_idempotency(self, before: float) -> int:
        old = [k for k, v in self.idempotency.items() if v.created_at < before]
        for k in old:
            del self.idempotency[k]
        return len(old)

    async def release_leases(self) -> int:
        leased = [q for q in self.queue.values() if q.lease_until > RELEASED_LEASE]
        for q in leased:
            q.lease_until = RELEASED_LEASE
        return len(leased)

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[QueuedMessage]:
        due = sorted(
            (q.due_at, mid)
            for mid, q in self.queue.items()
            if q.due_at <= now and q.lease_until <= now
        )[:limit]
        out = []
        for _, mid in due:
            q = self.queue[mid]
            q.lease_until = lease_until
            rec = self.messages[mid]
            n = rec.new
            out.append(
                QueuedMessage(
                    id=mid,
                    tenant_id=n.tenant_id,
                    to=n.to,
                    category=n.category,
                    rendered=orjson.dumps(n.rendered.as_dict()),  # as the database keeps it
                    route_pref=n.route_pref,
                    attempts=q.attempts,
                    expires_at=n.expires_at,
                    status=rec.status,
                    template_id=n.template_id,
                    template_version=n.template_version,
                    stage=q.stage,
                    exclude=q.exclude,
                    ref_suffix=q.ref_suffix,
                    route=rec.route,
                    provider=rec.provider,
                    campaign_id=n.campaign_id,
                    timezone=n.timezone,
                    policy=n.policy,
                )
            )
        return sorted(out, key=lambda q: q.id)

    async def next_due(self) -> float | None:
        return min((max(q.due_at, q.lease_until) for q in self.queue.values()), default=None)

    def _move(self, message_id: str, status: str, at: float, **columns: Any) -> bool:
        rec = self.messages.get(message_id)
        if rec is None or not can_move(rec.status, status):
            return False
        rec.status, rec.updated_at = status, at
        for k, v in columns.items():
            setattr(rec, k, v)
        return True

    def _event(self, message_id: str, type_: str, at: float, **data: Any) -> None:
        self.messages[message_id].events.append(
            Event(type_, at, {k: v for k, v in data.items() if v is not None})
        )

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            if isinstance(o, Submitted):
                if o.fallbacks:
                    self._event(o.message_id, "fallback", o.at, **fallback_event(o))
                queued = self.queue.get(o.message_id)
                if o.wait_until is None or queued is None:
                    self.queue.pop(o.message_id, None)
                else:
                    queued.stage, queued.due_at = wait_stage(o.route), o.wait_until
                    queued.lease_until = 0.0
                rec = self.messages[o.message_id]
                rec.route, rec.provider, rec.provider_ref = o.route, o.provider, o.provider_ref
                rec.updated_at = o.at
                self._move(o.message_id, Status.SUBMITTED, o.at)
                self._event(
                    o.message_id,
                    "submitted",
                    o.at,
                    provider=o.provider,
                    route=o.route,
                    provider_ref=o.provider_ref,
                    client_ref=o.client_ref if o.client_ref != o.message_id else None,
                    attempt=o.attempt,
                )
            elif isinstance(o, Reroute):
                self._reroute(o.message_id, o.route, o.at, o.ref_suffix)
                self._event(
                    o.message_id,
                    "fallback",
                    o.at,
                    **{"from": o.route, "to": "sms"},
                    provider=o.provider,
                    reason=o.reason,
                )
            elif isinstance(o, Settled):
                self.queue.pop(o.message_id, None)
            elif isinstance(o, Deferred):
                q = self.queue.get(o.message_id)
                if q is not None:
                    q.due_at, q.lease_until = o.until, 0.0
                if self._move(o.message_id, Status.DEFERRED, o.at):
                    self._event(o.message_id, "deferred", o.at, until=o.until)
            elif isinstance(o, Retry):
                q = self.queue.get(o.message_id)
                if q is not None:
                    self.queue[o.message_id] = replace(
                        q, due_at=o.due_at, lease_until=0.0, attempts=o.attempt
                    )
                self._event(
                    o.message_id,
                    "retry",
                    o.at,
                    provider=o.provider,
                    error=o.error,
                    attempt=o.attempt,
                    next_at=o.due_at,
                )
            elif isinstance(o, Failed):
                self.queue.pop(o.message_id, None)
                if self._move(o.message_id, Status.FAILED, o.at, reason=o.reason):
                    rec = self.messages[o.message_id]
                    rec.provider, rec.route = o.provider, o.route
                    self._event(
                        o.message_id,
                        "failed",
                        o.at,
                        reason=o.reason,
                        detail=o.detail,
                        provider=o.provider,
                    )
            elif isinstance(o, Expired):
                self.queue.pop(o.message_id, None)
                if self._move(o.message_id, Status.EXPIRED, o.at, reason=o.reason):
                    self._event(o.message_id, "expired", o.at, reason=o.reason)
            elif isinstance(o, Suppressed):
                self.queue.pop(o.message_id, None)
                if self._move(o.message_id, Status.SUPPRESSED, o.at, reason=o.reason):
                    self._event(o.message_id, "suppressed", o.at, reason=o.reason)

    def _reroute(self, message_id: str, route: str, at: float, ref_suffix: int) -> None:
        """Queues the message again for the SMS: every rich route is excluded from now on."""
        q = self.queue.get(message_id) or _Queued(at)
        self.queue[message_id] = replace(
            q,
            due_at=at,
            lease_until=0.0,
            stage="send",
            exclude=RICH_ROUTES,
            ref_suffix=ref_suffix,
        )

    async def set_portability(
        self, tenant_id: str, number: str, carrier: str | None, now: float
    ) -> None:
        if carrier is None:
            self.ported.pop((tenant_id, number), None)
        else:
            self.ported[(tenant_id, number)] = carrier

    async def portability(self, tenant_id: str, numbers: Sequence[str]) -> dict[str, str]:
        return {n: self.ported[(tenant_id, n)] for n in numbers if (tenant_id, n) in self.ported}

    async def apply_reports(
        self, provider: str, reports: Sequence[DeliveryReport], now: float
    ) -> list[ReportResult]:
        results = []
        for r in reports:
            rec = self.messages.get(r.message_id)
            if rec is None:
                results.append(ReportResult(r.message_id, applied=False))
                continue
            tenant = rec.new.tenant_id
            queued = self.queue.get(r.message_id)
            lease = queued.lease_until if queued is not None else None
            ref = r.provider_ref
            if not report_fits(rec.provider, rec.provider_ref, lease, provider, ref):
                results.append(ReportResult(r.message_id, applied=False, tenant_id=tenant))
                continue
            key = (provider, r.provider_ref, r.status)
            if key in self.reports_seen:
                results.append(ReportResult(r.message_id, applied=False, tenant_id=tenant))
                continue
            self.reports_seen.add(key)
            if r.status == "displayed":
                self._event(r.message_id, "displayed", now, provider=provider, provider_at=r.at)
                results.append(ReportResult(r.message_id, True, "displayed", tenant))
                continue
            status = Status.DELIVERED if r.status == "delivered" else Status.FAILED
            if (
                status == Status.FAILED
                and rec.route in RICH_ROUTES
                and rec.provider == provider
                and rec.status == Status.SUBMITTED
                and "sms" in rec.new.route_pref
            ):
                queued = self.queue.get(r.message_id)
                if queued is not None and queued.stage != "rich_wait":  # its SMS is under way
                    results.append(ReportResult(r.message_id, False, "rerouted", tenant))
                    continue
                self._reroute(
                    r.message_id, rec.route, now, (queued.ref_suffix if queued else 0) + 1
                )
                self._event(
                    r.message_id,
                    "fallback",
                    now,
                    **{"from": rec.route, "to": "sms"},
                    provider=provider,
                    reason=f"dlr_failed:{r.error_code or 'unknown'}",
                )
                results.append(ReportResult(r.message_id, True, "rerouted", tenant))
                continue
            extra: dict[str, Any] = {"reason": r.error_code} if status == Status.FAILED else {}
            if rec.provider is None:
                extra.update(provider=provider, provider_ref=r.provider_ref)
            moved = self._move(r.message_id, status, now, **extra)
            if moved:
                self.queue.pop(r.message_id, None)
                self._event(
                    r.message_id,
                    status.value,
                    now,
                    provider=provider,
                    provider_at=r.at,
                    error_code=r.error_code,
                )
            results.append(ReportResult(r.message_id, moved, status.value, tenant))
        return results
