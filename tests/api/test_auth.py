"""Authentication, roles and tenant isolation, as a client sees them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import FUND_TEMPLATE, Gateway


async def test_no_key_is_401_problem(gw: Gateway) -> None:
    """A call without a key answers 401 as problem+json with a Bearer challenge."""
    resp = await gw.client.get("/v1/templates")
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert body["status"] == 401 and body["title"] and body["detail"]


async def test_wrong_key_is_401(gw: Gateway) -> None:
    """An unknown key, or a malformed header, answers 401."""
    for header in ("Bearer gw_campaign_nope", "Basic abc", "Bearer "):
        resp = await gw.client.get("/v1/templates", headers={"Authorization": header})
        assert resp.status == 401, header


async def test_the_scheme_name_is_case_insensitive(gw: Gateway) -> None:
    """``bearer`` and ``BEARER`` name the same scheme as ``Bearer`` (RFC 9110)."""
    key = gw.keys["bank_a"]["campaign_key"]
    for scheme in ("bearer", "BEARER"):
        resp = await gw.client.get("/v1/templates", headers={"Authorization": f"{scheme} {key}"})
        assert resp.status == 200, scheme


async def test_ops_key_cannot_send(gw: Gateway) -> None:
    """The right key with the wrong role answers 403 and sends nothing."""
    resp = await gw.client.post(
        "/v1/messages",
        json={"to": "13812345678", "template_id": "fund_due", "variables": {}},
        headers=gw.auth(role="ops"),
    )
    assert resp.status == 403
    assert (await resp.json())["status"] == 403
    assert await gw.services.dispatcher.run_once() == 0


async def test_ops_key_reads_masked_numbers(gw: Gateway) -> None:
    """An ops key may read a message, with the number masked; a campaign key sees it whole."""
    message_id = await gw.send()
    resp = await gw.client.get(f"/v1/messages/{message_id}", headers=gw.auth(role="ops"))
    assert resp.status == 200
    assert (await resp.json())["to"] == "+86138****5678"
    assert (await gw.message(message_id))["to"] == "+8613812345678"


OTP_TEMPLATE = {
    "brand_id": "icbc",
    "category": "transactional",
    "kind": "otp",
    "variables": {"code": {"type": "string", "pattern": "[0-9]{6}", "required": True}},
    "card": {
        "title": "登录验证码",
        "body": "验证码 {{ code }}，5分钟内有效。",
        "code": "{{ code }}",
        "buttons": [{"label": "复制", "action": {"type": "copy_code", "code": "{{ code }}"}}],
    },
    "fallback_text": "您的验证码为{{ code }}，请勿泄露。",
}


async def test_ops_key_never_reads_a_one_time_code(gw: Gateway) -> None:
    """An OTP message read with an ops key has its code blanked everywhere; the campaign key
    that sent it reads it whole."""
    resp = await gw.client.put("/v1/templates/otp", json=OTP_TEMPLATE, headers=gw.auth())
    assert resp.status == 200, await resp.text()
    message_id = await gw.send(template_id="otp", variables={"code": "924713"})
    resp = await gw.client.get(f"/v1/messages/{message_id}", headers=gw.auth(role="ops"))
    as_ops = await resp.json()
    assert "924713" not in json.dumps(as_ops, ensure_ascii=False)
    assert "••••••" in as_ops["rendered"]["text"]
    assert as_ops["rendered"]["card"]["code"] == "••••••"
    assert "924713" in (await gw.message(message_id))["rendered"]["text"]


async def test_other_tenants_message_is_404(gw: Gateway) -> None:
    """Another tenant's message id answers exactly like an id that does not exist."""
    message_id = await gw.send(tenant="bank_a")
    theirs = await gw.client.get(f"/v1/messages/{message_id}", headers=gw.auth("bank_b"))
    missing = await gw.client.get("/v1/messages/01NOPE", headers=gw.auth("bank_b"))
    assert theirs.status == missing.status == 404
    a, b = await theirs.json(), await missing.json()
    assert a["title"] == b["title"] and a["detail"] == b["detail"]


