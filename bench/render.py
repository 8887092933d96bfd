"""Card renders per second: one typical template, every target, on one core.

A "full render" is what a send of a card does plus every rich route's payload: check
the variables, render the card's fields in the sandbox, check the limits, mint tracked
links, compose the SMS and count its segments, then build the carrier's UP message
and all five vendors' cards. Run in a child process of its own, so the measurement is
one core's, with no server beside it in the same interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

BRAND = {
    "name": "示例银行",
    "signature": "【示例银行】",
    "logo_url": "https://static.bank.example/logo.png",
    "color": "#C7000B",
    "verified": True,
}
VARIABLES = {"name": "张三", "amount": "1000.50", "date": "2026-12-01", "fund_id": "F001"}


def measure(template_id: str = "fund_due", seconds: float = 5.0) -> dict[str, Any]:
    from cards.compiled import CompiledTemplate
    from cards.links import MessageLinks
    from cards.models import TemplateSpec
    from cards.targets import render_message, route_payload
    from cards.variables import check_variables
    from cards.vendors import VENDORS, Skip
    from gateway.demo import library_templates

    compiled = CompiledTemplate.build(TemplateSpec.model_validate(library_templates()[template_id]))

    def full_render() -> None:
        context, problems = check_variables(compiled.spec.variables, VARIABLES)
        assert not problems
        m = render_message(compiled, BRAND, context, MessageLinks("https://g.example"))
        assert m.card is not None
        route_payload("carrier_rich", "cmcc", m.card, m.kind, m.brand)
        for vendor in VENDORS:
            try:
                route_payload("vendor_card", vendor, m.card, m.kind, m.brand)
            except Skip:
                pass

    for _ in range(2000):  # warm-up
        full_render()
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            full_render()
        count += 1000
    elapsed = time.perf_counter() - started
    return {
        "template": template_id,
        "renders": count,
        "seconds": round(elapsed, 2),
        "per_second": round(count / elapsed),
        "us_each": round(elapsed / count * 1e6, 1),
    }


def run_child(seconds: float) -> dict[str, Any]:
    """``measure`` in a fresh interpreter; answers its result."""
    code = (
        "import json; from bench.render import measure; "
        f"print(json.dumps(measure(seconds={seconds})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
