"""Brands and templates through the API: validation, versions, preview, vendor review."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.conftest import FUND_TEMPLATE, Gateway
from tests.fakes import review_body

OTP: dict[str, Any] = {
    "brand_id": "icbc",
    "category": "transactional",
    "kind": "otp",
    "variables": {"code": {"type": "string", "pattern": "[0-9]{6}"}},
    "card": {
        "title": "验证码",
        "code": "{{ code }}",
        "buttons": [{"label": "复制", "action": {"type": "copy_code", "code": "{{ code }}"}}],
    },
    "fallback_text": "您的验证码{{ code }}，5分钟内有效。",
}


async def _put(gw: Gateway, template_id: str, body: Any) -> tuple[int, Any]:
    resp = await gw.client.put(f"/v1/templates/{template_id}", json=body, headers=gw.auth())
    return resp.status, await resp.json()


def _with(path: list[Any], value: Any, base: dict[str, Any] = FUND_TEMPLATE) -> dict[str, Any]:
    body = copy.deepcopy(base)
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


BUTTON = {"label": "详情", "action": {"type": "open_url", "url": "https://bank.example/x"}}
CALENDAR = {
    "type": "calendar",
    "title": "还款日",
    "start": "2026-12-01T09:00:00+08:00",
    "end": "2026-12-01T10:00:00+08:00",
}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (_with(["card", "title"], "{{ name "), ["card", "title"]),
        (_with(["card", "body"], "{{ nmae }}"), ["card", "body"]),
        (_with(["fallback_text"], "{{ ''.__class__.__mro__ }}"), ["fallback_text"]),
        (_with(["card", "title"], "{{ name|attr('__class__') }}"), ["card", "title"]),
        (_with(["card", "buttons"], [BUTTON] * 5), ["card", "buttons"]),
        (
            _with(["card", "buttons"], [{**BUTTON, "label": "长" * 26}]),
            ["card", "buttons", 0, "label"],
        ),
        (_with(["card", "title"], "长" * 51), ["card", "title"]),
        (
            _with(
                ["card", "buttons"],
                [{"label": "x", "action": {"type": "open_url", "url": "ftp://x/y"}}],
            ),
            ["card", "buttons", 0, "action", "url"],
        ),
        (
            _with(
                ["card", "buttons"],
                [{"label": "x", "action": {"type": "open_url", "url": "javascript:alert(1)"}}],
            ),
            ["card", "buttons", 0, "action", "url"],
        ),
        (
            _with(
                ["card", "buttons"],
                [{"label": "x", "action": {"type": "dial", "number": "call me"}}],
            ),
            ["card", "buttons", 0, "action", "number"],
        ),
        (
            _with(["card", "buttons"], [{"label": "x", "action": {"type": "teleport"}}]),
            ["card", "buttons", 0, "action"],
        ),
        (  # a query or a position, not both
            _with(
                ["card", "buttons"],
                [
                    {
                        "label": "x",
                        "action": {"type": "map", "query": "x", "latitude": 1, "longitude": 2},
                    }
                ],
            ),
            ["card", "buttons", 0, "action"],
        ),
        (
            _with(["card", "buttons"], [{"label": "x", "action": CALENDAR | {"start": "soon"}}]),
            ["card", "buttons", 0, "action"],
        ),
        (
            _with(
                ["card", "buttons"],
                [{"label": "x", "action": CALENDAR | {"end": "2026-12-01T08:00:00+08:00"}}],
            ),
            ["card", "buttons", 0, "action"],
        ),
        (
            _with(
                ["card", "body"], "{% for a in name %}{% for b in name %}{% endfor %}{% endfor %}"
            ),
            ["card", "body"],
        ),
        (_with(["card", "body"], "{{ name.upper }}"), ["card", "body"]),
        (_with(["kind"], "carousel"), ["card", "items"]),
        (
            _with(["card", "items"], [{"title": "a"}] * 11, _with(["kind"], "carousel")),
            ["card", "items"],
        ),
        (
            _with(["card", "items"], [{"title": "a"}], _with(["kind"], "carousel")),
            ["card", "items"],
        ),
        (_with(["kind"], "notice"), ["card", "fields"]),
        (_with(["kind"], "otp"), ["card", "code"]),
        (_with(["category"], "spam"), ["category"]),
        (_with(["brand_id"], "nobody"), ["brand_id"]),
        (_with(["surprise"], 1), ["surprise"]),
        (_with(["variables", "amount", "type"], "money"), ["variables", "amount", "type"]),
        (_with(["variables", "amount", "pattern"], r"([0-9]"), ["variables", "amount", "pattern"]),
        (_with(["card", "body"], "{{ name|join(name) }}"), ["card", "body"]),
    ],
)
async def test_invalid_templates_are_422_naming_the_place(
    gw: Gateway, body: Any, loc: list[Any]
) -> None:
    """Every rule a template breaks is a 422 whose errors name where."""
    status, problem = await _put(gw, "bad", body)
    assert status == 422, problem
    assert loc in [e["loc"] for e in problem["errors"]], problem["errors"]
    assert (await gw.client.get("/v1/templates/bad", headers=gw.auth())).status == 404


async def test_every_put_is_a_new_immutable_version(gw: Gateway) -> None:
    """Versions count up; old ones stay readable; a message records the version it used."""
    status, v2 = await _put(
        gw, "fund_due", _with(["fallback_text"], "新版 {{ name }} {{ amount }}")
    )
    assert status == 200 and v2["version"] == 2
    old = await (await gw.client.get("/v1/templates/fund_due?version=1", headers=gw.auth())).json()
    assert old["version"] == 1 and old["fallback_text"] == FUND_TEMPLATE["fallback_text"]
    latest = await (await gw.client.get("/v1/templates/fund_due", headers=gw.auth())).json()
    assert latest["version"] == 2
    msg = await gw.message(await gw.send())
    assert msg["template_version"] == 2 and "新版" in msg["rendered"]["text"]


async def test_preview_answers_every_target(gw: Gateway) -> None:
    """Preview gives the card, the SMS with its encoding and segments, HTML and each route."""
    await _put(gw, "otp", OTP)
    resp = await gw.client.post(
        "/v1/templates/otp/preview", json={"variables": {"code": "123456"}}, headers=gw.auth()
    )
    assert resp.status == 200
    out = await resp.json()
    assert out["card"]["code"] == "123456"
    assert out["fallback_text"] == "【工商银行】您的验证码123456，5分钟内有效。"
    assert (out["encoding"], out["sms_segments"]) == ("UCS-2", 1)
    assert "<html" in out["html"] and "工商银行" in out["html"] and "已认证" in out["html"]
    assert "generalPurposeCard" in out["targets"]["carrier_rich"]["message"]
    assert set(out["targets"]["vendor_card"]) == {"huawei", "xiaomi", "oppo", "vivo", "honor"}


async def test_preview_names_each_bad_variable(gw: Gateway) -> None:
    """Missing and ill-typed variables are one 422 naming each of them."""
    resp = await gw.client.post(
        "/v1/templates/fund_due/preview", json={"variables": {"amount": "x"}}, headers=gw.auth()
    )
    assert resp.status == 422
    locs = [e["loc"] for e in (await resp.json())["errors"]]
    assert ["variables", "name"] in locs and ["variables", "amount"] in locs


async def test_preview_escapes_html(gw: Gateway) -> None:
    """Variables land in the HTML preview escaped, never as markup."""
    resp = await gw.client.post(
        "/v1/templates/fund_due/preview",
        json={"variables": {"name": "<script>x</script>", "amount": "1"}},
        headers=gw.auth(),
    )
    html = (await resp.json())["html"]
    assert "<script>x" not in html and "&lt;script&gt;" in html


async def test_injection_in_variables_is_literal_on_send(gw: Gateway) -> None:
    """A template-looking variable value is sent as the text it is."""
    msg = await gw.message(await gw.send(variables={"name": "{{7*7}}", "amount": "1"}))
    assert "{{7*7}}" in msg["rendered"]["text"] and "49" not in msg["rendered"]["text"]


async def test_render_error_on_send_is_a_failed_message(gw: Gateway) -> None:
    """A send whose card cannot render is accepted as a failed message (render_error)."""
    body = _with(["card", "title"], "{{ name }}{{ name }}{{ name }}")  # 3 × 20 > 50
    await _put(gw, "long", body)
    message_id = await gw.send(template_id="long", variables={"name": "名" * 20, "amount": "1"})
    msg = await gw.message(message_id)
    assert msg["status"] == "failed" and msg["reason"] == "render_error"
    assert [e["type"] for e in msg["events"]] == ["accepted", "failed"]
    assert await gw.services.dispatcher.run_once() == 0


async def test_vendor_review_lifecycle(gw: Gateway) -> None:
    """A new version is submitted to every vendor that can show it; verdicts come back signed."""
    assert await gw.services.reviews.run_once() == 10  # the fixture's templates, two tenants
    await _put(gw, "otp", OTP)
    template = await (await gw.client.get("/v1/templates/otp", headers=gw.auth())).json()
    assert {v["state"] for v in template["reviews"].values()} == {"pending"}
    assert await gw.services.reviews.run_once() == 5
    huawei = gw.providers["huawei"].review_requests[-1]  # type: ignore[attr-defined]
    assert huawei["template_ref"].endswith(":otp:v1") and huawei["callback_url"].endswith(
        "/callbacks/huawei/review"
    )
    body, sig = review_body((huawei["review_id"], huawei["template_ref"], "approved", None))
    assert (
        await gw.client.post("/callbacks/huawei/review", data=body, headers={"X-Signature": sig})
    ).status == 200
    oppo = gw.providers["oppo"].review_requests[-1]  # type: ignore[attr-defined]
    body, sig = review_body(
        (oppo["review_id"], oppo["template_ref"], "rejected", "banned_claim: 保本")
    )
    await gw.client.post("/callbacks/oppo/review", data=body, headers={"X-Signature": sig})
    reviews = (await (await gw.client.get("/v1/templates/otp", headers=gw.auth())).json())[
        "reviews"
    ]
    assert reviews["huawei"]["state"] == "approved"
    assert reviews["oppo"] == {
        **reviews["oppo"],
        "state": "rejected",
        "reason": "banned_claim: 保本",
    }
    assert reviews["vivo"]["state"] == "submitted"
    tenant = gw.keys["bank_a"]["tenant_id"]
    assert await gw.services.catalog.approved_vendors(tenant, "otp", 1) == {"huawei"}
    await _put(gw, "otp", OTP)  # a new version starts its own reviews
    assert await gw.services.catalog.approved_vendors(tenant, "otp", 2) == frozenset()


async def test_forged_review_callback_is_401(gw: Gateway) -> None:
    """An unsigned verdict changes nothing."""
    await _put(gw, "otp", OTP)
    await gw.services.reviews.run_once()
    r = gw.providers["huawei"].review_requests[-1]  # type: ignore[attr-defined]
    body, _ = review_body((r["review_id"], r["template_ref"], "approved", None))
    resp = await gw.client.post(
        "/callbacks/huawei/review", data=body, headers={"X-Signature": "00"}
    )
    assert resp.status == 401
    reviews = (await (await gw.client.get("/v1/templates/otp", headers=gw.auth())).json())[
        "reviews"
    ]
    assert reviews["huawei"]["state"] == "submitted"


async def test_vendor_that_cannot_show_a_kind_is_not_applicable(gw: Gateway) -> None:
    """A carousel is not sent to review at vivo, which shows no carousels."""
    carousel = _with(
        ["card", "items"],
        [{"title": "a", "buttons": [BUTTON]}, {"title": "b"}],
        _with(["kind"], "carousel"),
    )
    status, out = await _put(gw, "pick", carousel)
    assert status == 200
    assert out["reviews"]["vivo"] == {
        **out["reviews"]["vivo"],
        "state": "not_applicable",
        "reason": "carousel_unsupported",
    }
    assert out["reviews"]["huawei"]["state"] == "pending"


async def test_review_submission_retries(gw: Gateway) -> None:
    """A vendor that is down gets the review again later, not never."""
    from gateway.errors import RetryableProviderError

    await gw.services.reviews.run_once()  # the fixture's templates
    gw.providers["huawei"].review_fail_next = [RetryableProviderError("unavailable")]  # type: ignore[attr-defined]
    await _put(gw, "otp", OTP)
    await gw.services.reviews.run_once()
    reviews = (await (await gw.client.get("/v1/templates/otp", headers=gw.auth())).json())[
        "reviews"
    ]
    assert reviews["huawei"]["state"] == "pending"
    gw.clock.advance(5)
    await gw.services.reviews.run_once()
    assert gw.providers["huawei"].review_requests[-1]["template_ref"].endswith(":otp:v1")  # type: ignore[attr-defined]


async def test_brands(gw: Gateway) -> None:
    """Brands are put, read and listed; a bad colour or logo URL is named."""
    resp = await gw.client.put(
        "/v1/brands/ccb",
        json={
            "name": "建设银行",
            "signature": "【建设银行】",
            "logo_url": "https://x.example/ccb.png",
            "color": "#0066B3",
            "verified": True,
        },
        headers=gw.auth(),
    )
    assert resp.status == 200
    got = await (await gw.client.get("/v1/brands/ccb", headers=gw.auth())).json()
    assert got["signature"] == "【建设银行】" and got["verified"] is True
    listing = await (await gw.client.get("/v1/brands", headers=gw.auth())).json()
    assert [b["brand_id"] for b in listing["items"]] == ["ccb", "icbc"]
    bad = await gw.client.put(
        "/v1/brands/x",
        json={"name": "x", "signature": "x", "color": "red", "logo_url": "javascript:1"},
        headers=gw.auth(),
    )
    assert bad.status == 422
    assert {tuple(e["loc"]) for e in (await bad.json())["errors"]} == {("color",), ("logo_url",)}
    for verified in ("yes", 1):  # not turned into true
        body = {"name": "x", "signature": "x", "verified": verified}
        resp = await gw.client.put("/v1/brands/x", json=body, headers=gw.auth())
        assert resp.status == 422 and (await resp.json())["errors"][0]["loc"] == ["verified"]


@pytest.mark.parametrize(
    "url",
    ["https://bank.example{{ name }}", "https://bank.example@{{ name }}/x", "https://{{ name }}/x"],
)
async def test_a_variable_can_never_change_where_a_link_points(gw: Gateway, url: str) -> None:
    """A URL's host is literal and ends before any template text: no open redirect."""
    body = _with(["card", "buttons"], [{"label": "x", "action": {"type": "open_url", "url": url}}])
    status, problem = await _put(gw, "redirector", body)
    assert status == 422, problem


