"""Tenants and their API keys. Keys are random, shown once, and stored only as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from gateway.storage.base import DuplicateTenant, Store

ROLES = ("campaign", "ops")
_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def hash_key(key: str) -> str:
    """Keys carry 190 bits of randomness, so a fast hash is the right one (no stretching)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(role: str) -> str:
    return f"gw_{role}_{secrets.token_urlsafe(24)}"


async def create_tenant(store: Store, clock: Clock, tenant_id: str) -> dict[str, str]:
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidInput.field(["tenant_id"], "lowercase letters, digits, - and _, at most 63")
    keys = {role: new_key(role) for role in ROLES}
    try:
        await store.create_tenant(
            tenant_id, [(hash_key(k), role) for role, k in keys.items()], clock.now()
        )
    except DuplicateTenant:
        raise Conflict(f"tenant {tenant_id!r} exists already") from None
    return {"tenant_id": tenant_id, "campaign_key": keys["campaign"], "ops_key": keys["ops"]}


async def add_key(store: Store, clock: Clock, tenant_id: str, role: str) -> dict[str, str]:
    """A new key for a tenant (to rotate one: add the new key, move the clients, revoke the
    old one). Shown once, as ``create_tenant`` shows its keys."""
    if role not in ROLES:
        raise InvalidInput.field(["role"], f"one of {', '.join(ROLES)}")
    if not await store.tenant_exists(tenant_id):
        raise NotFound(f"no tenant {tenant_id!r}")
    key = new_key(role)
    await store.add_keys(tenant_id, [(hash_key(key), role)], clock.now())
    return {"tenant_id": tenant_id, "role": role, "key": key}


async def revoke_key(store: Store, key: str) -> dict[str, str | bool]:
    """The key stops working: at once for the console; for the API at once where the gateway
    revoked it itself (its admin socket clears its key cache), else within that cache's
    time (``Authenticator``'s ``ttl_s``)."""
    found = await store.revoke_key(hash_key(key.strip()))
    if found is None:
        raise NotFound("no such key (it may have been revoked already)")
    return {"tenant_id": found[0], "role": found[1], "revoked": True}


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    role: str


class Authenticator:
    """Resolves bearer keys to principals, with a short cache so the send path reads no table."""

    def __init__(self, store: Store, ttl_s: float = 30.0, max_entries: int = 10_000) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._max = max_entries
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    def forget_all(self) -> None:
        """Every key is looked up again (one was revoked)."""
        self._cache.clear()

    async def authenticate(self, authorization: str | None) -> Principal:
        # the scheme's name is case-insensitive (RFC 9110 §11.1)
        if not authorization or authorization[:7].lower() != "bearer ":
            raise Unauthenticated("send Authorization: Bearer <api key>")
        now = time.monotonic()
        hit = self._cache.get(authorization)  # by the header itself: no hashing on a hit
        if hit is not None and hit[1] > now:
            principal = hit[0]
        else:
            found = await self._store.find_key(hash_key(authorization[7:].strip()))
            principal = Principal(*found) if found else None
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[authorization] = (principal, now + self._ttl_s)
        if principal is None:
            raise Unauthenticated("unknown API key")
        return principal


def require_role(principal: Principal, roles: tuple[str, ...]) -> None:
    if principal.role not in roles:
        raise Forbidden(f"this needs a {' or '.join(roles)} key; yours is {principal.role}")
