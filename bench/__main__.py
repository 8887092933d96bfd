"""``python -m bench [--duration S] [--only hello,send,click,dispatch,drain,render,import,...]
[--repeat N] [--profile] [--env K=V] [--drain-messages N] [--import-lines N] [--campaign-size N]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from bench import audience, drain, render, report, scenarios, wrk

SCENARIOS = (
    "hello",
    "hello-uvloop",
    "send",
    "click",
    "dispatch",
    "drain",
    "render",
    "import",
    "campaign",
)
ROUND_SCENARIOS = ("hello", "hello-uvloop", "send", "click", "dispatch", "drain")
OUT_DIR = scenarios.ROOT / "bench-results"


def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SCENARIOS)}")
    return names


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("GATEWAY_"):
        raise argparse.ArgumentTypeError("expected GATEWAY_NAME=value")
    return key, value


SETTLE_S = 3.0


def _settle() -> None:
    """Each scenario starts on a quiet machine: the previous one's writes flushed to disk
    (its database, WAL and deleted temporary files), then a pause. Without it, the kernel's
    write-back of one scenario's files ran on the cores the next one was measured on."""
    os.sync()
    time.sleep(SETTLE_S)


def _run(name: str, opts: scenarios.Options, seed: drain.Seed) -> list[scenarios.Outcome]:
    if name in ("hello", "hello-uvloop"):
        return [scenarios.hello(opts, uvloop=name == "hello-uvloop")]
    if name == "drain":
        return drain.run(opts, seed)
    if name == "click":
        return [scenarios.click(opts)]
    return [scenarios.send(opts, dispatch=name == "dispatch")]


def _round_text(o: scenarios.Outcome) -> str:
    r = o.result
    if math.isnan(r.p50_ms):  # drain: messages/s, no latencies
        return f"{r.rps:,.0f} messages/s"
    return f"{r.rps:,.0f} req/s p50 {r.p50_ms:.1f} p99 {r.p99_ms:.1f} ms"


def _median(done: list[scenarios.Outcome]) -> scenarios.Outcome:
    """The round with the median req/s, its facts led by every round's numbers."""
    if len(done) == 1:
        return done[0]
    chosen = sorted(done, key=lambda o: o.result.rps)[(len(done) - 1) // 2]
    each = "; ".join(_round_text(o) for o in done)
    chosen.facts.insert(0, f"{len(done)} rounds (the median round is shown): {each}")
    chosen.ok = all(o.ok for o in done)
    if not chosen.ok:
        chosen.facts += [
            f"round {i + 1}: {f}" for i, o in enumerate(done) if not o.ok for f in o.facts
        ]
    return chosen


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (3)")
    parser.add_argument(
        "--only",
        type=_only,
        default=list(SCENARIOS),
        help=f"comma-separated: {','.join(SCENARIOS)} (all)",
    )
    parser.add_argument(
        "--drain-messages",
        type=int,
        default=50_000,
        help="messages queued, then drained, in the drain scenario (50000)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="run py-spy on the server during measured runs"
    )
    parser.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="GATEWAY_X=V",
        help="extra setting for the gateway under test (repeatable), for experiments",
    )
    parser.add_argument(
        "--import-lines", type=int, default=1_000_000, help="NDJSON lines to import (1,000,000)"
    )
    parser.add_argument(
        "--campaign-size", type=int, default=100_000, help="recipients of the campaign (100,000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all scenarios; the median is shown (1)"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR / "latest.md", help="report file")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 1 or args.repeat < 1:
        parser.error("--duration and --warmup are whole seconds, at least 1; --repeat too")
    if not 1_000 <= args.drain_messages <= 1_000_000:
        parser.error("--drain-messages: from 1,000 to 1,000,000")

    wrk.ensure_wrk()
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    opts = scenarios.Options(
        args.duration,
        args.warmup,
        out.parent,
        args.profile,
        gateway_env=dict(args.env),
        drain_messages=args.drain_messages,
    )
    names = [n for n in ROUND_SCENARIOS if n in args.only]
    rounds: dict[str, list[scenarios.Outcome]] = {}  # by outcome: drain gives two
    with drain.Seed(args.drain_messages) as seed:
        for i in range(args.repeat):
            if args.repeat > 1:
                print(f"bench: round {i + 1} of {args.repeat}", file=sys.stderr)
            for name in names:
                _settle()
                for outcome in _run(name, opts, seed):
                    rounds.setdefault(outcome.name, []).append(outcome)
    outcomes = [_median(done) for done in rounds.values()]
    text = report.render(outcomes, opts, argv)
    if "render" in args.only:
        print("bench: render: card renders per second, one core", file=sys.stderr)
        _settle()
        r = render.run_child(args.duration)
        text += (
            "\n\n## Card renders (all targets, one core)\n\n"
            f"- `{r['template']}`: **{r['per_second']:,} full renders/s** "
            f"({r['us_each']} µs each; {r['renders']:,} renders in {r['seconds']} s): variables "
            "checked, card rendered in the sandbox, limits, tracked links, SMS and segments, "
            "the carrier's UP message and all five vendors' cards (`bench/render.py`)"
        )
    if "import" in args.only:
        _settle()
        r = audience.measure_import(args.import_lines)
        text += (
            "\n\n## Importing recipients (NDJSON, streamed)\n\n"
            f"- {r['lines']:,} lines: **{r['rows_per_s']:,} rows/s** ({r['seconds']} s; created "
            f"{r['created']:,}, updated {r['updated']:,}, rejected {r['rejected']}); gateway peak "
            f"memory (VmHWM) **{r['peak_rss_mb']} MB** (`bench/audience.py`)"
        )
    if "campaign" in args.only:
        _settle()
        r = audience.measure_campaign(args.campaign_size)
        text += (
            "\n\n## A campaign end to end (mock providers, 0 ms)\n\n"
            f"- {r['recipients']:,} recipients in the segment: "
            f"**{r['messages_per_s']:,} messages/s** "
            f"from POST /v1/campaigns to every message final ({r['seconds']} s; delivered "
            f"{r['delivered']:,}, failed {r['failed']}"
            + (f" {r['failed_reasons']}" if r["failed_reasons"] else "")
            + f", suppressed {r['suppressed']}; routes "
            f"{r['routes']}); gateway peak memory during the campaign **{r['peak_rss_mb']} MB** "
            f"({r['rss_at_start_mb']} MB at its start"
            + (
                ""
                if r["peak_is_campaign_only"]
                else "; VmHWM could not be reset, so the peak includes the import"
            )
            + f"; the import of its audience before it peaked at {r['import_peak_rss_mb']} MB)"
            + "; CPU during the campaign, % of one core: "
            + ", ".join(f"{k} {v}%" for k, v in r["cpu"].items())
        )
    print(text)
    out.write_text(text + "\n")
    print(f"\nbench: written to {out}", file=sys.stderr)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