async def test_control_characters_in_a_rendered_url_fail_the_render(gw: Gateway) -> None:
    """A variable that puts a line break into a URL fails the message, never the redirect."""
    body = _with(
        ["card", "buttons"],
        [
            {
                "label": "x",
                "action": {"type": "open_url", "url": "https://bank.example/p?n={{ name }}"},
            }
        ],
    )
    await _put(gw, "linky", body)
    message_id = await gw.send(
        template_id="linky", variables={"name": "a\r\nSet-Cookie: x", "amount": "1"}
    )
    assert (await gw.message(message_id))["reason"] == "render_error"


async def test_huge_values_are_refused_or_bounded(gw: Gateway) -> None:
    """A decimal with an absurd exponent is refused; replace cannot blow a field up."""
    resp = await gw.client.post(
        "/v1/messages",
        json={
            "to": "13812345678",
            "template_id": "fund_due",
            "variables": {"name": "x", "amount": "1e5000000"},
        },
        headers=gw.auth(),
    )
    assert resp.status == 422
    body = _with(["card", "title"], '{{ name|replace("", "xxxxxxxxxx") }}')
    status, _ = await _put(gw, "bomb", body)
    assert status == 200
    message_id = await gw.send(template_id="bomb")
    assert (await gw.message(message_id))["reason"] == "render_error"


