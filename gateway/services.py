"""The services one gateway instance is made of, built once by ``create_app``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.api.endpoints import Endpoint
from gateway.clock import Clock
from gateway.dispatch.campaigns import CampaignRunner
from gateway.dispatch.dispatcher import Dispatcher
from gateway.dispatch.ports import Provider
from gateway.dispatch.reviews import ReviewSubmitter
from gateway.dispatch.webhooks import WebhookSender
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.storage.base import Store
from gateway.storage.webhooks import SqliteWebhooks
from gateway.usecases.audience import Audience
from gateway.usecases.campaigns import Campaigns
from gateway.usecases.catalog import Catalog
from gateway.usecases.clicks import Clicks
from gateway.usecases.sending import Sender
from gateway.usecases.tenants import Authenticator


@dataclass
class Services:
    settings: Settings
    store: Store
    clock: Clock
    metrics: Metrics
    providers: Mapping[str, Provider]
    auth: Authenticator
    catalog: Catalog
    sender: Sender
    dispatcher: Dispatcher
    reviews: ReviewSubmitter
    clicks: Clicks
    audience: Audience | None = None
    campaigns: Campaigns | None = None
    runner: CampaignRunner | None = None
    webhooks: SqliteWebhooks | None = None
    webhook_sender: WebhookSender | None = None
    draining: bool = field(default=False)
    # per matched route: its endpoint and its name in metrics (the middleware asks once)
    route_info: dict[object, tuple[Endpoint | None, str]] = field(default_factory=dict)
