"""Tracked links: every ``open_url`` action gets a short token that the gateway redirects.

A token carries no destination (it is looked up server-side), so ``/c/{token}`` can
never be an open redirect; eleven URL-safe base64 characters are 64 random bits,
unguessable, and keep SMS text short.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

TOKEN_LENGTH = 11
_TOKEN = re.compile(r"[A-Za-z0-9_-]{11}")


def new_token() -> str:
    """64 bits from the OS's CSPRNG, URL-safe base64 (no padding): 11 characters."""
    return secrets.token_urlsafe(8)


def is_token(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class MintedLink:
    token: str
    url: str  # the destination, kept server-side
    button: str  # which action: "buttons.0", "items.1.buttons.0", "sms"
    label: str


class LinkMinter(Protocol):
    def mint(self, url: str, button: str, label: str) -> str:
        """The tracked URL that stands for ``url`` in what the phone receives."""
        ...


class MessageLinks:
    """Mints real tokens for one message; the send stores ``links`` with the message."""

    def __init__(self, base_url: str) -> None:
        self._prefix = base_url.rstrip("/") + "/c/"
        self.links: list[MintedLink] = []

    def mint(self, url: str, button: str, label: str) -> str:
        token = new_token()
        self.links.append(MintedLink(token, url, button, label))
        return self._prefix + token


class PreviewLinks:
    """Stands in tokens of the real length, so a preview counts SMS segments truly."""

    def __init__(self, base_url: str) -> None:
        self._prefix = base_url.rstrip("/") + "/c/"
        self.links: list[MintedLink] = []

    def mint(self, url: str, button: str, label: str) -> str:
        token = f"preview{len(self.links):04d}"[:TOKEN_LENGTH]
        self.links.append(MintedLink(token, url, button, label))
        return self._prefix + token


_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
# The common shape, which the full check below accepts too: http(s), a plain host name or
# address, an optional port, then no whitespace or control characters. Anything else is
# checked the long way (``urlsplit`` costs ~3 µs a URL, on every send with a link).
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:[/?#][^\x00-\x20\x7f]*)?")


def check_url(url: str, loc: str) -> None:
    """A rendered destination: http(s), a host, no whitespace or control characters."""
    if _PLAIN_URL.fullmatch(url):
        return
    from urllib.parse import urlsplit

    from cards.compiled import RenderError

    if _UNSAFE.search(url):
        raise RenderError(
            ("card", *loc.split(".")), "the rendered URL has spaces or control characters"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise RenderError(
            ("card", *loc.split(".")), "the rendered URL is not an http(s) URL to a host"
        )


def track_card(card: dict[str, Any], minter: LinkMinter) -> tuple[dict[str, Any], str | None]:
    """A copy of ``card`` whose ``open_url`` actions point at tracked links; and the first one."""
    first: list[str] = []

    def buttons(items: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
        out = []
        for i, b in enumerate(items):
            action = b["action"]
            if action["type"] == "open_url":
                check_url(action["url"], f"{prefix}buttons.{i}.action.url")
                tracked = minter.mint(action["url"], f"{prefix}buttons.{i}", b["label"])
                first.append(tracked)
                b = {**b, "action": {**action, "url": tracked}}
            out.append(b)
        return out

    tracked = dict(card)
    if card.get("buttons"):
        tracked["buttons"] = buttons(card["buttons"], "")
    if card.get("items"):
        tracked["items"] = [
            {**item, "buttons": buttons(item.get("buttons", []), f"items.{n}.")}
            if item.get("buttons")
            else item
            for n, item in enumerate(card["items"])
        ]
    return tracked, (first[0] if first else None)
