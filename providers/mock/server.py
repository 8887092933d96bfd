"""The mock providers' aiohttp app: every carrier and every handset vendor in one server."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from providers.mock import carrier_api, control, vendor_api
from providers.mock.config import Behaviour
from providers.mock.outbox import ReportOutbox
from providers.mock.runtime import OUTBOX, RUNTIME, SESSION, Runtime
from providers.settings import MockSettings
from providers.signing import load_master_secret

CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=10)


def create_mock_app(
    settings: MockSettings,
    behaviours: dict[str, Behaviour],
    *,
    rng: random.Random | None = None,
) -> web.Application:
    """The app; its HTTP client and delivery-report task live in ``cleanup_ctx``."""
    app = web.Application()
    app[RUNTIME] = Runtime(
        settings=settings,
        behaviours=dict(behaviours),
        rng=rng or random.Random(),
        master=load_master_secret(settings.var_dir, settings.provider_secret),
    )
    app.cleanup_ctx.append(_client_ctx)
    # Carriers (cmcc, cucc, ctcc); any other name answers 404.
    app.router.add_post("/{provider}/v1/sms/batch", carrier_api.submit_sms)
    app.router.add_post("/{provider}/v1/rcs/capability", carrier_api.rcs_capability)
    app.router.add_post("/{provider}/v1/rcs/batch", carrier_api.submit_rcs)
    # Handset vendors (huawei, xiaomi, oppo, vivo, honor); any other name answers 404.
    app.router.add_post("/{provider}/v1/capability", vendor_api.capability)
    app.router.add_post("/{provider}/v1/messages/batch", vendor_api.submit_cards)
    app.router.add_post("/{provider}/v1/templates/review", vendor_api.review)
    app.router.add_get("/_mock/stats", control.stats)
    app.router.add_get("/_mock/inbox", control.inbox)
    app.router.add_post("/_mock/reset", control.reset)
    app.router.add_post("/_mock/mo", control.send_mo)
    app.router.add_post("/_mock/behaviour", control.set_behaviour)
    app.router.add_post("/{provider}/v1/recall", control.recall)
    app.router.add_get("/healthz", control.healthz)
    return app


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    """One HTTP client session and one callback outbox for the app's lifetime."""
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        outbox = ReportOutbox(session, app[RUNTIME].secret)
        app[SESSION] = session
        app[OUTBOX] = outbox
        outbox.start()
        try:
            yield
        finally:
            await outbox.close()
