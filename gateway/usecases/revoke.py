"""Withdrawing a message: a stale OTP, a cancelled offer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.clock import Clock
from gateway.dispatch.ports import Provider
from gateway.errors import Conflict, NotFound, ProviderError
from gateway.storage.base import Store


async def revoke(
    store: Store, providers: Mapping[str, Provider], clock: Clock, tenant_id: str, message_id: str
) -> dict[str, Any]:
    """Revoked at once if it has not reached a provider; otherwise the provider is asked to
    recall it, and its answer recorded (``revoked`` or ``revoke_refused``)."""
    found = await store.revoke_pending(tenant_id, message_id, clock.now())
    if found is None:
        raise NotFound("no such message")
    if found == "revoked_now":
        return {"message_id": message_id, "status": "revoked", "recalled": True}
    if found == "in_flight":
        raise Conflict("the message is being handed to its provider this moment; try again")
    if found != "submitted":
        raise Conflict(f"the message is {found} already")
    view = await store.get_message(tenant_id, message_id)
    assert view is not None
    provider = providers.get(view.provider or "")
    submitted = [e for e in view.events if e.type == "submitted"]
    client_ref = submitted[-1].data.get("client_ref", message_id) if submitted else message_id
    recall = getattr(provider, "recall", None)
    if recall is None:
        recalled, reason = False, "provider_cannot_recall"
    else:
        try:
            recalled, reason = await recall(client_ref)
        except ProviderError as exc:
            recalled, reason = False, f"provider_error: {exc.code}"
    data = {"provider": view.provider, "recalled": recalled, "reason": reason}
    moved = await store.mark_revoked(message_id, clock.now(), data, recalled)
    status = "revoked" if moved else (await store.get_message(tenant_id, message_id)).status  # type: ignore[union-attr]
    return {"message_id": message_id, "status": status, "recalled": recalled, "reason": reason}
