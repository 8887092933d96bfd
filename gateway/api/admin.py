"""Tenants and keys, for the operator on the gateway's own machine.

``python -m gateway tenant create`` and ``key add`` / ``key revoke`` ask a running gateway
over a Unix socket in ``var/admin/`` (a folder only its owner may enter), so that the
gateway's single SQLite writer makes the change (a second process writing the database
risks SQLite 3.40's WAL-reset bug) and a revoked key is refused at once. With no gateway
running, the commands write the database themselves. Over TCP these paths are a 404.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.api.bodies import json_body
from gateway.api.json import respond
from gateway.errors import InvalidInput, NotFound
from gateway.keys import SERVICES
from gateway.logging import get_logger
from gateway.usecases.tenants import add_key, create_tenant, revoke_key

log = get_logger("gateway.admin")
SOCKET_DIR = "admin"
SOCKET_NAME = "admin.sock"
MAX_SOCKET_PATH = 100  # bytes: Linux takes at most 107 for a Unix socket's path


def socket_path(var_dir: Path) -> Path:
    return var_dir / SOCKET_DIR / SOCKET_NAME


def prepare_socket(var_dir: Path) -> Path | None:
    """The socket's folder, its owner's only, without a socket a stopped gateway left; or
    ``None`` (no socket: the commands then write the database themselves) where the path
    would be too long for a Unix socket."""
    folder = (var_dir / SOCKET_DIR).absolute()
    path = folder / SOCKET_NAME
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        log.warning("admin_socket_path_too_long", path=str(path))
        return None
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    path.unlink(missing_ok=True)
    return path


def _local(request: web.Request) -> None:
    """Only over the Unix socket: its peer name is a path, a TCP peer's an address."""
    transport = request.transport
    if transport is None or not isinstance(transport.get_extra_info("sockname"), str):
        raise NotFound("no such path")


async def _fields(request: web.Request, *names: str) -> list[str]:
    body = await json_body(request)
    values = [body.get(name) if isinstance(body, dict) else None for name in names]
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, str):
            raise InvalidInput.field([name], "a string")
    return values  # type: ignore[return-value]


async def tenants(request: web.Request) -> web.Response:
    _local(request)
    services = request.app[SERVICES]
    [tenant_id] = await _fields(request, "tenant_id")
    out = await create_tenant(services.store, services.clock, tenant_id)
    return respond(out, status=201)


async def keys(request: web.Request) -> web.Response:
    _local(request)
    services = request.app[SERVICES]
    tenant_id, role = await _fields(request, "tenant_id", "role")
    out = await add_key(services.store, services.clock, tenant_id, role)
    return respond(out, status=201)


async def revoke(request: web.Request) -> web.Response:
    _local(request)
    services = request.app[SERVICES]
    [key] = await _fields(request, "key")
    out = await revoke_key(services.store, key)
    services.auth.forget_all()  # refused from the next request on, not after the cache time
    return respond(out)


def register(app: web.Application) -> None:
    app.router.add_post("/admin/tenants", tenants)
    app.router.add_post("/admin/keys", keys)
    app.router.add_post("/admin/keys/revoke", revoke)
