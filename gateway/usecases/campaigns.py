"""Campaigns: an audience, weighted variants, a window, a cap; their lifecycle and funnel."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from cards.variables import check_variables
from gateway.clock import Clock, to_rfc3339
from gateway.domain.messages import IdempotencyRecord, Status
from gateway.domain.phones import InvalidNumber, mask, to_e164
from gateway.domain.segments import RuleError, parse_rule
from gateway.errors import Conflict, FieldError, InvalidInput, NotFound
from gateway.ids import new_id
from gateway.storage.audience import CampaignRow, SqliteAudience
from gateway.storage.base import IdempotencyConflict
from gateway.usecases.audience import FrequencyCap
from gateway.usecases.catalog import Catalog, invalid_from_pydantic
from gateway.usecases.fields import Hhmm, Rfc3339, WholeNumber, check_schedule
from gateway.usecases.sending import idempotency_conflict, replay_of, request_hash


class AudienceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment_id: str | None = None
    rule: Any = None
    recipients: list[str] | None = Field(default=None, min_length=1, max_length=100_000)


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template_id: str = Field(min_length=1, max_length=64)
    weight: WholeNumber = Field(default=1, ge=1, le=1_000_000)


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _all_days() -> list[Day]:
    return ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class WindowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Hhmm
    end: Hhmm
    days: list[Day] = Field(default_factory=_all_days, min_length=1)


class CampaignIn(BaseModel):
    """The body of ``POST /v1/campaigns``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    audience: AudienceSpec
    variants: list[VariantSpec] = Field(min_length=1, max_length=10)
    variables: dict[str, Any] = Field(default_factory=dict)
    window: WindowSpec | None = None
    start_at: Rfc3339 | None = None
    ttl_seconds: StrictInt = Field(default=172_800, ge=60, le=30 * 86400)
    frequency_cap: FrequencyCap | None = None


def choose_variant(campaign_id: str, phone: str, variants: Sequence[dict[str, Any]]) -> str:
    """Deterministic, weighted: a recipient always gets the same variant of a campaign."""
    if len(variants) == 1:  # nothing to choose (and no hash to work out per recipient)
        return str(variants[0]["template_id"])
    total = sum(int(v["weight"]) for v in variants)
    point = int.from_bytes(hashlib.sha256(f"{campaign_id}:{phone}".encode()).digest()[:8], "big")
    point %= total
    for v in variants:
        point -= int(v["weight"])
        if point < 0:
            return str(v["template_id"])
    return str(variants[-1]["template_id"])  # pragma: no cover


