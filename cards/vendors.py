"""Handset vendors' card formats, each with its own capabilities and degradation rules.

Every vendor renders a different subset: an unsupported action degrades to the
nearest thing the vendor can show (a map becomes a map web link, for instance), or
is dropped; a card the vendor cannot show at all (a carousel where it has none)
skips that vendor, and the router sends another way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

VENDORS = ("huawei", "xiaomi", "oppo", "vivo", "honor")


@dataclass(frozen=True)
class Capabilities:
    actions: frozenset[str]
    max_buttons: int
    max_carousel: int  # 0: no carousels


CAPABILITIES: dict[str, Capabilities] = {
    "huawei": Capabilities(
        frozenset({"open_url", "dial", "copy_code", "reply", "calendar", "map"}), 4, 10
    ),
    "xiaomi": Capabilities(frozenset({"open_url", "dial", "copy_code"}), 3, 5),
    "oppo": Capabilities(frozenset({"open_url"}), 4, 3),
    "vivo": Capabilities(frozenset({"open_url", "dial", "copy_code", "map"}), 4, 0),
    "honor": Capabilities(frozenset({"open_url", "dial", "copy_code", "reply", "map"}), 3, 6),
}


class Skip(Exception):
    """This vendor cannot show this card; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def map_url(action: dict[str, Any]) -> str:
    """A map action as a web link any phone can open."""
    if action.get("query"):
        return f"https://uri.amap.com/search?keyword={quote(action['query'])}"
    name = quote(action.get("label") or "")
    return f"https://uri.amap.com/marker?position={action['longitude']},{action['latitude']}&name={name}"


def degrade(
    buttons: list[dict[str, Any]], caps: Capabilities
) -> tuple[list[dict[str, Any]], list[str]]:
    """The buttons this vendor can show, and a note for each one changed or dropped."""
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for b in buttons:
        kind = b["action"]["type"]
        if kind in caps.actions:
            out.append(b)
        elif kind == "map" and "open_url" in caps.actions:
            out.append(
                {"label": b["label"], "action": {"type": "open_url", "url": map_url(b["action"])}}
            )
            notes.append(f"{b['label']}: map shown as a web link")
        else:
            notes.append(f"{b['label']}: {kind} not supported, dropped")
    if len(out) > caps.max_buttons:
        notes.append(f"buttons beyond {caps.max_buttons} dropped")
        out = out[: caps.max_buttons]
    return out, notes


def _cards(
    card: dict[str, Any], kind: str, caps: Capabilities
) -> tuple[list[dict[str, Any]], list[str]]:
    if kind != "carousel":
        return [card], []
    if caps.max_carousel < 2:
        raise Skip("carousel_unsupported")
    items = card["items"]
    notes = [f"carousel cut to {caps.max_carousel} cards"] if len(items) > caps.max_carousel else []
    return items[: caps.max_carousel], notes


def _text(card: dict[str, Any]) -> str:
    lines = [card["body"]] if card.get("body") else []
    if card.get("code") and card["code"] not in "".join(lines):
        lines.append(card["code"])
    return "\n".join(lines)


# Each vendor's own wire shape ----------------------------------------------------------


def _huawei(cards: list[dict[str, Any]], kind: str, brand: Mapping[str, Any]) -> dict[str, Any]:
    def action(a: dict[str, Any]) -> dict[str, Any]:
        t = a["type"]
        if t == "open_url":
            return {"type": "URL", "url": a["url"]}
        if t == "dial":
            return {"type": "CALL", "phone": a["number"]}
        if t == "copy_code":
            return {"type": "COPY", "text": a["code"]}
        if t == "reply":
            return {"type": "REPLY", "text": a["text"]}
        if t == "calendar":
            return {"type": "CALENDAR", "title": a["title"], "begin": a["start"], "end": a["end"]}
        if a.get("query"):
            return {"type": "MAP", "keyword": a["query"]}
        return {"type": "MAP", "lat": a["latitude"], "lng": a["longitude"], "name": a.get("label")}

    def one(c: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"title": c["title"], "content": _text(c)}
        if c.get("media"):
            out["image"] = {"url": c["media"]["url"], "height": c["media"].get("height", "medium")}
        if c.get("fields"):
            out["kvList"] = [{"k": f["label"], "v": f["value"]} for f in c["fields"]]
        out["buttons"] = [{"text": b["label"], "action": action(b["action"])} for b in c["buttons"]]
        return out

    return {
        "msgType": "CAROUSEL" if kind == "carousel" else "CARD",
        "sender": {
            "name": brand["name"],
            "logo": brand.get("logo_url"),
            "verified": brand.get("verified", False),
        },
        "cards": [one(c) for c in cards],
    }


