"""The results as Markdown: the table, then each scenario's facts (and profiles)."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

from bench import profile
from bench.scenarios import ROOT, Options, Outcome
from bench.wrk import CONNECTIONS, THREADS


def machine() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return [
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.executable}), SQLite {sqlite3.sqlite_version}",
    ]


def revision() -> str:
    """The code under test: ``git describe --always --dirty``, or ``unknown``."""
    try:
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return proc.stdout.strip() or "unknown"


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def render(outcomes: list[Outcome], opts: Options, argv: list[str]) -> str:
    hello = next((o for o in outcomes if o.name == "hello"), None)
    drains = [o for o in outcomes if o.name.startswith("drain")]
    lines = [
        "# Benchmark results",
        "",
        f"- run at {datetime.now(UTC).isoformat(timespec='seconds')}: "
        f"`{' '.join(['python -m bench', *argv])}`",
        f"- code: git {revision()}",
        *machine(),
        f"- wrk -t {THREADS} -c {CONNECTIONS} --latency, {opts.warmup_s:.0f} s warm-up, "
        f"{opts.duration_s:.0f} s measured" + (", py-spy attached" if opts.profile else ""),
        *([f"- gateway settings changed: {opts.gateway_env}"] if opts.gateway_env else []),
        *(
            [
                f"- drain: {opts.drain_messages:,} messages queued (dispatcher off), then "
                "drained by a gateway with its dispatcher on against the mock providers; its "
                "req/s column is **messages/s** from the queue to provider acknowledgement: "
                "N / (last acknowledgement − first acknowledgement, from `messages.updated_at`)"
            ]
            if drains
            else []
        ),
        "",
        "| scenario | req/s | p50 ms | p99 ms | non-2xx | ratio to A, hello world |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        r = o.result
        ratio = f"{r.rps / hello.result.rps:.0%}" if hello and hello.result.rps else "n/a"
        if o in drains:
            ratio = "—"  # messages/s against requests/s: not comparable
        lines.append(
            f"| {o.label} | {r.rps:,.0f} | {_ms(r.p50_ms)} | {_ms(r.p99_ms)} "
            f"| {r.non_2xx} | {ratio} |"
        )
    lines.append("")
    for o in outcomes:
        lines += [f"## {o.label}" + ("" if o.ok else " — PROBLEMS"), ""]
        lines += [f"- {fact}" for fact in o.facts]
        lines.append("")
        if o.profile is not None:
            lines += profile.markdown(o.name, o.profile)
    return "\n".join(lines)
