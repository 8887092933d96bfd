"""The results as Markdown: the table, then each scenario's facts (and profiles)."""

from __future__ import annotations

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


def render(outcomes: list[Outcome], opts: Options, argv: list[str]) -> str:
    hello = next((o for o in outcomes if o.name == "hello"), None)
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
        "",
        "| scenario | req/s | p50 ms | p99 ms | non-2xx | ratio to hello world |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        r = o.result
        ratio = f"{r.rps / hello.result.rps:.0%}" if hello and hello.result.rps else "n/a"
        lines.append(
            f"| {o.label} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
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
