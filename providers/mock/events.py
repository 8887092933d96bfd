"""What the mock providers call back with, in each provider family's own wire style.

Each event names the ``envelope`` key its batch goes under and renders itself
when it is due (so its timestamp is the time it was sent):

* carriers: ``{"reports": [{"client_ref", "msg_id", "status", "error_code", "done_at"}]}``
  with ``status`` ``DELIVRD`` / ``UNDELIV`` / ``DISPLAYED``;
* vendors: ``{"events": [{"ref", "id", "state", "reason", "timestamp"}]}``
  with ``state`` ``DELIVERED`` / ``FAILED`` / ``DISPLAYED``;
* vendors' template reviews: ``{"reviews": [{"review_id", "template_ref", "status", "reason"}]}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from providers.mock.state import utc_now


class Event(Protocol):
    """One item of a callback batch."""

    envelope: ClassVar[str]

    def render(self) -> dict[str, Any]: ...


class DeliveryStyle(Protocol):
    """How a provider family words delivery: one constructor per outcome."""

    @classmethod
    def delivered(cls, client_ref: str, msg_id: str) -> Event: ...

    @classmethod
    def failed(cls, client_ref: str, msg_id: str) -> Event: ...

    @classmethod
    def displayed(cls, client_ref: str, msg_id: str) -> Event: ...


@dataclass(frozen=True, slots=True)
class CarrierReport:
    """A carrier's delivery report (SMPP-like statuses)."""

    envelope: ClassVar[str] = "reports"

    client_ref: str
    msg_id: str
    status: str  # "DELIVRD", "UNDELIV" or "DISPLAYED"
    error_code: str | None = None

    @classmethod
    def delivered(cls, client_ref: str, msg_id: str) -> CarrierReport:
        return cls(client_ref, msg_id, "DELIVRD")

    @classmethod
    def failed(cls, client_ref: str, msg_id: str) -> CarrierReport:
        return cls(client_ref, msg_id, "UNDELIV", "UNDELIV:001")

    @classmethod
    def displayed(cls, client_ref: str, msg_id: str) -> CarrierReport:
        return cls(client_ref, msg_id, "DISPLAYED")

    def render(self) -> dict[str, Any]:
        return {
            "client_ref": self.client_ref,
            "msg_id": self.msg_id,
            "status": self.status,
            "error_code": self.error_code,
            "done_at": utc_now(),
        }


@dataclass(frozen=True, slots=True)
class VendorEvent:
    """A handset vendor's delivery event."""

    envelope: ClassVar[str] = "events"

    ref: str
    id: str
    state: str  # "DELIVERED", "FAILED" or "DISPLAYED"
    reason: str | None = None

    @classmethod
    def delivered(cls, client_ref: str, msg_id: str) -> VendorEvent:
        return cls(client_ref, msg_id, "DELIVERED")

    @classmethod
    def failed(cls, client_ref: str, msg_id: str) -> VendorEvent:
        return cls(client_ref, msg_id, "FAILED", "device_unreachable")

    @classmethod
    def displayed(cls, client_ref: str, msg_id: str) -> VendorEvent:
        return cls(client_ref, msg_id, "DISPLAYED")

    def render(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "timestamp": utc_now(),
        }


@dataclass(frozen=True, slots=True)
class ReviewVerdict:
    """A vendor's verdict on one template version."""

    envelope: ClassVar[str] = "reviews"

    review_id: str
    template_ref: str
    status: str  # "approved" or "rejected"
    reason: str | None = None

    def render(self) -> dict[str, Any]:
        return {
            "review_id": self.review_id,
            "template_ref": self.template_ref,
            "status": self.status,
            "reason": self.reason,
        }
