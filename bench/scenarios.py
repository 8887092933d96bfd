"""The wrk scenarios: hello world, the single-send accept path, and send with dispatch.

(The drain scenario is ``bench.drain``.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import gateway, procs, profile, wrk

ROOT = Path(__file__).resolve().parent.parent
WARMUP_START = 0  # recipients 138 00000001…
MEASURED_START = 10_000_000  # recipients 138 10000001…, never the warm-up's
CHECK_NUMBER = "13900000000"  # the one sanity-check send, outside both ranges


@dataclass
class Options:
    duration_s: float
    warmup_s: float
    out_dir: Path
    profile: bool = False
    gateway_env: dict[str, str] = field(default_factory=dict)
    drain_messages: int = 50_000


@dataclass
class Outcome:
    name: str
    label: str
    result: wrk.WrkResult
    facts: list[str] = field(default_factory=list)
    profile: profile.Summary | None = None
    ok: bool = True


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _measure(
    name: str, url: str, lua_text: str, pid: int, opts: Options, tmp: Path
) -> tuple[wrk.WrkResult, wrk.WrkResult, list[str], profile.Summary | None]:
    """Warm-up, then the measured run (profiled when asked); CPU used by ``pid`` and children."""
    lua = tmp / f"{name}.lua"
    lua.write_text(lua_text)
    _log(f"{name}: warm-up {opts.warmup_s:.0f} s")
    warm = wrk.run(url, lua, opts.warmup_s, start=WARMUP_START)
    pids = [pid, *procs.children(pid)]
    cpu0 = {p: procs.cpu_seconds(p) for p in pids}
    steal0, total0 = procs.host_cpu_ticks()
    spy = None
    raw = opts.out_dir / f"profile-{name}.txt"
    if opts.profile:
        spy = profile.start(pid, opts.duration_s, raw)
    _log(f"{name}: measuring {opts.duration_s:.0f} s")
    t0 = time.monotonic()
    measured = wrk.run(url, lua, opts.duration_s, start=MEASURED_START)
    wall = time.monotonic() - t0
    steal1, total1 = procs.host_cpu_ticks()
    cpu = [
        "CPU during the measured run: "
        + ", ".join(
            f"pid {p}{' (server)' if p == pid else ' (child)'} "
            f"{100 * (procs.cpu_seconds(p) - cpu0[p]) / wall:.0f}% of one core"
            for p in pids
        )
        + f"; CPU steal by the host: {100 * (steal1 - steal0) / max(1, total1 - total0):.1f}%"
    ]
    summary = None
    if spy is not None:
        profile.finish(spy)
        summary = profile.summarize(raw)
    (opts.out_dir / f"wrk-{name}.txt").write_text(
        warm.raw + "\n---- measured ----\n" + measured.raw
    )
    return warm, measured, cpu, summary


def _wrk_facts(warm: wrk.WrkResult, run: wrk.WrkResult) -> list[str]:
    facts = [
        f"wrk: {run.requests} requests in {run.seconds:.2f} s measured "
        f"(+{warm.requests} in the warm-up); socket errors "
        + (", ".join(f"{k} {v}" for k, v in run.socket_errors.items()) or "none")
    ]
    if run.statuses or warm.statuses:
        facts.append(f"non-2xx statuses: measured {run.statuses}, warm-up {warm.statuses}")
    if run.sample or warm.sample:
        facts.append(f"a non-2xx body: {run.sample or warm.sample}")
    return facts


def hello(opts: Options, *, uvloop: bool = False) -> Outcome:
    """Hello world on asyncio's default loop: the yardstick of the targets. On uvloop (the
    loop the gateway runs on), shown beside it as a reference."""
    name = "hello-uvloop" if uvloop else "hello"
    with tempfile.TemporaryDirectory(prefix="bench-hello-") as tmp_name:
        tmp = Path(tmp_name)
        port = procs.free_port()
        proc = procs.start(
            [sys.executable, "-m", "bench.hello", str(port), *(["--uvloop"] if uvloop else [])],
            cwd=ROOT,
            env=dict(os.environ),
            log=tmp / "hello.log",
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            procs.wait_ready(proc, url)
            warm, run, cpu, summary = _measure(name, url, wrk.script(), proc.pid, opts, tmp)
        finally:
            procs.stop(proc)
    return Outcome(
        name,
        "A′: hello world on uvloop (reference only)" if uvloop else "A: hello world (GET /)",
        run,
        _wrk_facts(warm, run) + cpu,
        summary,
        ok=run.non_2xx == 0 and run.socket_error_total == 0,
    )


def send(opts: Options, *, dispatch: bool) -> Outcome:
    name = "dispatch" if dispatch else "send"
    label = (
        "C: single send + dispatcher + DLRs (mock providers, 0 ms)"
        if dispatch
        else "B: single send, accept path (dispatcher off)"
    )
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        _log(f"{name}: starting the gateway in {tmp}")
        gw = gateway.start(tmp, dispatch=dispatch, extra_env=opts.gateway_env)
        facts: list[str] = []
        try:
            status, body = gateway.send_one(gw, CHECK_NUMBER)
            if status != 202:
                raise RuntimeError(f"sanity send answered {status}: {body}")
            lua = wrk.script("POST", gateway.body_template(), gateway.headers(gw))
            url = f"{gw.url}/v1/messages"
            warm, run, cpu, summary = _measure(name, url, lua, gw.proc.pid, opts, tmp)
            facts += _wrk_facts(warm, run) + cpu
            if dispatch:
                facts += _drain_facts(gw)
        finally:
            t0 = time.monotonic()
            code = procs.stop(gw.proc, timeout_s=60)
            facts.append(
                f"gateway stopped by SIGTERM in {time.monotonic() - t0:.1f} s, exit {code}"
            )
        ok = run.non_2xx == 0 and run.socket_error_total == 0 and code == 0
        ok = _count_facts(gw, warm, run, facts) and ok
        if code != 0:
            facts.append("gateway log tail:\n```\n" + gw.proc.tail() + "\n```")
    return Outcome(name, label, run, facts, summary, ok=ok)


def _drain_facts(gw: gateway.Gateway) -> list[str]:
    waited, counts, drained = gateway.wait_drained(gw.db, timeout_s=60)
    facts = [
        (
            f"drained in {waited:.1f} s after the measured run"
            if drained
            else f"NOT drained after {waited:.0f} s"
        )
        + f"; statuses {counts}"
    ]
    stats = gateway.mock_stats(gw)
    submitted = sum(s["submitted"] for s in stats.values())
    distinct = sum(s["distinct"] for s in stats.values())
    per = ", ".join(
        f"{p} {s['submitted']}/{s['distinct']}" for p, s in stats.items() if s["submitted"]
    )
    facts.append(
        f"mock providers: submitted {submitted}, distinct {distinct}, "
        f"gateway messages {sum(counts.values())} "
        f"(per provider submitted/distinct: {per or 'none'})"
    )
    return facts


def _count_facts(
    gw: gateway.Gateway, warm: wrk.WrkResult, run: wrk.WrkResult, facts: list[str]
) -> bool:
    """Rows in ``messages`` against the 2xx wrk saw; extra rows up to 64 per wrk run are
    requests in flight when wrk stopped (done by the gateway, never counted by wrk)."""
    counts = gateway.status_counts(gw.db)
    rows = sum(counts.values())
    answered = 1 + warm.ok + run.ok  # the sanity send, the warm-up, the measured run
    extra = rows - answered
    slack = 2 * wrk.CONNECTIONS
    verdict = (
        "consistent"
        if 0 <= extra <= slack
        else f"LOST {-extra} accepted messages"
        if extra < 0
        else f"{extra} more rows than 2xx, beyond the {slack} in-flight slack"
    )
    facts.append(
        f"messages table after stop: {rows} rows {counts}; 2xx seen by the clients: "
        f"{answered} (1 check + {warm.ok} warm-up + {run.ok} measured); "
        f"difference {extra:+d}: {verdict}"
    )
    return 0 <= extra <= slack


# What a phone's browser sends when a card button or SMS link is tapped.
PHONE_USER_AGENT = (
    "Mozilla/5.0 (Linux; Android 14; HUAWEI P60) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/120.0.6099.230 Mobile Safari/537.36"
)


def click(opts: Options) -> Outcome:
    """Tracked-link redirects: ``GET /c/{token}`` answering 302, each a recorded click."""
    with tempfile.TemporaryDirectory(prefix="bench-click-") as tmp_name:
        tmp = Path(tmp_name)
        _log(f"click: starting the gateway in {tmp}")
        gw = gateway.start(tmp, dispatch=False, extra_env=opts.gateway_env)
        facts: list[str] = []
        try:
            url = gateway.tracked_link(gw)
            script = wrk.script(headers={"User-Agent": PHONE_USER_AGENT})
            warm, run, cpu, summary = _measure("click", url, script, gw.proc.pid, opts, tmp)
            facts += _wrk_facts(warm, run) + cpu
            facts.append(
                f"every answer a 302: {run.non_2xx == run.requests} (wrk counts 3xx as non-2xx)"
            )
            clicks = gateway.count_events(gw.db, "clicked")
            facts.append(
                f"clicked events recorded: {clicks:,} (answered {warm.requests + run.requests:,})"
            )
        finally:
            code = procs.stop(gw.proc, timeout_s=60)
        ok = run.socket_error_total == 0 and code == 0 and run.non_2xx == run.requests
    return Outcome("click", "D: click redirect (GET /c/{token}, 302)", run, facts, summary, ok=ok)
