"""``GET /c/{token}``: a card button's or an SMS link's tracked redirect."""

from __future__ import annotations

from aiohttp import web

from gateway.api.endpoints import Endpoint
from gateway.keys import SERVICES


async def follow(request: web.Request) -> web.StreamResponse:
    url = await request.app[SERVICES].clicks.follow(
        request.match_info["token"],
        user_agent=request.headers.get("User-Agent"),
        count=request.method == "GET",  # HEAD requests are not clicks
    )
    return web.Response(
        status=302,
        headers={"Location": url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/c/{token}",
        follow,
        "A tracked link: records the click (not for HEAD or link previews) and redirects",
        None,
        status=302,
        tag="links",
        also=((404, "No such link: it redirects nowhere"),),
    ),
]
