"""``python -m providers serve [--host H] [--port P]``: run the mock providers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.eventloop import new_event_loop
from gateway.heap import freeze_startup_heap
from providers.mock.config import load_behaviours
from providers.mock.server import create_mock_app
from providers.settings import MockSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m providers")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the mock carriers and vendors")
    serve.add_argument("--host", help="listen address (GATEWAY_MOCK_HOST)")
    serve.add_argument("--port", type=int, help="listen port (GATEWAY_MOCK_PORT)")
    args = parser.parse_args(argv)

    settings = MockSettings()
    host = args.host or settings.mock_host
    port = args.port if args.port is not None else settings.mock_port
    try:
        behaviours = load_behaviours(settings.mock_config)
    except (OSError, ValueError) as exc:
        print(f"mock providers: {exc}", file=sys.stderr)
        return 2
    app = create_mock_app(settings, behaviours)
    # The mock remembers every message it took (dedupe, inboxes): without this, its full
    # collections grew with that state, 0.8 s of a 50,000-message drain's 4 s of CPU.
    freeze_startup_heap()

    def announce(_message: str) -> None:
        print(f"mock providers listening on http://{host}:{port}", flush=True)

    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=announce,
        loop=new_event_loop(settings.event_loop),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
