"""Tracked links: minted per message and button, redirected, counted once per real click."""

from __future__ import annotations

import asyncio
import re

from tests.conftest import FUND_TEMPLATE, Gateway

URL_TEMPLATE = FUND_TEMPLATE | {
    "card": FUND_TEMPLATE["card"]
    | {
        "buttons": [
            {
                "label": "查看详情",
                "action": {"type": "open_url", "url": "https://bank.example/fund?id={{ name }}"},
            },
            {"label": "致电客服", "action": {"type": "dial", "number": "95588"}},
        ]
    },
}


async def _token(gw: Gateway) -> tuple[str, str]:
    await gw.client.put("/v1/templates/linked", json=URL_TEMPLATE, headers=gw.auth())
    await gw.client.put("/v1/recipients/13812345678", json={"tags": ["x"]}, headers=gw.auth())
    message_id = await gw.send(template_id="linked")
    msg = await gw.message(message_id)
    url = msg["rendered"]["card"]["buttons"][0]["action"]["url"]
    assert url.startswith(gw.services.settings.links_base_url + "/c/")
    assert url in msg["rendered"]["text"]  # the SMS carries the same tracked link
    return message_id, url.rsplit("/", 1)[1]


async def _settle(gw: Gateway) -> None:
    await gw.services.clicks.drain()
    await asyncio.sleep(0)


async def test_click_redirects_and_is_recorded(gw: Gateway) -> None:
    """A click answers 302 to the template's URL and records which message and button."""
    message_id, token = await _token(gw)
    assert len(token) <= 12 and re.fullmatch(r"[0-9A-Za-z_-]+", token)
    resp = await gw.client.get(
        f"/c/{token}",
        allow_redirects=False,
        headers={"User-Agent": "Mozilla/5.0 (Linux; Android 14; HUAWEI)"},
    )
    assert resp.status == 302
    assert resp.headers["Location"] == "https://bank.example/fund?id=张三"
    await _settle(gw)
    clicked = [e for e in (await gw.message(message_id))["events"] if e["type"] == "clicked"]
    assert clicked == [{**clicked[0], "button": "buttons.0", "label": "查看详情"}]
    assert "HUAWEI" in clicked[0]["user_agent"]
    recipient = await (await gw.client.get("/v1/recipients/13812345678", headers=gw.auth())).json()
    assert recipient["attrs"]["last_clicked_at"] == gw.clock.now()
    assert recipient["attrs"]["last_clicked_route"] is None  # not dispatched yet


async def test_a_burst_of_clicks_is_every_event_and_the_latest_last_click(gw: Gateway) -> None:
    """Clicks written in one batch: each is an event; the recipient keeps the latest one,
    whatever order the batch holds them in."""
    message_id, token = await _token(gw)
    link = await gw.services.store.find_link(token)
    assert link is not None
    t = gw.clock.now()
    await gw.services.store.record_clicks(
        [(link, t + 5, "a"), (link, t + 2, "b"), (link, t + 3, None)]
    )
    clicked = [e for e in (await gw.message(message_id))["events"] if e["type"] == "clicked"]
    assert sorted(e.get("user_agent") or "" for e in clicked) == ["", "a", "b"]
    recipient = await (await gw.client.get("/v1/recipients/13812345678", headers=gw.auth())).json()
    assert recipient["attrs"]["last_clicked_at"] == t + 5


async def test_previews_and_head_are_not_clicks(gw: Gateway) -> None:
    """Link-preview fetchers and HEAD requests get the redirect but count nothing."""
    message_id, token = await _token(gw)
    for ua in (
        "facebookexternalhit/1.1",
        "Slackbot-LinkExpanding 1.0",
        "WhatsApp/2.23",
        "TelegramBot",
    ):
        resp = await gw.client.get(f"/c/{token}", allow_redirects=False, headers={"User-Agent": ua})
        assert resp.status == 302
    assert (await gw.client.head(f"/c/{token}", allow_redirects=False)).status == 302
    await _settle(gw)
    assert "clicked" not in [e["type"] for e in (await gw.message(message_id))["events"]]


async def test_unique_and_total_clicks(gw: Gateway) -> None:
    """Three clicks on one link are three events (total), one message (unique)."""
    message_id, token = await _token(gw)
    for _ in range(3):
        await gw.client.get(f"/c/{token}", allow_redirects=False)
    await _settle(gw)
    events = (await gw.message(message_id))["events"]
    assert [e["type"] for e in events].count("clicked") == 3


async def test_unknown_and_tampered_tokens_are_404_without_location(gw: Gateway) -> None:
    """A token the gateway did not mint answers 404, redirecting nowhere."""
    _, token = await _token(gw)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, "short", "x" * 10, "../../etc", "https%3A%2F%2Fevil.example"):
        resp = await gw.client.get(f"/c/{bad}", allow_redirects=False)
        assert resp.status == 404, bad
        assert "Location" not in resp.headers


async def test_a_link_in_a_variable_never_becomes_the_banks_tracked_link(gw: Gateway) -> None:
    """The SMS's own links are tracked; a link that came in a variable (a customer's
    nickname, say) stays as it was: the bank's short link must not redirect to it."""
    template = FUND_TEMPLATE | {"fallback_text": "{{ name }}，详询 https://bank.example/help"}
    await gw.client.put("/v1/templates/texted", json=template, headers=gw.auth())
    phish = "https://ph.sh/x"
    message_id = await gw.send(
        template_id="texted", variables={"name": f"客户 {phish}", "amount": "1"}
    )
    text = (await gw.message(message_id))["rendered"]["text"]
    [tracked] = re.findall(r"http://[^\s]+/c/[A-Za-z0-9_-]+", text)
    assert phish in text and "https://bank.example/help" not in text
    resp = await gw.client.get(tracked[tracked.index("/c/") :], allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "https://bank.example/help"