class Campaigns:
    def __init__(self, audience: SqliteAudience, catalog: Catalog, clock: Clock) -> None:
        self._audience = audience
        self._catalog = catalog
        self._clock = clock
        self.on_change = lambda: None

    async def create(
        self, tenant_id: str, body: Any, *, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """A new campaign's first answer, and whether it is an earlier one's again: with an
        ``Idempotency-Key`` (as for single sends, Stripe's semantics) the same body answers
        the first campaign again, before anything is checked, and a different body is 409."""
        body_hash = request_hash(body) if idempotency_key is not None else ""
        if idempotency_key is not None:
            earlier = replay_of(
                await self._audience.idempotency(tenant_id, idempotency_key), body_hash
            )
            if earlier is not None:
                return await self._first_answer(tenant_id, earlier), True
        if not isinstance(body, dict):
            raise InvalidInput.field(["body"], "must be a JSON object")
        try:
            spec = CampaignIn.model_validate(body)
        except ValidationError as exc:
            raise invalid_from_pydantic(exc) from None
        problems: list[FieldError] = []
        audience = spec.audience
        chosen = [
            k for k in ("segment_id", "rule", "recipients") if getattr(audience, k) is not None
        ]
        if len(chosen) != 1:
            raise InvalidInput.field(["audience"], "exactly one of segment_id, rule or recipients")
        stored_audience: dict[str, Any]
        if audience.segment_id is not None:
            rule = await self._audience.get_segment(tenant_id, audience.segment_id)
            if rule is None:
                raise InvalidInput.field(["audience", "segment_id"], "no such segment")
            stored_audience = {"segment_id": audience.segment_id, "rule": rule}
        elif audience.rule is not None:
            try:
                parse_rule(audience.rule, ("audience", "rule"))
            except RuleError as exc:
                raise InvalidInput.field(exc.loc, exc.msg) from None
            stored_audience = {"rule": audience.rule}
        else:
            phones = set()
            for i, raw in enumerate(audience.recipients or []):
                try:
                    phones.add(to_e164(raw))
                except InvalidNumber as exc:
                    problems.append(FieldError(("audience", "recipients", i), str(exc)))
            stored_audience = {"recipients": sorted(phones)}
        seen_variables: set[str] = set()
        seen_templates: set[str] = set()
        versions: dict[str, int] = {}
        for i, v in enumerate(spec.variants):
            if v.template_id in seen_templates:  # their stats would merge into one variant
                problems.append(FieldError(("variants", i, "template_id"), "named twice"))
                continue
            seen_templates.add(v.template_id)
            loaded = await self._catalog.template(tenant_id, v.template_id)
            if loaded is None:
                problems.append(FieldError(("variants", i, "template_id"), "no such template"))
                continue
            versions[v.template_id] = loaded.record.version
            # What the campaign gives must suit every variant that declares it (what it
            # leaves out may still come from each recipient's attributes).
            given = {n: s for n, s in loaded.spec.variables.items() if n in spec.variables}
            for name, msg in check_variables(given, spec.variables)[1]:
                if name not in seen_variables:
                    seen_variables.add(name)
                    problems.append(FieldError(("variables", name), msg))
        if problems:
            raise InvalidInput(
                "; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems), problems
            )
        now = self._clock.now()
        check_schedule(spec.start_at, now, "start_at")
        start_at = max(now, spec.start_at.timestamp()) if spec.start_at else now
        campaign_id = new_id(int(now * 1000))
        state = "scheduled" if start_at > now else "running"
        body_out = spec.model_dump(mode="json") | {"audience": stored_audience}
        # Each variant is the version it was when the campaign was made (the one its
        # vendors reviewed): a template stored again meanwhile is for later campaigns.
        body_out["variants"] = [
            v | {"version": versions[v["template_id"]]} for v in body_out["variants"]
        ]
        idempotency = (
            IdempotencyRecord(tenant_id, idempotency_key, body_hash, campaign_id, now)
            if idempotency_key is not None
            else None
        )
        try:
            stored, replayed = await self._audience.create_campaign(
                CampaignRow(
                    campaign_id,
                    tenant_id,
                    spec.name,
                    body_out,
                    state,
                    None,
                    0,
                    False,
                    start_at,
                    now,
                    now,
                ),
                idempotency,
            )
        except IdempotencyConflict:  # the same key, another body, at the same moment
            raise idempotency_conflict() from None
        if replayed:  # the same request at the same moment: the first one made it
            return await self._first_answer(tenant_id, stored), True
        self.on_change()
        return {"campaign_id": campaign_id, "state": state}, False

    async def _first_answer(self, tenant_id: str, campaign_id: str) -> dict[str, Any]:
        """What creating the campaign answered: its id and the state it began in. A key the
        tenant used for a single send (the same body, so no campaign) is a conflict."""
        row = await self._audience.get_campaign(tenant_id, campaign_id)
        if row is None:
            raise idempotency_conflict()
        began = "scheduled" if row.start_at > row.created_at else "running"
        return {"campaign_id": row.campaign_id, "state": began}

    async def require(self, tenant_id: str, campaign_id: str) -> CampaignRow:
        row = await self._audience.get_campaign(tenant_id, campaign_id)
        if row is None:
            raise NotFound("no such campaign")
        return row

    async def view(
        self, tenant_id: str, campaign_id: str, *, masked: bool = False
    ) -> dict[str, Any]:
        row = await self.require(tenant_id, campaign_id)
        audience = dict(row.body.get("audience", {}))
        if masked and "recipients" in audience:
            audience["recipients"] = [mask(p) for p in audience["recipients"]]
        return {
            "campaign_id": row.campaign_id,
            "name": row.name,
            "state": row.state,
            "targeted": row.targeted,
            "fan_out_complete": row.fanned_out,
            # every status, zeros too: a client reads counts["suppressed"] without a guard
            "counts": _NO_COUNTS | await self._audience.status_counts(campaign_id),
            "start_at": to_rfc3339(row.start_at),
            "created_at": to_rfc3339(row.created_at),
            "audience": audience,
            **{
                k: row.body.get(k)
                for k in (
                    "variants",
                    "window",
                    "frequency_cap",
                    "ttl_seconds",
                    "variables",
                )
            },
        }

    async def transition(self, tenant_id: str, campaign_id: str, action: str) -> dict[str, Any]:
        row = await self.require(tenant_id, campaign_id)
        now = self._clock.now()
        # a campaign paused before its start resumes waiting for it
        resumed = "scheduled" if row.start_at > now else "running"
        target, expect = {
            "pause": ("paused", ("scheduled", "running")),
            "resume": (resumed, ("paused",)),
            "cancel": ("cancelled", ("scheduled", "running", "paused")),
        }[action]
        if not await self._audience.set_campaign_state(campaign_id, target, now, expect=expect):
            current = (await self.require(tenant_id, campaign_id)).state
            raise Conflict(f"cannot {action} a {current} campaign")
        self.on_change()
        return {"campaign_id": row.campaign_id, "state": target}

    async def stats(self, tenant_id: str, campaign_id: str) -> dict[str, Any]:
        row = await self.require(tenant_id, campaign_id)
        funnel = _Funnel([v["template_id"] for v in row.body["variants"]])
        for template_id, route, provider, status, reason, n in await self._audience.funnel_rows(
            campaign_id
        ):
            funnel.add_message(template_id, route, provider, status, reason, n)
        for template_id, route, provider, kind, total, unique in await self._audience.event_rows(
            campaign_id
        ):
            funnel.add_event(template_id, route, provider, kind, total, unique)
        return {"campaign_id": row.campaign_id, "state": row.state, **funnel.result()}


_NO_COUNTS = {s.value: 0 for s in Status}
# final statuses a message may reach without being handed to a provider, or after it was
# (then it has one): it failed, it was taken back, or no report came before its TTL ran out
_ENDED = ("failed", "revoked", "expired")


def _empty() -> dict[str, Any]:
    return {
        "targeted": 0,
        "suppressed": {"opted_out": 0, "frequency_cap": 0, "no_route": 0},
        "sent": 0,
        "delivered": 0,
        "failed": 0,
        "expired": 0,
        "revoked": 0,
        "displayed": 0,
        "clicked": {"unique": 0, "total": 0},
    }


class _Funnel:
    """The contract's funnel, and ``revoked`` (messages a cancel took back before they were
    sent, or a recall after), so that what was targeted is accounted for; every variant is
    listed, with zeros until its first message."""

    def __init__(self, variants: Sequence[str]) -> None:
        self.total = _empty()
        self.by: dict[str, dict[str, dict[str, Any]]] = {
            "variants": {v: _empty() for v in variants},
            "routes": {},
            "providers": {},
        }

    def _targets(
        self, template_id: str, route: str | None, provider: str | None
    ) -> list[dict[str, Any]]:
        out = [self.total, self.by["variants"].setdefault(template_id, _empty())]
        if route:
            out.append(self.by["routes"].setdefault(route, _empty()))
        if provider:
            out.append(self.by["providers"].setdefault(provider, _empty()))
        return out

    def add_message(
        self,
        template_id: str,
        route: str | None,
        provider: str | None,
        status: str,
        reason: str | None,
        n: int,
    ) -> None:
        for t in self._targets(template_id, route, provider):
            t["targeted"] += n
            if status == "suppressed":
                key = reason if reason in t["suppressed"] else "no_route"
                t["suppressed"][key] += n
            if status in ("submitted", "delivered") or (status in _ENDED and provider):
                t["sent"] += n
            if status in ("delivered", "failed", "expired", "revoked"):
                t[status] += n

    def add_event(
        self,
        template_id: str,
        route: str | None,
        provider: str | None,
        kind: str,
        total: int,
        unique: int,
    ) -> None:
        for t in self._targets(template_id, route, provider):
            if kind == "displayed":
                t["displayed"] += unique
            else:
                t["clicked"]["total"] += total
                t["clicked"]["unique"] += unique

    def result(self) -> dict[str, Any]:
        return {**self.total, **self.by}
