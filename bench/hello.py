"""The baseline: the smallest aiohttp app, on the default asyncio loop.

``python -m bench.hello PORT`` answers ``GET /`` with ``Hello, world``.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="Hello, world")


def main(argv: list[str]) -> None:
    port = int(argv[0])
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv[1:])
