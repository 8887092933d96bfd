"""The provider port: what the dispatcher needs from a carrier or a handset vendor.

Implementations live in ``providers/`` (HTTP clients of real or mock
providers) and ``tests/fakes.py`` (in-memory). Adapters raise
``RetryableProviderError`` / ``PermanentProviderError``; only the dispatcher
decides whether and when to retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.errors import ProviderError

RouteKind = Literal["vendor_card", "carrier_rich", "sms"]
ReportStatus = Literal["delivered", "failed", "displayed"]


@dataclass(slots=True)  # not frozen: built thousands a second (see QueuedMessage); not changed
class Submission:
    """One message handed to a provider. ``message_id`` is the provider's dedupe reference."""

    message_id: str
    to: str  # E.164
    route: RouteKind
    text: str
    payload: dict[str, Any] | None = None


@dataclass(slots=True)  # not frozen: one a message (see QueuedMessage); not changed
class SubmitOutcome:
    """The provider's answer for one submission of a batch: a reference, or an error."""

    message_id: str
    provider_ref: str | None = None
    error: ProviderError | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    message_id: str
    provider_ref: str
    status: ReportStatus
    at: str | None = None  # RFC 3339 as the provider reported it
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A reply from a phone (MO)."""

    from_number: str
    text: str
    provider_ref: str | None = None
    at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # the reference of the message the phone answered, as the provider knows the thread (a
    # real carrier's reply names the sender's sub-code): which bank the reply is for
    in_reply_to: str | None = None


class Provider(Protocol):
    name: str
    routes: frozenset[RouteKind]
    max_batch: int

    async def submit(self, batch: Sequence[Submission], callback_url: str) -> list[SubmitOutcome]:
        """Submit up to ``max_batch`` messages in one request.

        Raises ``RetryableProviderError`` when the whole batch should be tried
        again (timeout, 5xx, 429) and ``PermanentProviderError`` when none of it
        ever will; per-message refusals come back as ``SubmitOutcome.error``.
        """
        ...

    def verify(self, body: bytes, signature: str | None) -> bool:
        """Whether ``signature`` is this provider's HMAC of ``body`` (constant time)."""
        ...

    def parse_reports(self, body: bytes) -> list[DeliveryReport]:
        """Delivery reports in a verified callback body; ``ValueError`` if malformed."""
        ...

    def parse_inbound(self, body: bytes) -> list[InboundMessage]:
        """Replies in a verified MO callback body; ``ValueError`` if malformed."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ReviewResult:
    """A vendor's verdict on one template version (``template_ref`` as we submitted it)."""

    template_ref: str
    status: Literal["approved", "rejected"]
    reason: str | None = None
    review_id: str | None = None


class CapabilityProvider(Protocol):
    """A provider that can tell which numbers can show its rich messages."""

    name: str
    max_lookup: int

    async def lookup_capability(self, numbers: Sequence[str]) -> dict[str, bool]:
        """Whether each E.164 number can show this provider's rich route (up to ``max_lookup``).

        Implementations may send the numbers hashed (SHA-256), as vendors ask for privacy;
        the answer is keyed by the numbers as given. Raises ``RetryableProviderError`` or
        ``PermanentProviderError`` like ``submit``.
        """
        ...


class TemplateReviewer(Protocol):
    """A provider that reviews each template version before it will render it."""

    name: str

    async def submit_review(
        self,
        template_ref: str,
        category: str,
        card: dict[str, Any],
        sms_text: str,
        callback_url: str,
    ) -> str:
        """Submits one version for review; answers the provider's review id."""
        ...

    def parse_reviews(self, body: bytes) -> list[ReviewResult]:
        """Verdicts in a verified review callback body; ``ValueError`` if malformed."""
        ...
