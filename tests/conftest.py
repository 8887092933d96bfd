"""Shared fixtures: settings in a temp dir, a frozen clock, fake providers, an API client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.clock import FrozenClock
from gateway.keys import SERVICES
from gateway.logging import configure_logging
from gateway.services import Services
from gateway.settings import Settings
from gateway.storage.base import Store
from gateway.storage.memory import MemoryStore
from gateway.storage.sqlite import SqliteStore
from gateway.usecases.tenants import create_tenant
from tests.fakes import FakeProvider, FakeVendor

configure_logging("warning", json=True, cache=False)

FUND_TEMPLATE: dict[str, Any] = {
    "brand_id": "icbc",
    "category": "marketing",
    "kind": "standard",
    "variables": {
        "name": {"type": "string", "max_length": 20, "required": True},
        "amount": {"type": "decimal", "required": True},
    },
    "card": {
        "title": "{{ name }}，您的理财到期提醒",
        "body": "到期金额 {{ amount }} 元",
        "buttons": [{"label": "致电客服", "action": {"type": "dial", "number": "95588"}}],
    },
    "fallback_text": "{{ name }}，您的理财到期，金额{{ amount }}元",
}
BRAND = {"name": "工商银行", "signature": "【工商银行】", "color": "#C7000B", "verified": True}


@pytest.fixture(name="settings")
def _settings(tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'var' / 'gateway.db'}",
        dispatcher_enabled=False,
        retry_base_s=1.0,
    )


@pytest.fixture(name="clock")
def _clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(name="providers")
def _providers() -> dict[str, FakeProvider]:
    carriers = {name: FakeProvider(name) for name in ("cmcc", "cucc", "ctcc")}
    vendors = {name: FakeVendor(name) for name in ("huawei", "xiaomi", "oppo", "vivo", "honor")}
    return carriers | vendors


@pytest.fixture(name="store", params=["sqlite", "memory"])
def _store(request: pytest.FixtureRequest, settings: Settings) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return SqliteStore(settings.sqlite_path)


@dataclass
class Gateway:
    """An app under test, with two tenants' keys ready."""

    client: TestClient
    services: Services
    clock: FrozenClock
    providers: dict[str, FakeProvider]
    keys: dict[str, dict[str, str]]

    def auth(self, tenant: str = "bank_a", role: str = "campaign") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant][f'{role}_key']}"}

    async def send(self, tenant: str = "bank_a", **body: Any) -> Any:
        payload = {
            "to": "13812345678",
            "template_id": "fund_due",
            "variables": {"name": "张三", "amount": "1000.50"},
        } | body
        resp = await self.client.post("/v1/messages", json=payload, headers=self.auth(tenant))
        assert resp.status == 202, await resp.text()
        return (await resp.json())["message_id"]

    async def message(self, message_id: str, tenant: str = "bank_a") -> Any:
        resp = await self.client.get(f"/v1/messages/{message_id}", headers=self.auth(tenant))
        assert resp.status == 200, await resp.text()
        return await resp.json()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture(name="make_gateway")
async def _make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    settings: Settings,
    clock: FrozenClock,
    providers: dict[str, FakeProvider],
) -> AsyncIterator[GatewayFactory]:
    async def make(store: Store | None = None, **overrides: Any) -> Gateway:
        s = settings.model_copy(update=overrides) if overrides else settings
        app: web.Application = create_app(
            s, store=store or SqliteStore(s.sqlite_path), providers=providers, clock=clock
        )
        client = await aiohttp_client(app)
        services = app[SERVICES]
        keys = {}
        for tenant in ("bank_a", "bank_b"):
            keys[tenant] = await create_tenant(services.store, clock, tenant)
            # no quiet hours or caps unless a test sets them: they have tests of their own
            await services.store.put_settings(tenant, {"quiet_hours": None, "frequency_cap": None})
            for brand_id in ("icbc",):
                await services.catalog.put_brand(tenant, brand_id, BRAND)
            await services.catalog.put_template(tenant, "fund_due", FUND_TEMPLATE)
        return Gateway(client, services, clock, providers, keys)

    yield make


@pytest.fixture(name="gw")
async def _gw(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()
