"""The store port: everything the use cases need from persistence.

Two implementations keep each other honest: ``SqliteStore`` (the embedded
default) and ``MemoryStore`` (for fast service tests). ``tests/contract``
runs one suite against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.dispatch.ports import DeliveryReport
from gateway.domain.messages import (
    IdempotencyRecord,
    MessageView,
    NewMessage,
    Outcome,
    QueuedMessage,
)


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    tenant_id: str
    template_id: str
    version: int
    body: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class AcceptResult:
    message_id: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What one delivery report did: ``applied`` False for duplicates and unknown ids."""

    message_id: str
    applied: bool
    status: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True, slots=True)
class LinkRecord:
    token: str
    tenant_id: str
    message_id: str
    button: str
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class ReviewState:
    """One vendor's review of one template version.

    ``state``: pending (to submit), submitted (waiting for the verdict), approved,
    rejected, or not_applicable (the vendor cannot show this kind of card at all).
    """

    tenant_id: str
    template_id: str
    version: int
    vendor: str
    state: str
    reason: str | None
    review_id: str | None
    attempts: int
    next_at: float
    updated_at: float

    @property
    def template_ref(self) -> str:
        return f"{self.tenant_id}:{self.template_id}:v{self.version}"


def parse_template_ref(ref: str) -> tuple[str, str, int] | None:
    parts = ref.split(":")
    if len(parts) != 3 or not parts[2].startswith("v") or not parts[2][1:].isdigit():
        return None
    return parts[0], parts[1], int(parts[2][1:])


@dataclass(frozen=True, slots=True)
class LogFilter:
    campaign_id: str | None = None
    status: str | None = None
    provider: str | None = None
    route: str | None = None
    to: str | None = None
    since: float | None = None
    until: float | None = None


LOG_COLUMNS = (
    "message_id",
    "to",
    "status",
    "reason",
    "route",
    "provider",
    "campaign_id",
    "template_id",
    "template_version",
    "client_ref",
    "category",
    "created_at",
    "updated_at",
)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


class DuplicateTenant(Exception):
    pass


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    # tenants and keys
    async def create_tenant(
        self, tenant_id: str, keys: Sequence[tuple[str, str]], now: float
    ) -> None: ...
    async def add_keys(
        self, tenant_id: str, keys: Sequence[tuple[str, str]], now: float
    ) -> None: ...
    async def find_key(self, key_hash: str) -> tuple[str, str] | None: ...
    async def tenant_exists(self, tenant_id: str) -> bool: ...
    # the key gone for good: its (tenant, role), or None if there was no such key
    async def revoke_key(self, key_hash: str) -> tuple[str, str] | None: ...
    # console sessions ended early: kept until they would have expired (expired ones go)
    async def sign_out(self, session_hash: str, until: float, now: float) -> None: ...
    async def is_signed_out(self, session_hash: str) -> bool: ...
    async def get_settings(self, tenant_id: str) -> dict[str, Any]: ...
    async def put_settings(self, tenant_id: str, settings: dict[str, Any]) -> None: ...
    # the tenant's deferred messages due again now (its quiet hours changed); how many
    async def wake_deferred(self, tenant_id: str, now: float) -> int: ...

    # brands
    async def put_brand(
        self, tenant_id: str, brand_id: str, body: dict[str, Any], now: float
    ) -> None: ...
    async def get_brand(self, tenant_id: str, brand_id: str) -> dict[str, Any] | None: ...
    async def list_brands(self, tenant_id: str) -> list[tuple[str, dict[str, Any]]]: ...

    # templates: every put is a new immutable version
    async def put_template(
        self,
        tenant_id: str,
        template_id: str,
        body: dict[str, Any],
        now: float,
        reviews: dict[str, str | None] | None = None,
    ) -> TemplateRecord:
        """Stores a new version and, in the same transaction, its vendors' review rows:
        ``reviews`` maps vendor → None (to submit) or a reason it is not applicable."""
        ...

    async def get_template(
        self, tenant_id: str, template_id: str, version: int | None = None
    ) -> TemplateRecord | None: ...
    async def list_templates(self, tenant_id: str) -> list[TemplateRecord]: ...

    # vendors' reviews
    async def reviews_for(
        self, tenant_id: str, template_id: str, version: int
    ) -> list[ReviewState]: ...
    async def due_reviews(self, now: float, limit: int) -> list[ReviewState]: ...
    async def update_review(self, review: ReviewState) -> None: ...
    async def find_review(self, vendor: str, review_id: str) -> ReviewState | None: ...

    # portability: a tenant's override of the carrier of a ported number
    async def set_portability(
        self, tenant_id: str, number: str, carrier: str | None, now: float
    ) -> None: ...
    async def portability(self, tenant_id: str, numbers: Sequence[str]) -> dict[str, str]: ...

    # tracked links
    async def find_link(self, token: str) -> LinkRecord | None: ...
    async def revoke_pending(self, tenant_id: str, message_id: str, now: float) -> str | None:
        """Revokes a message not yet handed over: "revoked_now", "in_flight", a status, None."""
        ...

    async def mark_revoked(
        self, message_id: str, now: float, data: dict[str, Any], recalled: bool
    ) -> bool: ...

    async def reply_target(
        self, phone: str, in_reply_to: str | None = None
    ) -> tuple[str, str] | None:
        """(message_id, tenant_id) of the message a reply from ``phone`` answers: the one
        the provider names, else the newest (marketing first) if only one tenant wrote to
        it; None if nobody did, or if two tenants could own the reply."""
        ...

    async def record_reply(
        self,
        message_id: str,
        at: float,
        data: dict[str, Any],
        *,
        provider: str,
        provider_ref: str | None,
    ) -> bool:
        """A ``replied`` event; False (and nothing recorded) if this provider's reply
        ``provider_ref`` was recorded before (providers deliver callbacks at least once)."""
        ...

    async def record_clicks(self, clicks: Sequence[tuple[LinkRecord, float, str | None]]) -> None:
        """``clicked`` events; each recipient's ``last_clicked_at`` and route where stored."""
        ...

    # messages
    async def accept(
        self, message: NewMessage, idempotency: IdempotencyRecord | None = None
    ) -> AcceptResult:
        """Stores the message, its first event and its queue entry in one transaction.

        With an idempotency record whose key exists already: the earlier message
        (``replayed=True``) if the request hash matches, else ``IdempotencyConflict``.
        """
        ...

    async def get_message(self, tenant_id: str, message_id: str) -> MessageView | None: ...
    async def list_messages(
        self, tenant_id: str, where: LogFilter, before: str | None, limit: int
    ) -> list[tuple[Any, ...]]:
        """Newest first, strictly older than message id ``before``; rows in ``LOG_COLUMNS``."""
        ...

    async def get_idempotency(self, tenant_id: str, key: str) -> IdempotencyRecord | None: ...
    async def purge_idempotency(self, before: float) -> int: ...

    # dispatch
    async def release_leases(self) -> int: ...
    async def claim_due(
        self, now: float, limit: int, lease_until: float
    ) -> list[QueuedMessage]: ...
    async def next_due(self) -> float | None: ...
    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None: ...

    # events in
    async def apply_reports(
        self, provider: str, reports: Sequence[DeliveryReport], now: float
    ) -> list[ReportResult]: ...
