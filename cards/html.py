"""An HTML preview that looks like the phone: brand header, the card, its buttons, the SMS.

This is the gateway's own template, rendered with autoescaping: every value from the
bank or a recipient is escaped, and only http(s) links become ``href``s.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2.environment import Template

from cards.sms import SmsLength


@lru_cache(maxsize=1)
def _template() -> Template:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    return env.get_template("phone.html")


def _href(action: dict[str, Any]) -> str:
    kind = action["type"]
    if kind == "open_url" and action["url"].startswith(("https://", "http://")):
        return str(action["url"])
    if kind == "dial":
        return "tel:" + quote(action["number"])
    return "#"


def _with_hrefs(card: dict[str, Any]) -> dict[str, Any]:
    out = dict(card)
    out["buttons"] = [{**b, "href": _href(b["action"])} for b in card.get("buttons") or []]
    if card.get("items"):
        out["items"] = [_with_hrefs(i) for i in card["items"]]
    return out


def phone_html(
    brand: dict[str, Any], kind: str, card: dict[str, Any] | None, text: str, sms: SmsLength
) -> str:
    return _template().render(
        brand=brand, kind=kind, card=_with_hrefs(card) if card else None, text=text, sms=sms
    )
