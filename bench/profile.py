"""Optional sampling profile of the server under test, with py-spy (``--profile``).

py-spy runs beside wrk for the measured run, in non-blocking mode (it never
pauses the target), writing collapsed stacks (``--format raw``); the summary
lists the frames most often on top of the stack (self) and on it at all
(inclusive), as a share of all samples.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 100


def py_spy_path() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("bench: --profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def start(pid: int, duration_s: float, out: Path) -> subprocess.Popen[bytes]:
    cmd = [
        py_spy_path(),
        "record",
        "--nonblocking",
        "--threads",
        "--format",
        "raw",
        "-r",
        str(RATE_HZ),
        "-d",
        str(max(1, round(duration_s))),
        "--pid",
        str(pid),
        "-o",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')}")


@dataclass
class Summary:
    samples: int
    threads: list[tuple[str, float]]
    self_top: list[tuple[str, float]]
    inclusive_top: list[tuple[str, float]]
    packages: list[tuple[str, float]]


def _package(frame: str) -> str:
    """``f (aiohttp/web_protocol.py:123)`` → ``aiohttp``; ``(<frozen …>)`` stays as it is."""
    where = frame.rpartition(" (")[2].rstrip(")")
    path = where.rpartition(":")[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    first = path.split("/", 1)[0]
    return first.removesuffix(".py") or "?"


def summarize(raw: Path, top: int = 15) -> Summary:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    thread_counts: Counter[str] = Counter()
    pkg_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread ", "process ")):
            thread_counts[frames[0]] += n
            frames = frames[1:]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        pkg_counts[_package(frames[-1])] += n
        for frame in set(frames):
            incl_counts[frame] += n

    def share(counter: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, 100.0 * c / total) for name, c in counter.most_common(k)] if total else []

    return Summary(
        samples=total,
        threads=share(thread_counts, 8),
        self_top=share(self_counts, top),
        inclusive_top=share(incl_counts, top),
        packages=share(pkg_counts, 10),
    )


def markdown(name: str, s: Summary) -> list[str]:
    lines = [f"### Profile: {name} ({s.samples} samples at {RATE_HZ} Hz, py-spy, non-blocking)", ""]
    for title, rows in (
        ("threads", s.threads),
        ("self time by package", s.packages),
        ("self time (top of stack)", s.self_top),
        ("inclusive time (anywhere on the stack)", s.inclusive_top),
    ):
        lines += [f"{title}:", "", "| % | frame |", "| ---: | --- |"]
        lines += [f"| {pct:.1f} | `{frame}` |" for frame, pct in rows]
        lines.append("")
    return lines
