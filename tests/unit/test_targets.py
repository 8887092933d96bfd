"""One rendered card, every target: the carrier's UP message, each vendor's card, the SMS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cards.compiled import CompiledTemplate, RenderError
from cards.gsma import chatbot_message
from cards.links import TOKEN_LENGTH, MessageLinks, PreviewLinks, is_token
from cards.models import TemplateSpec
from cards.sms import compose, length
from cards.targets import all_targets, render_message
from cards.variables import check_variables
from cards.vendors import CAPABILITIES, Skip, vendor_payload
from gateway.demo import library_templates

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "data" / "gsma-chatbot-message.schema.json").read_text()
)
BRAND = {
    "name": "工商银行",
    "signature": "【工商银行】",
    "logo_url": "https://x.example/l.png",
    "color": "#C7000B",
    "verified": True,
}
ACTIONS: list[dict[str, Any]] = [
    {"type": "open_url", "url": "https://bank.example/a"},
    {"type": "dial", "number": "95588"},
    {"type": "copy_code", "code": "123456"},
    {"type": "reply", "text": "Y"},
    {
        "type": "calendar",
        "title": "还款日",
        "start": "2026-12-01T09:00:00+08:00",
        "end": "2026-12-01T10:00:00+08:00",
    },
    {"type": "map", "query": "工商银行 网点"},
    {"type": "map", "latitude": 37.87, "longitude": 112.55, "label": "太原分行"},
]


def _compiled(body: dict[str, Any]) -> CompiledTemplate:
    return CompiledTemplate.build(TemplateSpec.model_validate(body))


def _render(
    body: dict[str, Any], variables: dict[str, Any] | None = None, base: str = "https://g.example"
):  # type: ignore[no-untyped-def]
    return render_message(_compiled(body), BRAND, variables or {}, MessageLinks(base))


def _card(kind: str, buttons: list[dict[str, Any]]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "title": "标题",
        "body": "正文",
        "buttons": buttons,
        "media": {"url": "https://x.example/p.png", "height": "tall"},
    }
    if kind == "notice":
        base["fields"] = [{"label": "金额", "value": "100.00"}]
    if kind == "otp":
        base["code"] = "123456"
    if kind == "carousel":
        base["items"] = [{"title": f"卡{i}", "body": "b", "buttons": buttons} for i in range(3)]
    return {
        "brand_id": "b",
        "category": "transactional",
        "kind": kind,
        "card": base,
        "fallback_text": "正文",
    }


@pytest.mark.parametrize("kind", ["standard", "notice", "otp", "carousel"])
@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a["type"])
def test_carrier_payload_validates_against_gsma_schema(kind: str, action: dict[str, Any]) -> None:
    """Every kind with every action gives a UP chatbot message the GSMA schema accepts."""
    rendered = _render(_card(kind, [{"label": "按钮", "action": action}]))
    payload = chatbot_message(rendered.card, kind)  # type: ignore[arg-type]
    jsonschema.validate(payload, SCHEMA)
    key = "generalPurposeCardCarousel" if kind == "carousel" else "generalPurposeCard"
    assert key in payload["message"]


def test_library_templates_validate_for_every_target() -> None:
    """The demo library renders to every target, and its carrier payloads validate."""
    variables = {
        "code": "123456",
        "name": "张三",
        "amount": "1000.5",
        "date": "2026-12-01",
        "fund_id": "F001",
        "last4": "1234",
        "merchant": "星巴克",
        "time": "2026-11-23T09:30:00+08:00",
    }
    for template_id, body in library_templates().items():
        compiled = _compiled(body)
        context, problems = check_variables(compiled.spec.variables, variables)
        assert not problems, template_id
        rendered = render_message(compiled, BRAND, context, MessageLinks("https://g.example"))
        targets = all_targets(rendered)
        jsonschema.validate(targets["carrier_rich"], SCHEMA)
        assert targets["sms"]["text"].startswith("【工商银行】"), template_id
        assert set(targets["vendor_card"]) == set(CAPABILITIES)


def test_open_url_actions_become_tracked_links() -> None:
    """Every open_url in the card and the link in the SMS point at minted /c/ tokens."""
    body = _card("carousel", [{"label": "详情", "action": ACTIONS[0]}])
    minter = MessageLinks("https://g.example")
    rendered = render_message(_compiled(body), BRAND, {}, minter)
    urls = [b["action"]["url"] for item in rendered.card["items"] for b in item["buttons"]]  # type: ignore[index]
    assert all(u.startswith("https://g.example/c/") and is_token(u.rsplit("/", 1)[1]) for u in urls)
    assert [k.url for k in minter.links] == ["https://bank.example/a"] * 4
    assert [k.button for k in minter.links] == [
        "buttons.0",
        "items.0.buttons.0",
        "items.1.buttons.0",
        "items.2.buttons.0",
    ]
    assert len({k.token for k in minter.links}) == 4
    assert rendered.card["buttons"][0]["action"]["url"] in rendered.text  # type: ignore[index]


def test_links_written_in_sms_text_are_tracked() -> None:
    """A URL in the fallback text is replaced by a tracked link too."""
    body = {
        "brand_id": "b",
        "category": "transactional",
        "fallback_text": "详见 https://bank.example/x?a=1 谢谢",
    }
    minter = MessageLinks("https://g.example")
    rendered = render_message(_compiled(body), BRAND, {}, minter)
    assert "bank.example" not in rendered.text
    assert (
        minter.links[0].url == "https://bank.example/x?a=1"
        and minter.links[0].button == "sms.link.1"
    )


def test_sms_signature_first_and_marketing_opt_out() -> None:
    """The signature leads; marketing ends with an opt-out line unless it has one."""
    assert (
        compose("【银行】", "你好", marketing=False, link=None, link_in_text=False)
        == "【银行】你好"
    )
    assert (
        compose("【银行】", "你好", marketing=True, link=None, link_in_text=False)
        == "【银行】你好 回T退订"
    )
    assert (
        compose(
            "【银行】", "你好 拒收请回复R", marketing=True, link=None, link_in_text=False
        ).count("退订")
        == 0
    )
    assert (
        compose("【银行】", "看", marketing=False, link="https://g/c/x", link_in_text=False)
        == "【银行】看 详情 https://g/c/x"
    )
    assert (
        compose(
            "【银行】", "看 https://g/c/x", marketing=False, link="https://g/c/x", link_in_text=True
        )
        == "【银行】看 https://g/c/x"
    )


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # escape characters count twice
        ("a" * 159 + "{", "GSM-7", 161, 2),
        ("中" * 70, "UCS-2", 70, 1),
        ("中" * 71, "UCS-2", 71, 2),
        ("中" * 134, "UCS-2", 134, 2),
        ("中" * 135, "UCS-2", 135, 3),
        ("a" * 69 + "中", "UCS-2", 70, 1),
        ("😀" * 35, "UCS-2", 70, 1),  # outside the BMP: two UTF-16 units each
    ],
)
def test_segment_counting(text: str, encoding: str, units: int, segments: int) -> None:
    """GSM-7 160/153, UCS-2 70/67, escapes and surrogates counted as the network counts them."""
    got = length(text)
    assert (got.encoding, got.units, got.segments) == (encoding, units, segments)


def test_oppo_shows_only_links_and_three_cards() -> None:
    """OPPO: dial and copy are dropped, a map becomes a map web link, carousels cut to 3."""
    buttons = [
        {"label": "电话", "action": ACTIONS[1]},
        {"label": "地图", "action": ACTIONS[5]},
        {"label": "复制", "action": ACTIONS[2]},
    ]
    card = _render(_card("carousel", buttons)).card | {}
    card["items"] = [dict(i) for i in card["items"]] + [dict(card["items"][0])] * 2  # 5 cards
    vp = vendor_payload("oppo", card, "carousel", BRAND)
    assert len(vp.payload["cardList"]) == 3
    assert vp.payload["cardList"][0]["btnList"] == [
        {
            "btnName": "地图",
            "linkUrl": "https://uri.amap.com/search?keyword=%E5%B7%A5%E5%95%86%E9%93%B6%E8%A1%8C%20%E7%BD%91%E7%82%B9",
        }
    ]
    assert any("dial not supported" in n for n in vp.notes) and any(
        "cut to 3" in n for n in vp.notes
    )


def test_vivo_skips_carousels_and_shows_maps() -> None:
    """vivo has no carousel, so a carousel skips it; its own map action is kept."""
    with pytest.raises(Skip) as skip:
        vendor_payload("vivo", _render(_card("carousel", [])).card, "carousel", BRAND)  # type: ignore[arg-type]
    assert skip.value.reason == "carousel_unsupported"
    vp = vendor_payload(
        "vivo",
        _render(_card("standard", [{"label": "网点", "action": ACTIONS[6]}])).card,
        "standard",
        BRAND,
    )  # type: ignore[arg-type]
    assert vp.payload["content"]["operations"] == [
        {"label": "网点", "op": "locate", "arg": "37.87,112.55"}
    ]


def test_xiaomi_and_honor_cap_buttons_and_drop_unsupported() -> None:
    """Xiaomi shows 3 buttons of link/phone/copy; Honor drops calendars and keeps 3."""
    buttons = [{"label": a["type"][:10], "action": a} for a in ACTIONS[:4]]
    card = _render(_card("standard", buttons)).card
    xiaomi = vendor_payload("xiaomi", card, "standard", BRAND)  # type: ignore[arg-type]
    assert [a["kind"] for a in xiaomi.payload["pages"][0]["actions"]] == ["link", "phone", "copy"]
    cal = [{"label": "日历", "action": ACTIONS[4]}, {"label": "回复", "action": ACTIONS[3]}]
    honor = vendor_payload("honor", _render(_card("standard", cal)).card, "standard", BRAND)  # type: ignore[arg-type]
    assert [b["type"] for b in honor.payload["honorCard"]["cards"][0]["buttons"]] == ["reply"]


def test_huawei_shows_everything() -> None:
    """Huawei renders every action as itself."""
    buttons = [{"label": str(i), "action": a} for i, a in enumerate(ACTIONS[:4])]
    vp = vendor_payload("huawei", _render(_card("standard", buttons)).card, "standard", BRAND)  # type: ignore[arg-type]
    assert [b["action"]["type"] for b in vp.payload["cards"][0]["buttons"]] == [
        "URL",
        "CALL",
        "COPY",
        "REPLY",
    ]
    assert vp.notes == []


def test_rendered_limits_are_render_errors() -> None:
    """A title that only grows too long once rendered fails the render, naming the field."""
    body = {
        "brand_id": "b",
        "category": "transactional",
        "variables": {"n": {"type": "string"}},
        "card": {"title": "{{ n }}"},
        "fallback_text": "x",
    }
    with pytest.raises(RenderError) as err:
        _render(body, {"n": "长" * 51})
    assert err.value.loc == ("card", "title")


def test_preview_links_have_real_length() -> None:
    """Preview tokens are as long as real ones, so segment counts are true."""
    assert (
        len(PreviewLinks("https://g").mint("https://x", "b", "l").rsplit("/", 1)[1]) == TOKEN_LENGTH
    )


def test_templated_calendar_times_are_checked_once_rendered() -> None:
    """A calendar time from a variable must render to RFC 3339; otherwise a render error."""
    action = dict(ACTIONS[4], start="{{ day }}T09:00:00+08:00")
    body = _card("standard", [{"label": "加入日历", "action": action}])
    body["variables"] = {"day": {"type": "string", "required": True}}
    card = _render(body, {"day": "2026-12-01"}).card
    assert card is not None and card["buttons"][0]["action"]["start"].startswith("2026-12-01T09")
    with pytest.raises(RenderError) as err:
        _render(body, {"day": "tomorrow"})
    assert err.value.loc == ("card", "buttons", 0, "action")