async def test_other_tenants_templates_and_brands_are_invisible(gw: Gateway) -> None:
    """A template or brand of another tenant is 404, absent from lists and unusable in sends."""
    resp = await gw.client.put(
        "/v1/templates/only_a", json=FUND_TEMPLATE, headers=gw.auth("bank_a")
    )
    assert resp.status == 200
    assert (await gw.client.get("/v1/templates/only_a", headers=gw.auth("bank_b"))).status == 404
    listing = await (await gw.client.get("/v1/templates", headers=gw.auth("bank_b"))).json()
    assert "only_a" not in [t["template_id"] for t in listing["items"]]
    resp = await gw.client.post(
        "/v1/messages",
        json={"to": "13812345678", "template_id": "only_a", "variables": {}},
        headers=gw.auth("bank_b"),
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["template_id"]
    await gw.client.put(
        "/v1/brands/secret",
        json={"name": "A", "signature": "【A】"},
        headers=gw.auth("bank_a"),
    )
    assert (await gw.client.get("/v1/brands/secret", headers=gw.auth("bank_b"))).status == 404


async def test_keys_are_stored_hashed(gw: Gateway) -> None:
    """No API key is stored in clear."""
    path = gw.services.settings.sqlite_path
    conn = sqlite3.connect(path)
    stored = {row[0] for row in conn.execute("SELECT key_hash FROM api_keys")}
    conn.close()
    for keys in gw.keys.values():
        assert keys["campaign_key"] not in stored and keys["ops_key"] not in stored
        assert len(stored) == 4


def test_tenant_create_cli(tmp_path: Path) -> None:
    """``python -m gateway tenant create`` prints the contract's JSON; a duplicate fails."""
    env = dict(
        os.environ,
        GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path / 'g.db'}",
        GATEWAY_VAR_DIR=str(tmp_path),
    )
    cmd = [sys.executable, "-m", "gateway", "tenant", "create", "bank_x"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True)
    keys = json.loads(out.stdout)
    assert keys["tenant_id"] == "bank_x"
    assert keys["campaign_key"] != keys["ops_key"]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "exists" in again.stderr
    bad = subprocess.run(
        [*cmd[:-1], "Bad Id!"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0


def test_key_rotation_cli(tmp_path: Path) -> None:
    """With no gateway running: ``key add`` prints a new key for a tenant (a role it has, an
    existing tenant only); ``key revoke`` (the key on standard input) removes it, once."""
    env = dict(
        os.environ,
        GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path / 'g.db'}",
        GATEWAY_VAR_DIR=str(tmp_path),
    )

    def gateway(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    import socket

    # a socket a killed gateway left behind: nobody answers, the commands write themselves
    (tmp_path / "admin").mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "admin" / "admin.sock"))
    stale.close()
    first = json.loads(gateway("tenant", "create", "bank_x").stdout)
    added = gateway("key", "add", "bank_x", "campaign")
    assert added.returncode == 0, added.stderr
    new = json.loads(added.stdout)
    assert new["tenant_id"] == "bank_x" and new["role"] == "campaign"
    assert new["key"].startswith("gw_campaign_") and new["key"] != first["campaign_key"]
    conn = sqlite3.connect(tmp_path / "g.db")
    assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (3,)
    conn.close()
    revoked = gateway("key", "revoke", stdin=first["campaign_key"] + "\n")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout) == {"tenant_id": "bank_x", "role": "campaign", "revoked": True}
    again = gateway("key", "revoke", first["campaign_key"])
    assert again.returncode == 1 and "no such key" in again.stderr
    nobody = gateway("key", "add", "bank_y", "ops")
    assert nobody.returncode == 1 and "no tenant" in nobody.stderr
    assert gateway("key", "add", "bank_x", "admin").returncode != 0


async def test_a_revoked_key_is_refused(gw: Gateway) -> None:
    """A revoked key is a 401 once the authenticator's short cache has let it go, and its
    console session ends at once; the tenant's other keys go on working."""
    from gateway.usecases.tenants import revoke_key

    keys = gw.keys["bank_a"]
    assert (await gw.client.get("/v1/settings", headers=gw.auth())).status == 200
    await revoke_key(gw.services.store, keys["campaign_key"])
    gw.services.auth.forget_all()  # as its 30 s cache time running out would
    assert (await gw.client.get("/v1/settings", headers=gw.auth())).status == 401
    assert (await gw.client.get("/v1/logs", headers=gw.auth(role="ops"))).status == 200
    signed_in = await gw.client.post(
        "/console/login", data={"key": keys["ops_key"]}, allow_redirects=False
    )
    assert signed_in.status == 303
    assert (await gw.client.get("/console/logs", allow_redirects=False)).status == 200
    await revoke_key(gw.services.store, keys["ops_key"])
    ended = await gw.client.get("/console/logs", allow_redirects=False)
    assert ended.status == 303 and ended.headers["Location"] == "/console"


async def test_the_admin_paths_are_not_served_over_tcp(gw: Gateway) -> None:
    """Tenants and keys are made only over the gateway's own Unix socket: over TCP, even
    with a campaign key, the admin paths are a 404."""
    for path, body in (
        ("/admin/tenants", {"tenant_id": "intruder"}),
        ("/admin/keys", {"tenant_id": "bank_a", "role": "campaign"}),
        ("/admin/keys/revoke", {"key": gw.keys["bank_a"]["ops_key"]}),
    ):
        resp = await gw.client.post(path, json=body, headers=gw.auth())
        assert resp.status == 404, path
    assert (await gw.client.get("/v1/logs", headers=gw.auth(role="ops"))).status == 200
