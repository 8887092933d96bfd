"""Real processes: the mock providers and the gateway, each started as users start them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def call(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@dataclass
class Stack:
    base: str
    mock: str
    env: dict[str, str]
    cwd: Path
    gateway: subprocess.Popen[bytes]

    def tenant(self, tenant_id: str) -> dict[str, str]:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "tenant", "create", tenant_id],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)


DEFAULT_CONFIG = """
[cmcc]
dlr_delay_ms = 20
[cucc]
dlr_delay_ms = 20
[ctcc]
dlr_delay_ms = 20
"""

StackFactory = Callable[..., Stack]


@pytest.fixture(name="make_stack")
def _make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    procs: list[subprocess.Popen[bytes]] = []

    def make(config: str = DEFAULT_CONFIG, **settings: str) -> Stack:
        port, mock_port = free_port(), free_port()
        (tmp_path / "mock.toml").write_text(config)
        env = dict(
            os.environ,
            GATEWAY_PORT=str(port),
            GATEWAY_MOCK_PORT=str(mock_port),
            GATEWAY_MOCK_CONFIG=str(tmp_path / "mock.toml"),
            GATEWAY_LOG_LEVEL="warning",
            PYTHONPATH=str(Path(__file__).resolve().parents[2]),
            **{f"GATEWAY_{k.upper()}": v for k, v in settings.items()},
        )
        mock = subprocess.Popen([sys.executable, "-m", "providers", "serve"], env=env, cwd=tmp_path)
        procs.append(mock)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"], env=env, cwd=tmp_path
        )
        procs.append(gateway)
        wait_http(f"http://127.0.0.1:{mock_port}/healthz")
        wait_http(f"http://127.0.0.1:{port}/readyz")
        return Stack(
            f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mock_port}", env, tmp_path, gateway
        )

    try:
        yield make
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(name="stack")
def _stack(make_stack: StackFactory) -> Stack:
    return make_stack()
