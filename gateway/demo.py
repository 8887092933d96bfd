"""The demo tenant that ``make run`` starts with: keys, a brand and the card library."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from cards.models import TemplateSpec, template_dump
from gateway.demo_media import LIBRARY_MEDIA, PATH
from gateway.errors import Conflict, InvalidInput
from gateway.keys import SERVICES
from gateway.usecases.tenants import create_tenant, hash_key, new_key

LIBRARY = Path(__file__).resolve().parent.parent / "cards" / "library"
DEMO_TENANT = "demo"


def _read(path: Path, media_base: str | None) -> Any:
    text = path.read_text(encoding="utf-8")
    return json.loads(text if media_base is None else text.replace(LIBRARY_MEDIA, media_base))


def library_brands(
    library: Path = LIBRARY, media_base: str | None = None
) -> dict[str, dict[str, Any]]:
    """The library's brands; ``media_base`` stands in for the files' picture host."""
    brands: dict[str, dict[str, Any]] = _read(library / "brands.json", media_base)
    return brands


def library_templates(
    library: Path = LIBRARY, media_base: str | None = None
) -> dict[str, dict[str, Any]]:
    """The library's templates by id; ``media_base`` stands in for the files' picture host."""
    return {
        path.stem: _read(path, media_base)
        for path in sorted(library.glob("*.json"))
        if path.name != "brands.json"
    }


async def load_recipients(app: web.Application, tenant_id: str, library: Path = LIBRARY) -> int:
    """The demo recipients and a segment of them, through the same import a bank uses."""
    services = app[SERVICES]
    if services.audience is None:
        return 0
    raw = (library / "recipients.ndjson").read_bytes()

    async def lines() -> AsyncIterator[bytes]:
        for line in raw.splitlines():
            yield line

    result = await services.audience.import_lines(tenant_id, lines(), "ndjson")
    await services.audience.put_segment(
        tenant_id,
        "demo_fund",
        {"rule": {"all": [{"tag": "fund_interest"}, {"not": {"tag": "churned"}}]}},
    )
    return result.created + result.updated


async def load_library(
    app: web.Application, tenant_id: str, library: Path = LIBRARY, media_base: str | None = None
) -> list[str]:
    """Puts the library's brands, and each template whose file differs from its latest version."""
    services = app[SERVICES]
    for brand_id, body in library_brands(library, media_base).items():
        await services.catalog.put_brand(tenant_id, brand_id, body)
    changed = []
    for template_id, body in library_templates(library, media_base).items():
        try:
            latest = await services.catalog.template(tenant_id, template_id)
        except InvalidInput:  # its latest version fails today's checks: the file replaces it
            latest = None
        wanted = template_dump(TemplateSpec.model_validate(body))
        if latest is None or latest.record.body != wanted:
            await services.catalog.put_template(tenant_id, template_id, body)
            changed.append(template_id)
    return changed


async def demo_keys(app: web.Application) -> dict[str, str]:
    """The demo tenant's keys, kept in ``var/`` so that every ``make run`` prints the same ones."""
    services = app[SERVICES]
    path = services.settings.var_dir / "demo_keys.json"
    if path.exists():
        keys: dict[str, str] = json.loads(path.read_text())
        if await services.store.find_key(hash_key(keys["campaign_key"])) is not None:
            return keys
    try:
        keys = await create_tenant(services.store, services.clock, DEMO_TENANT)
    except Conflict:  # the tenant exists but its keys file is gone: issue new keys
        keys = {
            "tenant_id": DEMO_TENANT,
            "campaign_key": new_key("campaign"),
            "ops_key": new_key("ops"),
        }
        await services.store.add_keys(
            DEMO_TENANT,
            [(hash_key(keys["campaign_key"]), "campaign"), (hash_key(keys["ops_key"]), "ops")],
            services.clock.now(),
        )
    path.write_text(json.dumps(keys))
    path.chmod(0o600)
    return keys


async def seed_demo_on_startup(app: web.Application) -> None:
    services = app[SERVICES]
    keys = await demo_keys(app)
    media_base = services.settings.base_url + PATH  # the pictures, served by ourselves
    changed = await load_library(app, DEMO_TENANT, media_base=media_base)
    recipients = await load_recipients(app, DEMO_TENANT)
    base = services.settings.base_url
    print(
        "\n".join(
            [
                "",
                "Smart SMS gateway is up.",
                f"  gateway:        {base}",
                f"  console:        {base}/console",
                f"  mock providers: {services.settings.mock_base_url}",
                f"  tenant:         {keys['tenant_id']}",
                f"  campaign key:   {keys['campaign_key']}",
                f"  ops key:        {keys['ops_key']}",
                f"  recipients:     {recipients} (segment demo_fund)",
                f"  templates:      {', '.join(library_templates())}"
                + (f" (new versions: {', '.join(changed)})" if changed else ""),
                "",
            ]
        ),
        flush=True,
    )
