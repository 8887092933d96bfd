"""The demo library's pictures, drawn by the gateway itself, so that a fresh ``make run``
shows whole cards (the library's files name ``https://static.bank.example/…``, a host
that exists nowhere; the demo tenant gets them from ``/demo/media/`` instead).

Each picture is a plain PNG: a band of the brand's red over a colour taken from its name.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from functools import lru_cache

from aiohttp import web

LIBRARY_MEDIA = "https://static.bank.example/"
PATH = "/demo/media/"
_NAME = re.compile(r"[a-z0-9_\-]{1,40}(?:/[a-z0-9_\-]{1,40})?\.png")
_BRAND_RED = (0xC7, 0x00, 0x0B)


def _chunk(tag: bytes, data: bytes) -> bytes:
    body = tag + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@lru_cache(maxsize=32)
def picture(name: str) -> bytes:
    """A PNG for ``name``: square for a logo, 2:1 for a card's media."""
    width, height = (96, 96) if name.startswith("logo") else (640, 320)
    digest = hashlib.sha256(name.encode()).digest()
    tint = tuple(160 + b % 96 for b in digest[:3])  # light, so a card's text stays readable
    band = height // 5
    rows = [bytes(_BRAND_RED) * width if y < band else bytes(tint) * width for y in range(height)]
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


async def media(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        raise web.HTTPNotFound()
    return web.Response(
        body=picture(name), content_type="image/png", headers={"Cache-Control": "max-age=86400"}
    )


def serve_demo_media(app: web.Application) -> None:
    """Adds ``GET /demo/media/{name}`` (public, like the pictures a bank's CDN serves)."""
    app.router.add_get(PATH + "{name:.+}", media)
