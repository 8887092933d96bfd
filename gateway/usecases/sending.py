"""Accepting a single send: validate, render, persist durably with its queue entry, answer."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from cards.compiled import RenderError
from cards.links import MessageLinks
from cards.targets import render_message
from cards.variables import check_variables
from gateway.clock import Clock
from gateway.dispatch.ports import RouteKind
from gateway.domain.messages import IdempotencyRecord, Link, NewMessage, Rendered, Status
from gateway.domain.phones import InvalidNumber, to_e164
from gateway.domain.routing import preference
from gateway.errors import Conflict, FieldError, InvalidInput
from gateway.ids import new_id
from gateway.storage.base import AcceptResult, IdempotencyConflict, Store
from gateway.usecases.catalog import Catalog, LoadedTemplate, variable_errors
from gateway.usecases.fields import Rfc3339, check_schedule
from gateway.usecases.tenants import Principal


class SendRequest(BaseModel):
    """The body of ``POST /v1/messages``."""

    model_config = ConfigDict(extra="forbid")

    to: StrictStr = Field(min_length=1, max_length=40, examples=["13812345678"])
    template_id: StrictStr = Field(min_length=1, max_length=64)
    variables: dict[str, Any] = Field(default_factory=dict)
    send_at: Rfc3339 | None = None
    ttl_seconds: StrictInt = Field(default=86400, ge=1, le=30 * 86400)
    client_ref: StrictStr | None = Field(default=None, max_length=128)
    route: RouteKind | Annotated[list[RouteKind], Field(min_length=1)] | None = Field(
        default=None, description="one route kind, or a preference list (not empty)"
    )


class SendAccepted(BaseModel):
    message_id: str
    status: str = "accepted"


def request_hash(body: Any) -> str:
    """The same JSON (whatever its key order or spacing) hashes the same."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Sender:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        clock: Clock,
        on_accepted: Callable[[], None],
        *,
        link_base_url: str,
    ) -> None:
        self._links = link_base_url
        self._store = store
        self._catalog = catalog
        self._clock = clock
        self._on_accepted = on_accepted

    async def send(
        self,
        principal: Principal,
        req: SendRequest,
        *,
        idempotency_key: str | None = None,
        body_hash: str = "",
    ) -> AcceptResult:
        tenant = principal.tenant_id
        if idempotency_key is not None:
            earlier = replay_of(
                await self._store.get_idempotency(tenant, idempotency_key), body_hash
            )
            if earlier is not None:
                return AcceptResult(earlier, replayed=True)

        try:
            to = to_e164(req.to)
        except InvalidNumber as exc:
            raise InvalidInput.field(["to"], str(exc)) from None
        loaded = await self._catalog.template(tenant, req.template_id)
        if loaded is None:
            raise InvalidInput.field(["template_id"], f"no template {req.template_id!r}")
        spec = loaded.spec
        context, problems = check_variables(spec.variables, req.variables, only_declared=True)
        if problems:
            raise variable_errors(problems)
        brand = await self._catalog.brand(tenant, spec.brand_id)
        brand_info = brand.model_dump(mode="json") if brand else {"name": "", "signature": ""}

        now = self._clock.now()
        check_schedule(req.send_at, now, "send_at")
        due_at = max(now, req.send_at.timestamp()) if req.send_at else now
        status, reason, rendered, links = render_for_send(loaded, brand_info, context, self._links)

        routes = req.route if isinstance(req.route, list) else [req.route] if req.route else None
        message = NewMessage(
            id=new_id(int(now * 1000)),
            tenant_id=tenant,
            to=to,
            category=spec.category,
            template_id=req.template_id,
            template_version=loaded.record.version,
            rendered=rendered,
            created_at=now,
            due_at=due_at,
            expires_at=due_at + req.ttl_seconds,
            route_pref=preference(routes, spec.routes),
            client_ref=req.client_ref,
            status=status,
            reason=reason,
            links=links,
        )
        idem = (
            IdempotencyRecord(tenant, idempotency_key, body_hash, message.id, now)
            if idempotency_key is not None
            else None
        )
        try:
            result = await self._store.accept(message, idem)
        except IdempotencyConflict:
            raise idempotency_conflict() from None
        if not result.replayed and status == Status.ACCEPTED:
            self._on_accepted()
        return result


def replay_of(earlier: IdempotencyRecord | None, body_hash: str) -> str | None:
    """What an Idempotency-Key made before, for the same request (Stripe's semantics): the
    resource's id to answer again; None if the key is new; 409 if it came with another body."""
    if earlier is None:
        return None
    if earlier.request_hash != body_hash:
        raise idempotency_conflict()
    return earlier.message_id


def idempotency_conflict() -> Conflict:
    return Conflict(
        "this Idempotency-Key was used with a different request body",
        [FieldError(("header", "Idempotency-Key"), "reused with a different body")],
    )


def render_for_send(
    loaded: LoadedTemplate, brand: dict[str, Any], context: dict[str, Any], link_base_url: str
) -> tuple[str, str | None, Rendered, tuple[Link, ...]]:
    """Status, reason, what the message keeps of its rendering, and its tracked links.

    A template that fails to render gives a failed message (``render_error``), never a crash.
    """
    try:
        out = render_message(loaded.compiled, brand, context, MessageLinks(link_base_url))
    except RenderError as exc:
        failed = Rendered("", None, loaded.spec.kind, brand, error=str(exc))
        return Status.FAILED, "render_error", failed, ()
    links = tuple(Link(k.token, k.url, k.button, k.label) for k in out.links)
    return Status.ACCEPTED, None, Rendered(out.text, out.card, out.kind, out.brand), links
