"""The baseline: the smallest aiohttp app, on the default asyncio loop.

``python -m bench.hello PORT [--uvloop]`` answers ``GET /`` with ``Hello, world``; with
``--uvloop`` on uvloop, the loop the gateway runs on (a reference, not the targets' yardstick).
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
    loop = None
    if "--uvloop" in argv[1:]:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main(sys.argv[1:])
