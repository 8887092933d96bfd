"""``python -m bench [--duration S] [--only hello,send,dispatch] [--profile]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import report, scenarios, wrk

SCENARIOS = ("hello", "send", "dispatch")
OUT_DIR = scenarios.ROOT / "bench-results"


def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SCENARIOS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (3)")
    parser.add_argument(
        "--only", type=_only, default=list(SCENARIOS), help="comma-separated: hello,send,dispatch"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run py-spy on the server during measured runs"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR / "latest.md", help="report file")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 1:
        parser.error("--duration and --warmup are whole seconds, at least 1")

    wrk.ensure_wrk()
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    opts = scenarios.Options(args.duration, args.warmup, out.parent, args.profile)
    outcomes: list[scenarios.Outcome] = []
    for name in SCENARIOS:
        if name not in args.only:
            continue
        if name == "hello":
            outcomes.append(scenarios.hello(opts))
        else:
            outcomes.append(scenarios.send(opts, dispatch=name == "dispatch"))
    text = report.render(outcomes, opts, argv)
    print(text)
    out.write_text(text + "\n")
    print(f"\nbench: written to {out}", file=sys.stderr)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
