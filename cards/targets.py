"""From one template version and one recipient's variables to everything a route needs.

``render_message`` renders the card once (fields in the sandbox), checks the limits
carriers and vendors set, swaps every ``open_url`` and every link in the SMS text for a
tracked link, and composes the SMS fallback. ``route_payload`` turns that one
rendered card into a route's format: a vendor's card or the carrier's UP message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cards.compiled import CompiledTemplate, RenderError
from cards.gsma import chatbot_message
from cards.links import LinkMinter, MintedLink, track_card
from cards.models import MAX_LABEL, MAX_TITLE, calendar_problem
from cards.sms import SmsLength, compose, length
from cards.vendors import VENDORS, Skip, vendor_payload

_URL = re.compile(r"https?://[^\s，。；、）)】>\"']+")


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    kind: str
    category: str
    brand: dict[str, Any]
    card: dict[str, Any] | None  # open_url actions point at tracked links
    text: str  # the SMS, signature first
    sms: SmsLength
    links: list[MintedLink] = field(default_factory=list)

    def stored(self) -> dict[str, Any]:
        """What a message keeps: enough to build any route's payload again."""
        out: dict[str, Any] = {"text": self.text, "kind": self.kind, "brand": self.brand}
        if self.card is not None:
            out["card"] = self.card
        return out


def _check_limits(card: dict[str, Any]) -> None:
    located: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [(("card",), card)]
    located += [(("card", "items", i), item) for i, item in enumerate(card.get("items") or [])]
    for loc, c in located:
        if len(c["title"]) > MAX_TITLE:
            raise RenderError((*loc, "title"), f"rendered title is over {MAX_TITLE} characters")
        for i, b in enumerate(c.get("buttons") or []):
            if len(b["label"]) > MAX_LABEL:
                raise RenderError(
                    (*loc, "buttons", i, "label"), f"rendered label is over {MAX_LABEL}"
                )
            action = b["action"]
            if action["type"] == "calendar":
                problem = calendar_problem(action["start"], action["end"])
                if problem:
                    raise RenderError((*loc, "buttons", i, "action"), problem)


def render_message(
    compiled: CompiledTemplate,
    brand: Mapping[str, Any],
    variables: Mapping[str, Any],
    minter: LinkMinter,
) -> RenderedMessage:
    """Renders every target's source; raises ``RenderError`` naming the field that failed."""
    spec = compiled.spec
    card = compiled.render_card(variables)
    first_link = None
    if card is not None:
        _check_limits(card)
        card, first_link = track_card(card, minter)
    context = variables if "link" in spec.variables else {**variables, "link": first_link or ""}
    text = compiled.render_fallback(context)
    text = _track_text(text, minter, literal_origins(compiled.spec.fallback_text))
    sms_text = compose(
        brand.get("signature", ""),
        text,
        marketing=spec.category == "marketing",
        link=first_link,
        link_in_text="link" in compiled.fallback_names,
    )
    links = list(getattr(minter, "links", []))
    return RenderedMessage(
        spec.kind, spec.category, dict(brand), card, sms_text, length(sms_text), links
    )


@lru_cache(maxsize=1024)
def literal_origins(source: str) -> frozenset[str]:
    """The ``scheme://host`` of each link the template writes itself (not from a variable)."""
    return frozenset(
        origin for m in _URL.finditer(source) if (origin := _origin(m.group(0))) is not None
    )


def _origin(url: str) -> str | None:
    m = _ORIGIN.match(url)
    return m.group(0).lower() if m else None


_ORIGIN = re.compile(r"https?://[^/?#\s{]+")


def _track_text(text: str, minter: LinkMinter, origins: frozenset[str]) -> str:
    """Links the template writes into the SMS text itself are tracked too (tracked ones are
    left alone). A link that came in a variable, to a host the template does not name, is
    left as it is: the bank's tracked short link must never stand for a URL its data carried
    in (a customer's nickname "https://phish.example/login" would become the bank's link)."""
    if "://" not in text:
        return text
    count = 0

    def swap(m: re.Match[str]) -> str:
        nonlocal count
        url = m.group(0)
        if "/c/" in url or _origin(url) not in origins:
            return url
        count += 1
        return minter.mint(url, f"sms.link.{count}", "sms")

    return _URL.sub(swap, text)


def route_payload(
    route: str, provider: str, card: dict[str, Any], kind: str, brand: Mapping[str, Any]
) -> dict[str, Any]:
    """The card in one route's format; ``Skip`` when that provider cannot show it."""
    if route == "carrier_rich":
        return chatbot_message(card, kind)
    if route == "vendor_card":
        return vendor_payload(provider, card, kind, brand).payload
    raise ValueError(f"route {route!r} carries no card")


def all_targets(message: RenderedMessage) -> dict[str, Any]:
    """Every target at once, as the preview shows them."""
    out: dict[str, Any] = {
        "sms": {
            "text": message.text,
            "encoding": message.sms.encoding,
            "segments": message.sms.segments,
        }
    }
    if message.card is None:
        return out
    out["card"] = message.card
    out["carrier_rich"] = chatbot_message(message.card, message.kind)
    vendors: dict[str, Any] = {}
    for vendor in VENDORS:
        try:
            vp = vendor_payload(vendor, message.card, message.kind, message.brand)
        except Skip as skip:
            vendors[vendor] = {"skipped": skip.reason}
        else:
            vendors[vendor] = {"payload": vp.payload, "notes": vp.notes}
    out["vendor_card"] = vendors
    return out
