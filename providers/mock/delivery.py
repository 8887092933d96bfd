"""Taking one message of a batch, and scheduling what the phone will report about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from providers.mock.events import DeliveryStyle
from providers.mock.runtime import OUTBOX, RUNTIME

Result = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message of a batch, already found deliverable."""

    client_ref: str
    to: str
    route: str  # "sms", "carrier_rich" or "vendor_card"
    content: dict[str, Any]  # what the phone's inbox records


def is_object(value: object) -> bool:
    """Whether ``value`` is a non-empty JSON object (a card or a chatbot message)."""
    return isinstance(value, dict) and bool(value)


def rejected(client_ref: str, code: str) -> Result:
    return {"client_ref": client_ref, "status": "rejected", "code": code}


def remember_callback(app: web.Application, provider: str, callback_url: str) -> None:
    """Where the provider's MO goes when ``/_mock/mo`` names no callback URL."""
    app[RUNTIME].state.callback_bases[provider] = str(URL(callback_url).origin())


def accept(
    app: web.Application,
    provider: str,
    callback_url: str,
    message: Incoming,
    style: type[DeliveryStyle],
    *,
    displayable: bool,
) -> Result:
    """Take ``message`` (deduped by ``client_ref``) and, if new, schedule its reports.

    After ``dlr_delay_ms`` it is delivered, or failed with ``dlr_failure_rate``;
    a delivered ``displayable`` (rich) message is then displayed with
    ``display_rate``, after a further ``dlr_delay_ms``.
    """
    rt = app[RUNTIME]
    accepted = rt.state.accept(
        provider, message.client_ref, message.to, message.route, message.content
    )
    if accepted.is_new:
        behaviour = rt.behaviour(provider)
        delay_s = behaviour.dlr_delay_ms / 1000
        ref, msg_id = message.client_ref, accepted.msg_id
        outbox = app[OUTBOX]
        if rt.chance(behaviour.dlr_failure_rate):
            outbox.schedule(delay_s, provider, callback_url, style.failed(ref, msg_id), ref=ref)
        else:
            shown = displayable and rt.chance(behaviour.display_rate)
            then = (delay_s, style.displayed(ref, msg_id)) if shown else None
            outbox.schedule(
                delay_s, provider, callback_url, style.delivered(ref, msg_id), then=then, ref=ref
            )
    return {"client_ref": message.client_ref, "msg_id": accepted.msg_id, "status": "accepted"}
