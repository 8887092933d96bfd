"""The app factory: one place where a gateway instance is assembled; nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
from aiohttp import web

from gateway.api import (
    admin,
    audience,
    callbacks,
    campaigns,
    catalog,
    console,
    links,
    logs,
    messages,
    ops,
    routing,
    webhooks,
)
from gateway.api.endpoints import register
from gateway.api.middlewares import observe
from gateway.clock import Clock, SystemClock
from gateway.dispatch.campaigns import CampaignRunner
from gateway.dispatch.dispatcher import Dispatcher
from gateway.dispatch.policy import SendPolicy
from gateway.dispatch.ports import Provider, TemplateReviewer
from gateway.dispatch.reviews import ReviewSubmitter
from gateway.dispatch.webhooks import WebhookSender
from gateway.domain.routing import CARRIERS, VENDORS
from gateway.keys import SERVICES
from gateway.logging import get_logger
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.settings import Settings
from gateway.storage.audience import SqliteAudience
from gateway.storage.base import Store
from gateway.storage.sqlite import SqliteStore
from gateway.storage.webhooks import SqliteWebhooks
from gateway.usecases.audience import Audience
from gateway.usecases.campaigns import Campaigns
from gateway.usecases.catalog import Catalog
from gateway.usecases.clicks import Clicks
from gateway.usecases.sending import Sender
from gateway.usecases.tenants import Authenticator
from providers import signing
from providers.carriers import HttpCarrier
from providers.vendors import HttpVendor

log = get_logger("gateway.app")


def build_store(settings: Settings) -> Store:
    return SqliteStore(
        settings.sqlite_path,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        synchronous=settings.sqlite_synchronous,
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    providers: dict[str, Provider] | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """A gateway instance; resources open in ``cleanup_ctx`` and close in reverse order."""
    store = store or build_store(settings)
    clock = clock or SystemClock()
    metrics = Metrics()
    owned_providers = providers is None
    provider_map: dict[str, Provider] = {} if providers is None else providers
    dispatcher = Dispatcher(store, provider_map, clock, settings, metrics)
    reviewer_names = (
        VENDORS
        if owned_providers
        else tuple(n for n, p in provider_map.items() if hasattr(p, "submit_review"))
    )
    reviewers: dict[str, TemplateReviewer] = {}
    catalog_ = Catalog(store, clock, reviewers=reviewer_names)
    review_submitter = ReviewSubmitter(store, catalog_, reviewers, clock, settings.base_url)
    catalog_.on_review_needed = review_submitter.wake
    dispatcher.approvals = catalog_

    def accepted(count: int) -> None:
        """Messages newly queued (a send's, a campaign batch's): counted, and dispatched."""
        metrics.entered("accepted", count)
        dispatcher.wake()

    services = Services(
        settings=settings,
        store=store,
        clock=clock,
        metrics=metrics,
        providers=provider_map,
        auth=Authenticator(store),
        catalog=catalog_,
        sender=Sender(
            store, catalog_, clock, lambda: accepted(1), link_base_url=settings.links_base_url
        ),
        dispatcher=dispatcher,
        reviews=review_submitter,
        clicks=Clicks(store, clock),
    )

    if isinstance(store, SqliteStore):
        audience_store = SqliteAudience(store)
        services.audience = Audience(store, audience_store, clock)
        services.campaigns = Campaigns(audience_store, catalog_, clock)
        services.runner = CampaignRunner(
            audience_store,
            catalog_,
            clock,
            settings.links_base_url,
            accepted,
            batch=settings.campaign_batch,
            write_batch=settings.campaign_write_batch,
        )
        services.campaigns.on_change = services.runner.wake
        dispatcher.policy = SendPolicy(store, audience_store)
        services.webhooks = SqliteWebhooks(store)
        services.webhook_sender = WebhookSender(
            services.webhooks, clock, allow_private=settings.webhook_allow_private
        )

    app = web.Application(middlewares=[observe], client_max_size=settings.max_body_bytes)
    app[SERVICES] = services
    register(
        app,
        messages.ENDPOINTS
        + catalog.ENDPOINTS
        + audience.ENDPOINTS
        + campaigns.ENDPOINTS
        + routing.ENDPOINTS
        + callbacks.ENDPOINTS
        + links.ENDPOINTS
        + logs.ENDPOINTS
        + webhooks.ENDPOINTS
        + console.ENDPOINTS
        + ops.ENDPOINTS,
    )
    admin.register(app)

    async def storage(_: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await services.clicks.drain()
        await store.close()

    async def provider_clients(_: web.Application) -> AsyncIterator[None]:
        if not owned_providers:
            yield
            return
        master = signing.load_master_secret(settings.var_dir, settings.provider_secret)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=128),
            timeout=aiohttp.ClientTimeout(total=settings.provider_timeout_s),
        )
        for name in CARRIERS:
            provider_map[name] = HttpCarrier(
                name,
                settings.mock_base_url,
                signing.provider_secret(master, name),
                session,
                timeout_s=settings.provider_timeout_s,
            )
        for name in VENDORS:
            provider_map[name] = HttpVendor(
                name,
                settings.mock_base_url,
                signing.provider_secret(master, name),
                session,
                timeout_s=settings.provider_timeout_s,
            )
        yield
        for provider in provider_map.values():
            await provider.close()
        await session.close()

    async def dispatching(_: web.Application) -> AsyncIterator[None]:
        reviewers.update(
            {n: cast(TemplateReviewer, p) for n, p in provider_map.items() if n in reviewer_names}
        )
        if settings.dispatcher_enabled:
            await dispatcher.start()
            await review_submitter.start()
            if services.runner is not None:
                await services.runner.start()
            if services.webhook_sender is not None:
                await services.webhook_sender.start()
        yield
        if services.webhook_sender is not None:
            await services.webhook_sender.stop()
        if settings.dispatcher_enabled:
            if services.runner is not None:
                await services.runner.stop()
            await review_submitter.stop()
            await dispatcher.stop(settings.drain_timeout_s)

    async def housekeeping(_: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    purged = await store.purge_idempotency(clock.now() - settings.idempotency_ttl_s)
                    if purged:
                        log.info("idempotency_keys_purged", count=purged)
                except Exception:
                    log.exception("housekeeping_failed")
                await asyncio.sleep(3600)

        task = asyncio.get_running_loop().create_task(loop(), name="housekeeping")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def on_shutdown(_: web.Application) -> None:
        services.draining = True
        log.info("draining")

    app.cleanup_ctx.extend([storage, provider_clients, dispatching, housekeeping])
    app.on_shutdown.append(on_shutdown)
    return app


def ensure_var_dir(settings: Settings) -> Path:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return settings.var_dir
