"""The carrier 5G rich message: a GSMA RCS Universal Profile chatbot message.

``generalPurposeCard`` for standard, notice and OTP cards, ``generalPurposeCardCarousel``
for carousels, buttons as suggested actions. UP has no "copy" action: a copy_code
button becomes a suggested reply whose postback carries the code, and the code is in
the card's description, so the phone can always show it.
"""

from __future__ import annotations

from typing import Any

_HEIGHT = {"short": "SHORT_HEIGHT", "medium": "MEDIUM_HEIGHT", "tall": "TALL_HEIGHT"}
_CONTENT_TYPE = {"png": "image/png", "gif": "image/gif", "webp": "image/webp", "mp4": "video/mp4"}


def _media(media: dict[str, Any]) -> dict[str, Any]:
    ext = media["url"].rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    out: dict[str, Any] = {
        "mediaUrl": media["url"],
        "mediaContentType": _CONTENT_TYPE.get(ext, "image/jpeg"),
        "mediaFileSize": 0,  # unknown until fetched; UP allows 0
        "height": _HEIGHT[media.get("height", "medium")],
    }
    if media.get("alt"):
        out["contentDescription"] = media["alt"][:200]
    return out


def _suggestion(button: dict[str, Any], index: str) -> dict[str, Any]:
    label = button["label"][:25]
    action = button["action"]
    kind = action["type"]
    postback = {"data": f"btn:{index}"}
    if kind == "reply":
        return {"reply": {"displayText": label, "postback": {"data": action["text"][:2048]}}}
    if kind == "copy_code":
        return {"reply": {"displayText": label, "postback": {"data": f"copy:{action['code']}"}}}
    body: dict[str, Any] = {"displayText": label, "postback": postback}
    if kind == "open_url":
        body["urlAction"] = {"openUrl": {"url": action["url"], "application": "browser"}}
    elif kind == "dial":
        body["dialerAction"] = {"dialPhoneNumber": {"phoneNumber": action["number"]}}
    elif kind == "map":
        if action.get("query"):
            location: dict[str, Any] = {"query": action["query"][:200]}
        else:
            location = {"latitude": action["latitude"], "longitude": action["longitude"]}
            if action.get("label"):
                location["label"] = action["label"][:100]
        body["mapAction"] = {"showLocation": {"location": location}}
    elif kind == "calendar":
        event = {
            "startTime": action["start"],
            "endTime": action["end"],
            "title": action["title"][:100],
        }
        if action.get("description"):
            event["description"] = action["description"][:500]
        body["calendarAction"] = {"createCalendarEvent": event}
    else:  # pragma: no cover - the template model admits no other action
        raise ValueError(f"unknown action {kind}")
    return {"action": body}


def _description(card: dict[str, Any]) -> str | None:
    lines = [card["body"]] if card.get("body") else []
    lines += [f"{f['label']}：{f['value']}" for f in card.get("fields", ())]
    if card.get("code") and card["code"] not in "".join(lines):
        lines.append(card["code"])
    text = "\n".join(lines)
    return text[:2000] or None


def _content(card: dict[str, Any], prefix: str) -> dict[str, Any]:
    content: dict[str, Any] = {"title": card["title"][:200]}
    description = _description(card)
    if description:
        content["description"] = description
    if card.get("media"):
        content["media"] = _media(card["media"])
    buttons = card.get("buttons") or []
    if buttons:
        content["suggestions"] = [
            _suggestion(b, f"{prefix}buttons.{i}") for i, b in enumerate(buttons[:4])
        ]
    return content


def chatbot_message(card: dict[str, Any], kind: str) -> dict[str, Any]:
    """The UP chatbot message for a rendered (and link-tracked) card."""
    if kind == "carousel":
        return {
            "message": {
                "generalPurposeCardCarousel": {
                    "layout": {"cardWidth": "MEDIUM_WIDTH"},
                    "content": [
                        _content(item, f"items.{n}.") for n, item in enumerate(card["items"][:10])
                    ],
                }
            }
        }
    return {
        "message": {
            "generalPurposeCard": {
                "layout": {"cardOrientation": "VERTICAL"},
                "content": _content(card, ""),
            }
        }
    }
