"""``python -m gateway serve|tenant create``: the gateway's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from gateway.api import admin
from gateway.app import build_store, create_app, ensure_var_dir
from gateway.clock import SystemClock
from gateway.demo import seed_demo_on_startup
from gateway.demo_media import serve_demo_media
from gateway.errors import GatewayError
from gateway.eventloop import new_event_loop
from gateway.heap import freeze_startup_heap, tune_allocator
from gateway.logging import configure_logging
from gateway.settings import Settings
from gateway.storage.base import Store
from gateway.usecases.tenants import ROLES, add_key, create_tenant, revoke_key


def _start_mock_providers(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GATEWAY_MOCK_PORT=str(settings.mock_port))
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "providers",
            "serve",
            "--host",
            settings.mock_host,
            "--port",
            str(settings.mock_port),
        ],
        env=env,
    )
    deadline = time.monotonic() + 15
    url = f"{settings.mock_base_url}/healthz"
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"mock providers exited with {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=0.5):
                return child
        except OSError:
            time.sleep(0.1)
    child.terminate()
    raise SystemExit("mock providers did not start within 15 s")


async def _frozen_heap(_: web.Application) -> AsyncIterator[None]:
    """The startup heap frozen before any worker starts, and the allocator's thresholds
    fixed (see ``gateway.heap``)."""
    freeze_startup_heap()
    tune_allocator()
    yield


def _admin_socket(app: web.Application, settings: Settings) -> str | None:
    """The admin socket's path, removed again when the gateway stops."""
    path = admin.prepare_socket(settings.var_dir)
    if path is None:
        return None

    async def remove(_: web.Application) -> None:
        path.unlink(missing_ok=True)

    app.on_cleanup.append(remove)
    return str(path)


def serve(args: argparse.Namespace) -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    ensure_var_dir(settings)
    child = _start_mock_providers(settings) if args.with_mock_providers else None
    try:
        app = create_app(settings)
        if args.seed_demo:
            serve_demo_media(app)
            app.on_startup.append(seed_demo_on_startup)
        app.cleanup_ctx.insert(0, _frozen_heap)  # before storage, dispatcher and the rest
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            path=_admin_socket(app, settings),  # for the tenant and key commands
            access_log=None,
            print=None,
            shutdown_timeout=settings.drain_timeout_s,
            loop=new_event_loop(settings.event_loop),
        )
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


async def _with_store(action: Callable[[Store], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Runs one tenant or key command against the configured database."""
    settings = Settings()
    ensure_var_dir(settings)
    store = build_store(settings)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


class _NoGateway(Exception):
    pass


async def _ask_gateway(path: str, body: dict[str, str]) -> dict[str, Any]:
    """The running gateway's answer over its admin socket (``gateway/api/admin.py``)."""
    sock = admin.socket_path(Settings().var_dir)
    if not sock.exists():
        raise _NoGateway
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session,
            session.post(f"http://gateway{path}", json=body) as resp,
        ):
            out: dict[str, Any] = await resp.json(content_type=None)
    except aiohttp.ClientConnectorError:  # a socket a killed gateway left behind
        raise _NoGateway from None
    if resp.status >= 400:
        raise GatewayError(str(out.get("detail", out)))
    return out


def _admin(
    path: str, body: dict[str, str], action: Callable[[Store], Awaitable[dict[str, Any]]]
) -> None:
    """Asks the running gateway to make the change (its one writer makes it, and a revoked key
    is refused at once); with none running, makes it in the database directly. Prints the
    JSON answer, or the error as JSON on stderr with exit status 1."""
    configure_logging("warning")
    try:
        try:
            out = asyncio.run(_ask_gateway(path, body))
        except _NoGateway:
            out = asyncio.run(_with_store(action))
    except GatewayError as exc:
        print(json.dumps({"error": exc.detail}), file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gateway")
    p_serve.add_argument(
        "--with-mock-providers",
        action="store_true",
        help="also start the mock providers, as a child process",
    )
    p_serve.add_argument(
        "--seed-demo",
        action="store_true",
        help="create the demo tenant, brand and templates; print the keys",
    )
    p_tenant = sub.add_parser("tenant", help="manage tenants")
    tenant_sub = p_tenant.add_subparsers(dest="tenant_command", required=True)
    p_create = tenant_sub.add_parser("create", help="create a tenant and print its keys")
    p_create.add_argument("tenant_id")
    p_key = sub.add_parser("key", help="rotate API keys: add a new one, revoke an old one")
    key_sub = p_key.add_subparsers(dest="key_command", required=True)
    p_add = key_sub.add_parser("add", help="add a key to a tenant and print it")
    p_add.add_argument("tenant_id")
    p_add.add_argument("role", choices=ROLES)
    p_revoke = key_sub.add_parser(
        "revoke", help="revoke a key (read from standard input if not given)"
    )
    p_revoke.add_argument("key", nargs="?")
    args = parser.parse_args(argv)

    if args.command == "serve":
        serve(args)
    elif args.command == "tenant":
        _admin(
            "/admin/tenants",
            {"tenant_id": args.tenant_id},
            lambda store: create_tenant(store, SystemClock(), args.tenant_id),
        )
    elif args.command == "key" and args.key_command == "add":
        _admin(
            "/admin/keys",
            {"tenant_id": args.tenant_id, "role": args.role},
            lambda store: add_key(store, SystemClock(), args.tenant_id, args.role),
        )
    elif args.command == "key":
        # from standard input by default, so the key stays out of the shell's history
        key = (args.key if args.key is not None else sys.stdin.readline()).strip()
        _admin("/admin/keys/revoke", {"key": key}, lambda store: revoke_key(store, key))


if __name__ == "__main__":
    main()