def _xiaomi(cards: list[dict[str, Any]], kind: str, brand: Mapping[str, Any]) -> dict[str, Any]:
    kinds = {
        "open_url": ("link", "url"),
        "dial": ("phone", "number"),
        "copy_code": ("copy", "code"),
    }

    def one(c: dict[str, Any]) -> dict[str, Any]:
        body = {"title": c["title"], "text": _text(c)}
        if c.get("media"):
            body["img"] = c["media"]["url"]
        if c.get("fields"):
            body["text"] = "\n".join(
                [body["text"], *(f"{f['label']}: {f['value']}" for f in c["fields"])]
            ).strip()
        actions = [
            {
                "name": b["label"],
                "kind": kinds[b["action"]["type"]][0],
                "value": b["action"][kinds[b["action"]["type"]][1]],
            }
            for b in c["buttons"]
        ]
        return {"body": body, "actions": actions}

    return {
        "template_type": "carousel" if kind == "carousel" else "standard",
        "header": {"brand": brand["name"], "icon": brand.get("logo_url")},
        "pages": [one(c) for c in cards],
    }


def _oppo(cards: list[dict[str, Any]], kind: str, brand: Mapping[str, Any]) -> dict[str, Any]:
    def one(c: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"title": c["title"], "desc": _text(c)}
        if c.get("media"):
            out["picUrl"] = c["media"]["url"]
        if c.get("fields"):
            out["desc"] = "\n".join(
                [out["desc"], *(f"{f['label']}：{f['value']}" for f in c["fields"])]
            ).strip()
        out["btnList"] = [
            {"btnName": b["label"], "linkUrl": b["action"]["url"]} for b in c["buttons"]
        ]
        return out

    return {
        "cardType": 2 if kind == "carousel" else 1,
        "signName": brand["name"],
        "cardList": [one(c) for c in cards],
    }


def _vivo(cards: list[dict[str, Any]], kind: str, brand: Mapping[str, Any]) -> dict[str, Any]:
    ops = {"open_url": ("open", "url"), "dial": ("call", "number"), "copy_code": ("copy", "code")}

    def op(a: dict[str, Any]) -> dict[str, Any]:
        if a["type"] == "map":
            return {"op": "locate", "arg": a.get("query") or f"{a['latitude']},{a['longitude']}"}
        name, key = ops[a["type"]]
        return {"op": name, "arg": a[key]}

    c = cards[0]
    content: dict[str, Any] = {"title": c["title"], "summary": _text(c)}
    if c.get("media"):
        content["media"] = {"src": c["media"]["url"]}
    if c.get("fields"):
        content["fields"] = [[f["label"], f["value"]] for f in c["fields"]]
    content["operations"] = [{"label": b["label"], **op(b["action"])} for b in c["buttons"]]
    return {"type": "vivo.card.v2", "brand": brand["name"], "content": content}


def _honor(cards: list[dict[str, Any]], kind: str, brand: Mapping[str, Any]) -> dict[str, Any]:
    types = {
        "open_url": ("url", "url"),
        "dial": ("tel", "number"),
        "copy_code": ("copy", "code"),
        "reply": ("reply", "text"),
    }

    def button(a: dict[str, Any], label: str) -> dict[str, Any]:
        if a["type"] == "map":
            return {
                "title": label,
                "type": "map",
                "data": a.get("query") or f"{a['latitude']},{a['longitude']}",
            }
        t, key = types[a["type"]]
        return {"title": label, "type": t, "data": a[key]}

    def one(c: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"title": c["title"], "text": _text(c)}
        if c.get("media"):
            out["image"] = c["media"]["url"]
        if c.get("fields"):
            out["rows"] = [{"name": f["label"], "value": f["value"]} for f in c["fields"]]
        out["buttons"] = [button(b["action"], b["label"]) for b in c["buttons"]]
        return out

    return {
        "honorCard": {
            "layout": "carousel" if kind == "carousel" else "standard",
            "sender": brand["name"],
            "cards": [one(c) for c in cards],
        }
    }


_BUILDERS: dict[str, Callable[[list[dict[str, Any]], str, Mapping[str, Any]], dict[str, Any]]] = {
    "huawei": _huawei,
    "xiaomi": _xiaomi,
    "oppo": _oppo,
    "vivo": _vivo,
    "honor": _honor,
}


@dataclass(frozen=True, slots=True)
class VendorPayload:
    payload: dict[str, Any]
    notes: list[str]


def vendor_payload(
    vendor: str, card: dict[str, Any], kind: str, brand: Mapping[str, Any]
) -> VendorPayload:
    """The card in ``vendor``'s format, degraded to what it can show; ``Skip`` if it cannot."""
    caps = CAPABILITIES[vendor]
    cards, notes = _cards(card, kind, caps)
    adapted = []
    for c in cards:
        buttons = c.get("buttons") or []
        if len(buttons) <= caps.max_buttons and all(
            b["action"]["type"] in caps.actions for b in buttons
        ):
            adapted.append(c if "buttons" in c else {**c, "buttons": []})  # nothing to change
            continue
        kept, dropped = degrade(buttons, caps)
        notes.extend(dropped)
        adapted.append({**c, "buttons": kept})
    return VendorPayload(_BUILDERS[vendor](adapted, kind, brand), notes)
