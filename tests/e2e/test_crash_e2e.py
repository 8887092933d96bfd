"""A crash in the middle of dispatching: the gateway killed with SIGKILL while it hands a
queue to the providers, then started again over the same database. Nothing is lost and no
phone gets a message twice: leases of the dead process are released, the messages it had
in flight go again under the same references, and the providers drop the repeats."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.e2e.conftest import Stack, StackFactory, call, wait_http
from tests.e2e.test_routing_e2e import FAST, _merge, _numbers, _send_all, _setup, _wait_final

SLOW = _merge(  # every provider takes 40 ms a request: the drain lasts long enough to kill
    FAST
    + "\n"
    + "\n".join(
        f"[{p}]\nlatency_ms = 40"
        for p in ("cmcc", "cucc", "ctcc", "huawei", "xiaomi", "oppo", "vivo", "honor")
    )
)


def _gateway(stack: Stack, **settings: str) -> subprocess.Popen[bytes]:
    env = stack.env | {f"GATEWAY_{k.upper()}": v for k, v in settings.items()}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, cwd=stack.cwd)
    wait_http(f"{stack.base}/readyz")
    return proc


def _submitted(stack: Stack) -> int:
    return sum(s["submitted"] for s in call("GET", f"{stack.mock}/_mock/stats")[1].values())


def test_a_gateway_killed_mid_dispatch_loses_nothing_and_sends_nothing_twice(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(SLOW, dispatch_batch="50", dispatch_inflight_claims="2")
    auth = _setup(stack)
    stack.gateway.send_signal(signal.SIGTERM)  # queue them all first, with no dispatcher
    assert stack.gateway.wait(timeout=30) == 0
    queued = _gateway(stack, dispatcher_enabled="false")
    draining: subprocess.Popen[bytes] | None = None
    try:
        numbers = _numbers(900)
        ids = _send_all(stack, auth, numbers)
        queued.send_signal(signal.SIGTERM)
        assert queued.wait(timeout=30) == 0

        draining = _gateway(stack)
        deadline = time.monotonic() + 30
        while _submitted(stack) < len(ids) // 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        draining.send_signal(signal.SIGKILL)  # mid-drain: batches in flight, acks unwritten
        draining.wait(timeout=10)
        handed = _submitted(stack)
        assert 0 < handed < len(ids), handed  # killed while it was dispatching

        again = _gateway(stack)
        try:
            msgs = _wait_final(stack, auth, ids, timeout_s=90)
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(timeout=30)
    finally:
        for proc in (queued, draining):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert {m["status"] for m in msgs} == {"delivered"}, {m["status"] for m in msgs}
    stats = call("GET", f"{stack.mock}/_mock/stats")[1]
    # each message reached one provider, once: the phones got one message each
    assert sum(s["distinct"] for s in stats.values()) == len(ids)
    assert sum(s["submitted"] for s in stats.values()) >= len(ids)
    for number, msg in zip(numbers, msgs, strict=True):
        inbox = call("GET", f"{stack.mock}/_mock/inbox?to=%2B{number[1:]}")[1]["messages"]
        assert [m["client_ref"] for m in inbox] == [msg["message_id"]], (number, inbox)
