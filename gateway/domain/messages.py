"""Messages, their statuses and the forward-only ladder between them (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    ACCEPTED = "accepted"
    DEFERRED = "deferred"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUPPRESSED = "suppressed"


FINAL = frozenset(
    {Status.DELIVERED, Status.FAILED, Status.EXPIRED, Status.REVOKED, Status.SUPPRESSED}
)
PENDING = frozenset({Status.ACCEPTED, Status.DEFERRED})

_RANK = {
    Status.ACCEPTED: 0,
    Status.DEFERRED: 1,
    Status.SUBMITTED: 2,
}


def can_move(current: str, new: str) -> bool:
    """Statuses only move forward: a late ``submitted`` never overwrites ``delivered``.

    ``deferred`` and ``accepted`` may alternate (a deferred message wakes up);
    a final status is never left.
    """
    cur, nxt = Status(current), Status(new)
    if cur in FINAL:
        return False
    if nxt in FINAL:
        return True
    if cur in PENDING and nxt in PENDING:
        return True
    return _RANK[nxt] > _RANK[cur]


class Category(StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


@dataclass(frozen=True, slots=True)
class Rendered:
    """What a message keeps of its rendering: the SMS text, and the card (tracked links
    in place) with the brand and kind, from which any rich route's payload is built."""

    text: str
    card: dict[str, Any] | None = None
    kind: str = "standard"
    brand: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "kind": self.kind, "brand": self.brand}
        if self.card is not None:
            out["card"] = self.card
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rendered:
        return cls(
            data.get("text", ""),
            data.get("card"),
            data.get("kind", "standard"),
            data.get("brand", {}),
            data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Link:
    """A tracked link minted for one message: the token stands for ``url``."""

    token: str
    url: str
    button: str
    label: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as accepted, before anything is sent."""

    id: str
    tenant_id: str
    to: str
    category: str
    template_id: str
    template_version: int
    rendered: Rendered
    created_at: float
    due_at: float
    expires_at: float
    route_pref: tuple[str, ...] = ()
    client_ref: str | None = None
    campaign_id: str | None = None
    status: str = Status.ACCEPTED
    reason: str | None = None
    links: tuple[Link, ...] = ()
    timezone: str | None = None  # the recipient's, for send windows and quiet hours
    policy: dict[str, Any] | None = None  # a campaign's window and frequency cap


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    tenant_id: str
    to: str
    status: str
    reason: str | None
    route: str | None
    provider: str | None
    provider_ref: str | None
    category: str
    template_id: str
    template_version: int
    campaign_id: str | None
    client_ref: str | None
    rendered: dict[str, Any]
    created_at: float
    updated_at: float
    expires_at: float
    events: list[Event]


@dataclass(slots=True)
class QueuedMessage:
    """A message claimed by the dispatcher, with what it needs to send it.

    Not frozen, and not to be changed: a frozen dataclass sets each field through
    ``object.__setattr__``, which tripled the cost of the thousands claimed a second.
    """

    id: str
    tenant_id: str
    to: str
    category: str
    # the rendering as stored (JSON, UTF-8): parsed when the route is planned, so a claimed
    # message waiting to be sent holds ~0.75 KB of JSON, not a ~3 KB parsed card
    rendered: bytes
    route_pref: tuple[str, ...]
    attempts: int
    expires_at: float
    status: str
    template_id: str = ""
    template_version: int = 0
    stage: str = "send"  # "send", or "rich_wait": a rich route's delivery report is awaited
    exclude: tuple[str, ...] = ()  # routes this message already gave up on
    ref_suffix: int = 0  # > 0 once a submission was accepted: fallbacks need a fresh reference
    route: str | None = None
    provider: str | None = None
    campaign_id: str | None = None
    timezone: str | None = None
    policy: dict[str, Any] | None = None

    @property
    def client_ref(self) -> str:
        """The reference a provider deduplicates on: the message id, suffixed (``id.1``) for
        the SMS after a rich submission was accepted. Not only when the same carrier took
        the rich one as recorded: a carrier may have taken its 5G message unrecorded (a
        crash, a lost acknowledgement) before a vendor's card was chosen, and a provider
        never hands one reference to a phone twice, so it would drop the SMS as a repeat."""
        return self.id if not self.ref_suffix else f"{self.id}.{self.ref_suffix}"


def message_id_of(client_ref: str) -> str:
    return client_ref.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    tenant_id: str
    key: str
    request_hash: str
    message_id: str
    created_at: float


@dataclass(slots=True)  # not frozen: one a message handed over (see QueuedMessage); not changed
class Submitted:
    message_id: str
    provider: str
    route: str
    provider_ref: str | None
    at: float
    attempt: int
    fallbacks: tuple[tuple[str, str], ...] = ()  # preferred routes passed over: (route, reason)
    # a rich route falls back to the SMS if no report came by then; an SMS with no report
    # by then (its expiry) is expired: no message stays submitted for ever
    wait_until: float | None = None
    client_ref: str | None = None  # the reference the provider has it under


@dataclass(frozen=True, slots=True)
class Reroute:
    """A rich route gave up on the message: try the next route now, without this one."""

    message_id: str
    at: float
    route: str
    provider: str
    reason: str
    ref_suffix: int


@dataclass(frozen=True, slots=True)
class Deferred:
    """Outside its send window or in quiet hours: the message waits until ``until``."""

    message_id: str
    until: float
    at: float


@dataclass(frozen=True, slots=True)
class Settled:
    """A rich route's wait ended with the message already final: nothing left to do."""

    message_id: str


@dataclass(frozen=True, slots=True)
class Failed:
    message_id: str
    reason: str
    at: float
    provider: str | None = None
    route: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    message_id: str
    due_at: float
    at: float
    provider: str
    error: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Expired:
    message_id: str
    at: float
    reason: str = "ttl"  # or "no_report": handed over, but no report came before its expiry


@dataclass(frozen=True, slots=True)
class Suppressed:
    message_id: str
    reason: str
    at: float


Outcome = Submitted | Failed | Retry | Expired | Suppressed | Reroute | Settled | Deferred


def fallback_event(o: Submitted) -> dict[str, Any]:
    """One ``fallback`` event for the preferred routes a submission passed over."""
    (first, reason), *_ = o.fallbacks
    return {
        "from": first,
        "to": o.route,
        "reason": reason,
        "skipped": [{"route": r, "reason": why} for r, why in o.fallbacks],
    }


# The lease a process that is gone held, as a restart leaves it: due at once (it is far in
# the past), and still telling that the message was claimed for a hand-over, so a report
# that overtook the acknowledgement and comes again after the restart is still placed.
RELEASED_LEASE = 1.0


def report_fits(
    current_provider: str | None,
    current_ref: str | None,
    lease_until: float | None,
    provider: str,
    provider_ref: str,
) -> bool:
    """Whether a report is about the message's current hand-over: from its provider, under
    its reference; or, not yet acknowledged, once it was claimed for one (a report may
    overtake the acknowledgement, or come again after a restart). Anything else (a late
    report of an earlier route, another provider's, one for a message no provider was
    given) settles nothing."""
    if current_provider is None:  # claimed for a hand-over, by this process or a dead one
        return lease_until is not None and lease_until >= RELEASED_LEASE
    return current_provider == provider and current_ref in (None, provider_ref)


RICH_ROUTES = ("vendor_card", "carrier_rich")  # the routes that carry a card


def wait_stage(route: str) -> str:
    """What a submitted message waits in the queue for: a rich route's report (or else its
    fallback), or an SMS's report (or else its expiry)."""
    return "rich_wait" if route in RICH_ROUTES else "report_wait"
