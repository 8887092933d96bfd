"""Routing end to end: the real gateway and the real mock carriers and vendors, over HTTP."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.domain.routing import carrier_for
from providers.mock.devices import number_hash, shows_vendor_cards
from tests.e2e.conftest import Stack, StackFactory, call

CARD = {
    "brand_id": "icbc",
    "category": "transactional",
    "kind": "standard",
    "variables": {"amount": {"type": "decimal"}},
    "card": {
        "title": "到账提醒",
        "body": "到账 {{ amount }} 元",
        "buttons": [
            {"label": "查看", "action": {"type": "open_url", "url": "https://bank.example/a"}},
            {"label": "客服", "action": {"type": "dial", "number": "95588"}},
        ],
    },
    "fallback_text": "您有一笔{{ amount }}元到账。",
}
PREFIXES = {"cmcc": "138", "cucc": "130", "ctcc": "189"}
FAST = "\n".join(
    f"[{p}]\ndlr_delay_ms = 20\nreview_delay_ms = 20"
    for p in ("cmcc", "cucc", "ctcc", "huawei", "xiaomi", "oppo", "vivo", "honor")
)


def _setup(stack: Stack, wait_reviews: bool = True) -> dict[str, str]:
    keys = stack.tenant("bank_r")
    auth = {"Authorization": f"Bearer {keys['campaign_key']}"}
    brand = {"name": "工商银行", "signature": "【工商银行】", "verified": True}
    assert call("PUT", f"{stack.base}/v1/brands/icbc", brand, auth)[0] == 200
    assert call("PUT", f"{stack.base}/v1/templates/credit", CARD, auth)[0] == 200
    deadline = time.monotonic() + 15
    while wait_reviews and time.monotonic() < deadline:
        reviews = call("GET", f"{stack.base}/v1/templates/credit", headers=auth)[1]["reviews"]
        if all(r["state"] == "approved" for r in reviews.values()):
            break
        time.sleep(0.1)
    return auth


def _send_all(stack: Stack, auth: dict[str, str], numbers: list[str], **extra: Any) -> list[str]:
    def one(number: str) -> str:
        body = {"to": number, "template_id": "credit", "variables": {"amount": "88.00"}} | extra
        status, out = call("POST", f"{stack.base}/v1/messages", body, auth)
        assert status == 202, out
        return str(out["message_id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, numbers))


def _wait_final(
    stack: Stack, auth: dict[str, str], ids: list[str], timeout_s: float = 30
) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    pending = list(ids)
    done: dict[str, Any] = {}
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            msg = call("GET", f"{stack.base}/v1/messages/{i}", headers=auth)[1]
            if msg["status"] in ("delivered", "failed", "expired", "suppressed"):
                done[i] = msg
                pending.remove(i)
        if pending:
            time.sleep(0.2)
    return [
        done.get(i) or call("GET", f"{stack.base}/v1/messages/{i}", headers=auth)[1] for i in ids
    ]


def _numbers(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [
        f"+86{PREFIXES[c]}{rng.randrange(10**8):08d}" for c in PREFIXES for _ in range(count // 3)
    ]


def test_a_thousand_messages_use_every_route_and_the_right_carrier(
    make_stack: StackFactory,
) -> None:
    """1,000 sends over three carriers use all three route kinds; every carrier route is the
    number's own carrier; the providers saw each message exactly once."""
    stack = make_stack(FAST)
    auth = _setup(stack)
    numbers = _numbers(1002)
    ids = _send_all(stack, auth, numbers)
    msgs = _wait_final(stack, auth, ids, timeout_s=60)
    assert {m["status"] for m in msgs} == {"delivered"}
    assert {m["route"] for m in msgs} == {"vendor_card", "carrier_rich", "sms"}
    for number, msg in zip(numbers, msgs, strict=True):
        if msg["route"] != "vendor_card":
            assert msg["provider"] == carrier_for(number), msg
    stats = call("GET", f"{stack.mock}/_mock/stats")[1]
    assert sum(s["submitted"] for s in stats.values()) == len(ids)
    assert sum(s["distinct"] for s in stats.values()) == len(ids)


