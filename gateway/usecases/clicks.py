"""The tracked-link redirector: ``/c/{token}`` answers at once, and records the click behind."""

from __future__ import annotations

import asyncio
import re

from cards.links import is_token
from gateway.clock import Clock
from gateway.errors import NotFound
from gateway.logging import get_logger
from gateway.storage.base import Store

log = get_logger("gateway.clicks")

# Link-preview fetchers open links nobody clicked: they are not clicks.
_PREVIEW = re.compile(
    r"facebookexternalhit|facebot|twitterbot|slackbot|slack-imgproxy|discordbot|telegrambot|"
    r"whatsapp|linkedinbot|skypeuripreview|bingpreview|googlebot|applebot|embedly|pinterest|"
    r"redditbot|vkshare|iframely|outbrain|quora link preview|crawler|spider|headlesschrome",
    re.IGNORECASE,
)


def is_preview(user_agent: str | None) -> bool:
    return bool(user_agent) and _PREVIEW.search(user_agent or "") is not None


class Clicks:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    async def follow(self, token: str, *, user_agent: str | None, count: bool = True) -> str:
        """The destination of a minted token; a click is recorded unless ``count`` is False or
        a link-preview fetcher asked. Unknown or malformed tokens are ``NotFound``."""
        link = await self._store.find_link(token) if is_token(token) else None
        if link is None:
            raise NotFound("no such link")
        if count and not is_preview(user_agent):
            task = asyncio.get_running_loop().create_task(
                self._record(link, self._clock.now(), user_agent)
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return link.url

    async def _record(self, link, at: float, user_agent: str | None) -> None:  # type: ignore[no-untyped-def]
        try:
            await self._store.record_click(link, at, user_agent)
        except Exception:
            log.exception("click_not_recorded", message_id=link.message_id)

    async def drain(self) -> None:
        """Waits for the clicks answered but not yet written (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
