"""The demo tenant's pictures: drawn and served by the gateway, named in its brand and cards."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.demo import load_library
from gateway.demo_media import LIBRARY_MEDIA, serve_demo_media
from gateway.keys import SERVICES
from gateway.settings import Settings
from gateway.storage.memory import MemoryStore


async def test_the_demo_library_names_pictures_the_gateway_serves(
    settings: Settings, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """Loaded for the demo, the library's pictures point at /demo/media/, which answers a PNG
    of the size a logo or a card picture has; other names are 404."""
    app = create_app(settings, store=MemoryStore(), providers={})
    serve_demo_media(app)
    client = await aiohttp_client(app)
    services = app[SERVICES]
    await services.store.create_tenant("demo", [], 0.0)
    base = str(client.make_url("/demo/media/"))
    await load_library(app, "demo", media_base=base)
    brand = await services.catalog.brand("demo", "demobank")
    assert brand is not None and brand.logo_url == base + "logo.png"
    fund = await services.catalog.template("demo", "fund_due")
    assert fund is not None and fund.spec.card is not None
    media = fund.spec.card.model_dump()["media"]["url"]
    assert media == base + "fund.png" and LIBRARY_MEDIA not in str(fund.record.body)
    for name, size in (("logo.png", (96, 96)), ("wealth/90d.png", (640, 320))):
        resp = await client.get(f"/demo/media/{name}")
        body = await resp.read()
        assert resp.status == 200 and resp.content_type == "image/png"
        assert body[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", body[16:24]) == size
    for bad in ("../secret.png", "logo.gif", "a/b/c.png"):
        assert (await client.get(f"/demo/media/{bad}")).status == 404, bad
