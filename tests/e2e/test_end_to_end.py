"""The gateway and the mock providers as real processes, driven over HTTP like a bank would."""

from __future__ import annotations

import signal
import time
from typing import Any

from tests.e2e.conftest import Stack, call

TEMPLATE = {
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


def _setup(stack: Stack) -> dict[str, str]:
    keys = stack.tenant("bank_e2e")
    auth = {"Authorization": f"Bearer {keys['campaign_key']}"}
    brand = {"name": "工商银行", "signature": "【工商银行】", "verified": True}
    assert call("PUT", f"{stack.base}/v1/brands/icbc", brand, auth)[0] == 200
    assert call("PUT", f"{stack.base}/v1/templates/otp", TEMPLATE, auth)[0] == 200
    return auth


def _wait_status(stack: Stack, auth: dict[str, str], ids: list[str], status: str) -> list[Any]:
    deadline = time.monotonic() + 20
    while True:
        msgs = [call("GET", f"{stack.base}/v1/messages/{i}", headers=auth)[1] for i in ids]
        if all(m["status"] == status for m in msgs) or time.monotonic() > deadline:
            return msgs
        time.sleep(0.1)


def test_a_send_is_delivered_end_to_end(stack: Stack) -> None:
    """A send crosses real HTTP to the mock carrier, whose signed report marks it delivered."""
    auth = _setup(stack)
    sends = [("13812345678", "cmcc"), ("13012345678", "cucc"), ("18912345678", "ctcc")]
    ids = []
    for number, _ in sends:
        status, body = call(
            "POST",
            f"{stack.base}/v1/messages",
            {"to": number, "template_id": "otp", "variables": {"code": "123456"}, "route": "sms"},
            auth | {"Idempotency-Key": f"otp-{number}"},
        )
        assert status == 202 and body["status"] == "accepted"
        ids.append(body["message_id"])
    msgs = _wait_status(stack, auth, ids, "delivered")
    for msg, (_, carrier) in zip(msgs, sends, strict=True):
        assert msg["status"] == "delivered", msg
        assert msg["provider"] == carrier and msg["route"] == "sms"
        assert msg["rendered"]["text"] == "【工商银行】您的验证码123456，5分钟内有效。"
        assert [e["type"] for e in msg["events"]] == ["accepted", "submitted", "delivered"]
    _, stats = call("GET", f"{stack.mock}/_mock/stats")
    for _, carrier in sends:
        assert stats[carrier] == {"submitted": 1, "distinct": 1}
    _, inbox = call("GET", f"{stack.mock}/_mock/inbox?to=%2B8613812345678")
    assert [m["client_ref"] for m in inbox["messages"]] == [ids[0]]


def test_forged_report_is_refused_by_the_running_gateway(stack: Stack) -> None:
    """An unsigned report to the real service is a 401 problem."""
    status, body = call(
        "POST",
        f"{stack.base}/callbacks/cmcc/dlr",
        raw=b'{"reports": []}',
        headers={"X-Signature": "00"},
    )
    assert status == 401 and body["status"] == 401


def test_sigterm_drains_and_exits_cleanly(stack: Stack) -> None:
    """SIGTERM stops the gateway gracefully: exit code 0, nothing accepted is lost, and its
    admin socket is removed."""
    auth = _setup(stack)
    ids = [
        call(
            "POST",
            f"{stack.base}/v1/messages",
            {"to": f"138{i:08d}", "template_id": "otp", "variables": {"code": "654321"}},
            auth,
        )[1]["message_id"]
        for i in range(50)
    ]
    socket = stack.cwd / "var" / "admin" / "admin.sock"
    assert socket.exists()
    stack.gateway.send_signal(signal.SIGTERM)
    assert stack.gateway.wait(timeout=30) == 0
    assert not socket.exists()  # its admin socket goes with it
    import sqlite3

    conn = sqlite3.connect(stack.cwd / "var" / "gateway.db")
    stored = {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    queued = {r[0] for r in conn.execute("SELECT message_id FROM dispatch_queue")}
    conn.close()
    assert set(ids) <= stored
    _, stats = call("GET", f"{stack.mock}/_mock/stats")
    # every accepted message was either handed to the carrier or is still queued for the next start
    handed_over = sum(s["distinct"] for s in stats.values())
    assert handed_over + len(queued) >= len(ids)


def _reviews(
    stack: Stack, auth: dict[str, str], template_id: str, want: set[str]
) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        template = call("GET", f"{stack.base}/v1/templates/{template_id}", headers=auth)[1]
        states = {r["state"] for r in template["reviews"].values()}
        if states <= want or time.monotonic() > deadline:
            return dict(template["reviews"])
        time.sleep(0.2)


def test_vendors_review_each_version(stack: Stack) -> None:
    """A template is reviewed by the real mock vendors: a clean card is approved by every
    vendor that can show it; one claiming guaranteed returns is rejected, with the reason."""
    auth = _setup(stack)
    reviews = _reviews(stack, auth, "otp", {"approved", "rejected", "not_applicable"})
    assert {v["state"] for v in reviews.values()} == {"approved"}, reviews
    bad = dict(
        TEMPLATE,
        category="marketing",
        kind="standard",
        card={"title": "保本理财，稳赚不赔", "body": "{{ code }}"},
    )
    assert call("PUT", f"{stack.base}/v1/templates/promo", bad, auth)[0] == 200
    reviews = _reviews(stack, auth, "promo", {"approved", "rejected", "not_applicable"})
    assert {v["state"] for v in reviews.values()} == {"rejected"}
    assert all(v["reason"].startswith("banned_claim") for v in reviews.values())


def test_keys_are_added_and_revoked_through_the_running_gateway(stack: Stack) -> None:
    """Against a running gateway the tenant and key commands go through its admin socket
    (a folder only its owner may enter): a new key works at once, and a revoked one is
    refused at once, without waiting out the authenticator's cache."""
    import json
    import stat
    import subprocess
    import sys

    def gateway(*args: str, stdin: str | None = None) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=stack.env,
            cwd=stack.cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)

    folder = stack.cwd / "var" / "admin"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    keys = stack.tenant("bank_k")
    old = {"Authorization": f"Bearer {keys['campaign_key']}"}
    assert call("GET", f"{stack.base}/v1/settings", headers=old)[0] == 200
    new = gateway("key", "add", "bank_k", "campaign")["key"]
    assert call("GET", f"{stack.base}/v1/settings", headers={"Authorization": f"Bearer {new}"})[0] == 200
    assert gateway("key", "revoke", stdin=keys["campaign_key"] + "\n")["revoked"] is True
    assert call("GET", f"{stack.base}/v1/settings", headers=old)[0] == 401
    assert call("GET", f"{stack.base}/v1/settings", headers={"Authorization": f"Bearer {new}"})[0] == 200