async def test_a_stored_version_that_fails_todays_checks_is_refused_not_a_500(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version stored before a check it fails existed (here written straight into the
    store, as an older gateway could have): a send naming it is a 422 saying to store a new
    version (built and refused once, not per send), the list leaves it out, and a new
    version sends again."""
    from gateway.usecases import catalog

    builds: list[object] = []
    real_build = catalog.CompiledTemplate.build
    monkeypatch.setattr(
        catalog.CompiledTemplate, "build", lambda spec: builds.append(spec) or real_build(spec)
    )
    old = copy.deepcopy(FUND_TEMPLATE)
    old["card"]["body"] = "{{ name|join(name) }}"
    await gw.services.store.put_template(
        "bank_a", "old_fund", old, gw.clock.now(), reviews={"huawei": None}
    )
    await gw.services.reviews.run_once()  # its review is settled, not retried for ever
    [review] = await gw.services.store.reviews_for("bank_a", "old_fund", 1)
    assert (review.state, review.reason) == ("not_applicable", "fails_checks")
    body = {
        "to": "13812345678",
        "template_id": "old_fund",
        "variables": {"name": "张三", "amount": "1"},
    }
    resp = await gw.client.post("/v1/messages", json=body, headers=gw.auth())
    assert resp.status == 422
    problem = await resp.json()
    assert problem["errors"][0]["loc"] == ["template_id"] and "new version" in problem["detail"]
    again = await gw.client.post("/v1/messages", json=body, headers=gw.auth())
    assert again.status == 422 and await again.json() == problem
    assert len(builds) == 1  # the review and both sends: one build, then the refusal kept
    listed = await (await gw.client.get("/v1/templates", headers=gw.auth())).json()
    assert "old_fund" not in [t["template_id"] for t in listed["items"]]
    resp = await gw.client.put("/v1/templates/old_fund", json=FUND_TEMPLATE, headers=gw.auth())
    assert resp.status == 200
    assert (await gw.client.post("/v1/messages", json=body, headers=gw.auth())).status == 202