def test_all_vendors_failing_still_delivers_by_carrier(make_stack: StackFactory) -> None:
    """With every vendor answering 503, every message is delivered by its own carrier: as
    a 5G rich message where the phone can show one (a choice of route, no fallback), else
    as an SMS that says why it fell back."""
    config = (
        FAST
        + "\n"
        + "\n".join(
            f"[{v}]\nfailure_rate = 1.0" for v in ("huawei", "xiaomi", "oppo", "vivo", "honor")
        )
    )
    config = config.replace("[huawei]\ndlr_delay_ms = 20\nreview_delay_ms = 20\n", "")
    stack = make_stack(_merge(config))
    auth = _setup(stack, wait_reviews=False)
    numbers = _numbers(60)
    msgs = _wait_final(stack, auth, _send_all(stack, auth, numbers))
    for number, msg in zip(numbers, msgs, strict=True):
        assert msg["status"] == "delivered" and msg["provider"] == carrier_for(number), msg
        assert msg["route"] in ("carrier_rich", "sms")
        fallbacks = [e for e in msg["events"] if e["type"] == "fallback"]
        if msg["route"] == "sms":
            assert fallbacks and fallbacks[0]["from"] == "vendor_card", msg
            assert fallbacks[0]["to"] == "sms"
        else:
            assert not fallbacks, msg


def test_vendor_never_reporting_falls_back_to_sms(make_stack: StackFactory) -> None:
    """A vendor whose delivery reports never come: after the rich timeout the SMS goes."""
    owned = [n for n in _numbers(300) if shows_vendor_cards(number_hash(n), "huawei", 0.5)][:5]
    assert owned
    config = _merge(
        FAST
        + "\n[huawei]\ndlr_delay_ms = 600000\n"
        + "\n".join(f"[{c}]\ncapability_share = 0.0" for c in PREFIXES)
    )
    stack = make_stack(config, rich_timeout_s="1")
    auth = _setup(stack)
    msgs = _wait_final(stack, auth, _send_all(stack, auth, owned))
    for msg in msgs:
        assert msg["status"] == "delivered" and msg["route"] == "sms", msg
        fallback = [e for e in msg["events"] if e["type"] == "fallback"]
        assert fallback[0]["from"] == "vendor_card" and fallback[0]["reason"] == "rich_timeout"
        assert fallback[0]["provider"] == "huawei"


def test_carrier_rate_limit_loses_nothing(make_stack: StackFactory) -> None:
    """A carrier answering 429s above 40 messages/s: all 160 arrive, each once, at its pace."""
    stack = make_stack(_merge(FAST + "\n[cmcc]\nrate_limit_per_s = 40\n"))
    auth = _setup(stack, wait_reviews=False)
    numbers = [f"+86138{i:08d}" for i in range(160)]
    started = time.monotonic()
    msgs = _wait_final(stack, auth, _send_all(stack, auth, numbers, route="sms"), timeout_s=60)
    elapsed = time.monotonic() - started
    assert {m["status"] for m in msgs} == {"delivered"}
    assert call("GET", f"{stack.mock}/_mock/stats")[1]["cmcc"] == {
        "submitted": 160,
        "distinct": 160,
    }
    assert elapsed >= 160 / 40 - 1.5  # the carrier's rate held


def test_dead_vendor_opens_circuit_then_recovers(make_stack: StackFactory) -> None:
    """A vendor that dies trips its circuit (messages go by carrier meanwhile); when it
    recovers, the half-open probe closes the circuit and cards flow again."""
    owned = [n for n in _numbers(600) if shows_vendor_cards(number_hash(n), "huawei", 0.5)]
    stack = make_stack(FAST, circuit_threshold="2", circuit_cooldown_s="1")
    auth = _setup(stack)
    phones = owned[:6]  # the same phones throughout: their capability is cached
    first = _wait_final(stack, auth, _send_all(stack, auth, phones))
    assert {m["route"] for m in first} == {"vendor_card"}
    call("POST", f"{stack.mock}/_mock/behaviour", {"provider": "huawei", "failure_rate": 1.0})
    during = []  # one at a time: each its own batch, each a failure the breaker counts
    for phone in phones[:3]:
        during += _wait_final(stack, auth, _send_all(stack, auth, [phone]))
    assert all(m["status"] == "delivered" and m["route"] != "vendor_card" for m in during)
    views = {
        p["provider"]: p
        for p in call("GET", f"{stack.base}/v1/providers", headers=auth)[1]["items"]
    }
    assert views["huawei"]["circuit"] in ("open", "half_open")
    call("POST", f"{stack.mock}/_mock/behaviour", {"provider": "huawei", "failure_rate": 0.0})
    time.sleep(1.2)
    after = _wait_final(stack, auth, _send_all(stack, auth, phones[:2]))
    assert {m["route"] for m in after} == {"vendor_card"}
    views = {
        p["provider"]: p
        for p in call("GET", f"{stack.base}/v1/providers", headers=auth)[1]["items"]
    }
    assert views["huawei"]["circuit"] == "closed"


def _merge(config: str) -> str:
    """Later tables for the same provider add to (and override) earlier ones."""
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in config.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = tables.setdefault(line.strip("[]"), {})
        elif line and current is not None:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return "\n".join(
        f"[{name}]\n" + "\n".join(f"{k} = {v}" for k, v in kv.items())
        for name, kv in tables.items()
    )
