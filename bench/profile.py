"""Optional sampling profile of the server under test, with py-spy (``--profile``).

py-spy samples the server for the measured run (``--format raw``, collapsed
stacks, one prefix frame per thread). Its default blocking mode pauses the
target for each sample, which keeps stacks whole (non-blocking sampling tears
them under this load) at a cost of a few per cent of throughput: profiled runs
are for finding hot spots, not for the headline numbers. Shares are of the
samples of one thread, the busiest (the event loop's); py-spy leaves out
samples where a thread was idle.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RATE_HZ = 100


def py_spy_path() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("bench: --profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def start(pid: int, duration_s: float, out: Path) -> subprocess.Popen[bytes]:
    cmd = [py_spy_path(), "record", "--threads", "--format", "raw", "-r", str(RATE_HZ)]
    cmd += ["-d", str(max(1, round(duration_s))), "--pid", str(pid), "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ends a recording early (as Ctrl-C does: py-spy still writes its output), then waits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    finish(proc)


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')}")


Share = tuple[str, float]


@dataclass
class Summary:
    thread: str
    samples: int
    threads: list[Share] = field(default_factory=list)
    self_lines: list[Share] = field(default_factory=list)
    self_functions: list[Share] = field(default_factory=list)
    inclusive_functions: list[Share] = field(default_factory=list)
    packages: list[Share] = field(default_factory=list)


def _function(frame: str) -> str:
    """``f (gateway/x.py:12)`` → ``f (gateway/x.py)``."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rpartition(':')[0]})" if name else frame


def _package(frame: str) -> str:
    """``f (aiohttp/web_protocol.py:123)`` → ``aiohttp``."""
    path = frame.rpartition(" (")[2].rpartition(":")[0]
    return path.split("site-packages/")[-1].split("/", 1)[0].removesuffix(".py") or "?"


def _read(raw: Path) -> list[tuple[str, list[str], int]]:
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) > 1 and n.isdigit() and frames[0].startswith("thread "):
            stacks.append((frames[0].partition(": ")[2], frames[1:], int(n)))
    return stacks


def summarize(raw: Path, top: int = 15) -> Summary:
    stacks = _read(raw)
    per_thread: Counter[str] = Counter()
    for thread, _, n in stacks:
        per_thread[thread] += n
    if not per_thread:
        return Summary("none", 0)
    busiest, total = per_thread.most_common(1)[0]
    lines: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for thread, frames, n in stacks:
        if thread != busiest:
            continue
        lines[frames[-1]] += n
        functions[_function(frames[-1])] += n
        packages[_package(frames[-1])] += n
        for function in {_function(f) for f in frames}:
            inclusive[function] += n

    def share(counter: Counter[str], k: int, below: float = 101.0) -> list[Share]:
        rows = [(name, 100.0 * c / total) for name, c in counter.most_common()]
        return [row for row in rows if row[1] < below][:k]

    all_threads = sum(per_thread.values())
    return Summary(
        thread=busiest,
        samples=total,
        threads=[(t, 100.0 * c / all_threads) for t, c in per_thread.most_common(6)],
        self_lines=share(lines, top),
        self_functions=share(functions, top),
        inclusive_functions=share(inclusive, 2 * top, below=97.0),  # not the loop's own frames
        packages=share(packages, 10),
    )


def markdown(name: str, s: Summary) -> list[str]:
    lines = [
        f"### Profile: {name} (py-spy at {RATE_HZ} Hz; {s.samples} samples of {s.thread})",
        "",
    ]
    for title, rows in (
        ("samples per thread (share of all threads' samples)", s.threads),
        (f"{s.thread}: self time by package", s.packages),
        (f"{s.thread}: self time by function", s.self_functions),
        (f"{s.thread}: self time by line", s.self_lines),
        (f"{s.thread}: inclusive time by function (frames under 97%)", s.inclusive_functions),
    ):
        lines += [f"{title}:", "", "| % | where |", "| ---: | --- |"]
        lines += [f"| {pct:.1f} | `{frame}` |" for frame, pct in rows]
        lines.append("")
    return lines
