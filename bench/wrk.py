"""Running wrk and reading its report.

Each run uses one thread and 64 connections (``-t 1 -c 64``) and a generated
Lua script that counts every non-2xx status exactly (wrk's own "Non-2xx or 3xx"
line only counts statuses above 399) and, for POSTs, makes every request's
recipient different: ``"138" .. string.format("%08d", n)`` with ``n`` counting
up from a start given on the command line, so a warm-up and the measured run
never send the same number.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

THREADS = 1
CONNECTIONS = 64
TIMEOUT = "10s"  # generous, so slow answers count in the latencies instead of vanishing


class WrkMissing(SystemExit):
    pass


def ensure_wrk() -> str:
    """The path of wrk; installs the Debian package when missing and we are root."""
    path = shutil.which("wrk")
    if path is not None:
        return path
    if os.geteuid() != 0:
        print(
            "bench: wrk is not installed and we are not root; install it with\n"
            "    sudo apt-get install -y wrk\nthen run `make bench` again.",
            file=sys.stderr,
        )
        raise WrkMissing(1)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("bench: installing wrk (apt-get install -y wrk)", file=sys.stderr)
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False).returncode:
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False)
    path = shutil.which("wrk")
    if path is None:
        print("bench: could not install wrk with apt-get", file=sys.stderr)
        raise WrkMissing(1)
    return path


def _lua_str(s: str) -> str:
    if not s.isascii() or not s.isprintable():
        raise ValueError(f"only printable ASCII goes into the Lua script: {s!r}")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_COUNT_STATUSES = """
statuses = {}
sample = nil
response = function(status, headers, body)
  if status < 200 or status > 299 then
    statuses[status] = (statuses[status] or 0) + 1
    if sample == nil then sample = string.sub(body or "", 1, 300) end
  end
end

local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      io.write(string.format("BENCH_STATUS %d %d\\n", status, n))
    end
    local s = t:get("sample")
    if s ~= nil then io.write("BENCH_SAMPLE " .. string.gsub(s, "\\n", " ") .. "\\n") end
  end
end
"""


def script(
    method: str = "GET", body_template: str = "", headers: dict[str, str] | None = None
) -> str:
    """A wrk Lua script; for POST, ``{to}`` in ``body_template`` becomes a fresh number."""
    if method == "GET":
        sets = "".join(
            f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}\n" for k, v in (headers or {}).items()
        )
        return sets + _COUNT_STATUSES
    before, marker, after = body_template.partition("{to}")
    if not marker:
        raise ValueError("body_template must contain {to}")
    lua_headers = ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in (headers or {}).items())
    return (
        f"""
local counter = 0
local headers = {{{lua_headers}}}
init = function(args) counter = tonumber(args[1]) or 0 end
request = function()
  counter = counter + 1
  local to = "138" .. string.format("%08d", counter)
  return wrk.format({_lua_str(method)}, nil, headers, {_lua_str(before)} .. to .. {_lua_str(after)})
end
"""
        + _COUNT_STATUSES
    )


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    sample: str | None = None
    raw: str = ""

    @property
    def ok(self) -> int:
        """Requests answered 2xx (wrk counts only completed requests)."""
        return self.requests - self.non_2xx

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse(out: str) -> WrkResult:
    """Reads wrk's ``--latency`` report and the lines our Lua ``done`` prints."""

    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.MULTILINE)
        if m is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
        return m

    done = find(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
    p50 = find(r"^\s*50(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)")
    p99 = find(r"^\s*99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)")
    rps = find(r"^Requests/sec:\s+([\d.]+)")
    socket: dict[str, int] = {}
    m = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    if m:
        for part in m.group(1).split(","):
            name, _, n = part.strip().partition(" ")
            socket[name] = int(n)
    statuses = {
        int(code): int(n) for code, n in re.findall(r"^BENCH_STATUS (\d+) (\d+)$", out, re.M)
    }
    sample = re.search(r"^BENCH_SAMPLE (.*)$", out, re.MULTILINE)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2), done.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        non_2xx=sum(statuses.values()),
        statuses=statuses,
        socket_errors=socket,
        sample=sample.group(1) if sample else None,
        raw=out,
    )


def run(url: str, lua: Path, duration_s: float, start: int = 0) -> WrkResult:
    """One bounded wrk run against ``url``; ``start`` seeds the recipient counter."""
    cmd = [
        ensure_wrk(),
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        TIMEOUT,
        "-s",
        str(lua),
        url,
        "--",
        str(start),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return parse(proc.stdout)
