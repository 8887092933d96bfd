"""The real gateway as a process under test: fresh ``var/``, demo tenant, its database."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs

TERMINAL = frozenset({"delivered", "failed", "expired", "revoked", "suppressed"})

PROVIDERS = ("cmcc", "cucc", "ctcc", "huawei", "xiaomi", "oppo", "vivo", "honor")


def mock_toml(**behaviour: float) -> str:
    """A ``GATEWAY_MOCK_CONFIG`` giving every provider the same ``behaviour`` keys."""
    keys = "".join(f"{k} = {v}\n" for k, v in behaviour.items())
    return "".join(f"[{p}]\n{keys}\n" for p in PROVIDERS)


# Zero latency everywhere, delivery reports at once (defaults are otherwise kept).
MOCK_TOML = mock_toml(latency_ms=0, dlr_delay_ms=0)


@dataclass
class Gateway:
    proc: procs.Proc
    cwd: Path
    port: int
    mock_port: int
    campaign_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.cwd / "var" / "gateway.db"


def environment(
    port: int, mock_port: int, *, dispatch: bool, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """Our environment without any ``GATEWAY_*``, then the gateway's own and ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_PORT=str(port),
        GATEWAY_MOCK_PORT=str(mock_port),
        GATEWAY_DISPATCHER_ENABLED="true" if dispatch else "false",
        GATEWAY_LOG_LEVEL="warning",
    )
    env.update(extra_env or {})
    return env


def command() -> list[str]:
    return [sys.executable, "-m", "gateway", "serve", "--seed-demo"]


def start(cwd: Path, *, dispatch: bool, extra_env: dict[str, str] | None = None) -> Gateway:
    """Starts ``python -m gateway serve --seed-demo`` in ``cwd`` and waits for /readyz.

    The gateway sees none of our ``GATEWAY_*`` variables, only its own and ``extra_env``.
    """
    port, mock_port = procs.free_port(), procs.free_port()
    env = environment(port, mock_port, dispatch=dispatch, extra_env=extra_env)
    cmd = command()
    if dispatch:
        mock_config = cwd / "mock.toml"
        mock_config.write_text(MOCK_TOML)
        env["GATEWAY_MOCK_CONFIG"] = str(mock_config)
        cmd.append("--with-mock-providers")
    proc = procs.start(cmd, cwd=cwd, env=env, log=cwd / "gateway.log")
    try:
        procs.wait_ready(proc, f"http://127.0.0.1:{port}/readyz", timeout_s=60)
        keys = json.loads((cwd / "var" / "demo_keys.json").read_text())
    except BaseException:
        procs.stop(proc)
        raise
    return Gateway(proc, cwd, port, mock_port, keys["campaign_key"])


def body_template() -> str:
    return json.dumps({"to": "{to}", "template_id": "otp_login", "variables": {"code": "123456"}})


def headers(gw: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.campaign_key}", "Content-Type": "application/json"}


def send_one(gw: Gateway, to: str) -> tuple[int, str]:
    """One POST /v1/messages, as a sanity check before the load: (status, body)."""
    req = urllib.request.Request(
        f"{gw.url}/v1/messages",
        data=body_template().replace("{to}", to).encode(),
        headers=headers(gw),
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def read(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """``sql``'s rows, read-only: the gateway's database, from beside the gateway."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def status_counts(db: Path) -> dict[str, int]:
    """``SELECT status, count(*) FROM messages GROUP BY status``, read-only."""
    rows = read(db, "SELECT status, count(*) FROM messages GROUP BY status")
    return {str(status): int(n) for status, n in rows}


def wait_drained(db: Path, timeout_s: float = 60.0) -> tuple[float, dict[str, int], bool]:
    """Polls until every message is terminal: (seconds waited, last counts, drained?)."""
    t0 = time.monotonic()
    while True:
        counts = status_counts(db)
        waited = time.monotonic() - t0
        if all(status in TERMINAL for status in counts):
            return waited, counts, True
        if waited >= timeout_s:
            return waited, counts, False
        time.sleep(0.25)


def mock_stats(gw: Gateway) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = json.loads(
        procs.get_json_text(f"http://127.0.0.1:{gw.mock_port}/_mock/stats")
    )
    return stats


def tracked_link(gw: Gateway) -> str:
    """Sends one card with an open_url button and answers its tracked link."""
    body = json.dumps(
        {
            "to": "13900000001",
            "template_id": "fund_due",
            "variables": {
                "name": "张三",
                "amount": "1000",
                "date": "2026-12-01",
                "fund_id": "F001",
            },
        }
    )
    req = urllib.request.Request(
        f"{gw.url}/v1/messages", data=body.encode(), headers=headers(gw), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        message_id = json.loads(resp.read())["message_id"]
    req = urllib.request.Request(f"{gw.url}/v1/messages/{message_id}", headers=headers(gw))
    with urllib.request.urlopen(req, timeout=10) as resp:
        card = json.loads(resp.read())["rendered"]["card"]
    return str(card["buttons"][0]["action"]["url"])


def count_events(db: Path, kind: str) -> int:
    return int(read(db, "SELECT count(*) FROM events WHERE type = ?", (kind,))[0][0])
