"""D: dispatch throughput, messages per second from the durable queue to provider acks.

1. Fill: a gateway with its dispatcher off takes ``N`` sends (``POST /v1/messages``,
   64 connections, each number once: ``138…``, ``130…`` and ``189…`` in turn, so
   China Mobile, Unicom and Telecom a third each) and is stopped with SIGTERM;
   ``messages`` must then hold ``N`` rows, all ``accepted``. Done once per ``bench``
   run; each drain starts from a copy of that ``var/``.
2. Drain, once per mock latency: the mock providers (every provider at that latency,
   delivery reports held back for 10 minutes, so only queue → ack is measured), then
   a gateway with the dispatcher on over the copied database. ``t0`` is when
   ``/readyz`` first answers 200; the database is polled read-only every 100 ms
   until no message is ``accepted`` (at most 300 s). Messages/s = N / (last − first
   provider acknowledgement, from ``messages.updated_at``): the dispatcher starts
   before the gateway listens, so a rate from ``t0`` would count acknowledgements
   made before it (up to a fifth of them with claims of 1,000); that rate is
   reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench import gateway, procs, profile, wrk
from bench.scenarios import Options, Outcome

LATENCIES_MS = (0, 50)
PREFIXES = ("138", "130", "189")  # China Mobile, China Unicom, China Telecom
FILL_CONNECTIONS = 64
FILL_TIMEOUT_S = 30.0
POLL_S = 0.1
DRAIN_BOUND_S = 300.0
READY_BOUND_S = 120.0
DLR_DELAY_MS = 600_000  # no delivery reports during the drain
REVIEW_DELAY_MS = 10


# The gateway's admin socket folder: a socket is no file to copy (and belongs to its gateway).
_NOT_COPIED = shutil.ignore_patterns("admin")


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def number(i: int) -> str:
    """The ``i``-th recipient: the three carriers' prefixes in turn, every number distinct."""
    return PREFIXES[i % 3] + f"{i // 3:08d}"


def label(latency_ms: int) -> str:
    return f"drain, providers {latency_ms} ms"


# fill ---------------------------------------------------------------------------------------


@dataclass
class Fill:
    messages: int
    seconds: float
    accepted: int
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sample: str | None = None

    @property
    def rps(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def _post_all(url: str, key: str, n: int) -> Fill:
    """POSTs sends for recipients 0…n−1, each once, over 64 connections; no retries."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    template = gateway.body_template()
    todo = iter(range(n))
    fill = Fill(n, 0.0, 0)
    timeout = aiohttp.ClientTimeout(total=FILL_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=FILL_CONNECTIONS)

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in todo:  # one shared iterator: every index goes to exactly one worker
            body = template.replace("{to}", number(i)).encode()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    if resp.status == 202:
                        fill.accepted += 1
                    else:
                        fill.statuses[resp.status] += 1
                        fill.sample = fill.sample or text[:300]
            except (aiohttp.ClientError, TimeoutError) as exc:
                fill.errors[type(exc).__name__] += 1

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(FILL_CONNECTIONS)))
    fill.seconds = time.monotonic() - started
    return fill


def fill_queue(cwd: Path, n: int) -> tuple[Fill, list[str]]:
    """Step 1: ``n`` accepted messages in ``cwd/var/gateway.db``, the gateway stopped."""
    _log(f"drain: filling the queue with {n:,} messages in {cwd} (dispatcher off)")
    gw = gateway.start(cwd, dispatch=False)
    try:
        fill = asyncio.run(_post_all(f"{gw.url}/v1/messages", gw.campaign_key, n))
    finally:
        code = procs.stop(gw.proc, timeout_s=60)
    if code != 0:
        raise RuntimeError(f"filling gateway exited {code}:\n{gw.proc.tail()}")
    statuses = gateway.status_counts(gw.db)
    queued = gateway.read(gw.db, "SELECT count(*) FROM dispatch_queue")[0][0]
    if fill.accepted != n or statuses != {"accepted": n} or queued != n:
        raise RuntimeError(
            f"queue not filled: {fill.accepted} of {n} answered 202 (other statuses "
            f"{dict(fill.statuses)}, errors {dict(fill.errors)}, a body: {fill.sample}); "
            f"messages {statuses}, dispatch_queue {queued}"
        )
    facts = [
        f"queue filled by {n:,} POST /v1/messages ({FILL_CONNECTIONS} connections, Python "
        f"aiohttp client) in {fill.seconds:.1f} s ({fill.rps:,.0f} req/s), all 202; then "
        f"`messages` held {n:,} rows, all `accepted`, and `dispatch_queue` {queued:,}"
    ]
    return fill, facts


REVIEW_BOUND_S = 60.0


def approve_templates(var: Path) -> str:
    """The vendors' verdicts on the demo templates, written into the filled ``var/``.

    A live gateway's templates were reviewed long before a campaign; a drain that began
    with them pending planned its first seconds of messages without vendor cards (the
    faster the drain, the more of them). So a copy of ``var/`` with an empty queue is
    served once by a gateway and the mock providers until no review is pending, and the
    verdicts it got are copied into the seed (no gateway runs on it meanwhile).
    """
    with tempfile.TemporaryDirectory(prefix="bench-drain-reviews-") as tmp_name:
        cwd = Path(tmp_name)
        shutil.copytree(var, cwd / "var", ignore=_NOT_COPIED)
        db = cwd / "var" / "gateway.db"
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM dispatch_queue")
        port, mock_port = procs.free_port(), procs.free_port()
        config = cwd / "mock.toml"
        config.write_text(gateway.mock_toml(latency_ms=0, review_delay_ms=REVIEW_DELAY_MS))
        env = gateway.environment(port, mock_port, dispatch=True)
        env["GATEWAY_MOCK_CONFIG"] = str(config)
        gw = procs.start(
            [*gateway.command(), "--with-mock-providers"], cwd=cwd, env=env, log=cwd / "gw.log"
        )
        sql = "SELECT count(*) FROM template_reviews WHERE state IN ('pending', 'submitted')"
        try:
            procs.wait_ready(gw, f"http://127.0.0.1:{port}/readyz", timeout_s=READY_BOUND_S)
            deadline = time.monotonic() + REVIEW_BOUND_S
            while gateway.read(db, sql)[0][0] and time.monotonic() < deadline:
                time.sleep(POLL_S)
        finally:
            procs.stop(gw)
        if gateway.read(db, sql)[0][0]:
            raise RuntimeError(f"template reviews still pending:\n{gw.tail()}")
        with sqlite3.connect(var / "gateway.db") as conn:
            conn.execute("ATTACH DATABASE ? AS reviewed", (str(db),))
            # only the versions the seed holds (each start with --seed-demo adds versions)
            conn.execute(
                "INSERT OR REPLACE INTO template_reviews SELECT r.* FROM"
                " reviewed.template_reviews r JOIN templates t USING (tenant_id, template_id,"
                " version)"
            )
            states = conn.execute(
                "SELECT state, count(*) FROM template_reviews r JOIN templates t"
                " USING (tenant_id, template_id, version) GROUP BY state ORDER BY state"
            ).fetchall()
            conn.commit()
            conn.execute("DETACH DATABASE reviewed")
    return "template reviews done before the drains: " + ", ".join(f"{s} {n}" for s, n in states)


class Seed:
    """The filled ``var/``, made on first use and copied for every drain."""

    def __init__(self, messages: int) -> None:
        self.messages = messages
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-drain-seed-")
        self._var: Path | None = None

    def copy_to(self, cwd: Path) -> list[str]:
        """Copies the filled ``var/`` into ``cwd``; answers the fill's facts the first time."""
        if self._var is not None:
            shutil.copytree(self._var, cwd / "var", ignore=_NOT_COPIED)
            return [f"queue: a copy of the {self.messages:,} messages filled once for this run"]
        root = Path(self._tmp.name)
        _, facts = fill_queue(root, self.messages)
        self._var = root / "var"
        facts.append(approve_templates(self._var))
        shutil.copytree(self._var, cwd / "var", ignore=_NOT_COPIED)
        return facts

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Seed:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# drain --------------------------------------------------------------------------------------


def _outside(code: int | None) -> str:
    """A note for an exit by a signal bench did not send."""
    if code is not None and code < 0:
        return f": killed by signal {-code}, not sent by bench (another process on this machine)"
    return ""


def _wait_ready(proc: procs.Proc, url: str) -> float:
    """Polls ``url`` every 10 ms until it answers 200: the ``time.monotonic()`` it did."""
    deadline = time.monotonic() + READY_BOUND_S
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"gateway exited with {proc.popen.returncode}{_outside(proc.popen.returncode)}:\n"
                + proc.tail()
            )
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                if resp.status == 200:
                    return time.monotonic()
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} not ready within {READY_BOUND_S:.0f} s:\n{proc.tail()}")


@dataclass
class Poll:
    """What the read-only polling saw: (seconds after t0, messages still accepted)."""

    points: list[tuple[float, int]] = field(default_factory=list)

    def crossing(self, remaining: float) -> float | None:
        """Seconds after t0 of the first poll with at most ``remaining`` left."""
        return next((t for t, left in self.points if left <= remaining), None)

    def timeline(self, every_s: float = 1.0) -> str:
        out, next_t = [], 0.0
        for t, left in self.points:
            if t >= next_t:
                out.append(f"+{t:.1f} s {left:,}")
                next_t = math.floor(t / every_s) * every_s + every_s
        return "; ".join(out)


def _poll(db: Path, t0: float, proc: procs.Proc) -> Poll:
    """Polls until no message is ``accepted``, the bound passes, or the gateway is gone."""
    poll = Poll()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        while True:
            (left,) = conn.execute(
                "SELECT count(*) FROM messages WHERE status = 'accepted'"
            ).fetchone()
            t = time.monotonic() - t0
            poll.points.append((t, int(left)))
            if left == 0 or t >= DRAIN_BOUND_S or proc.popen.poll() is not None:
                return poll
            time.sleep(POLL_S)
    finally:
        conn.close()


def _cpu_fact(pids: dict[str, int], before: dict[str, float], wall: float) -> str:
    parts = [
        f"{name} (pid {pid}) {100 * (procs.cpu_seconds(pid) - before[name]) / wall:.0f}%"
        for name, pid in pids.items()
    ]
    return "CPU during the drain, % of one core: " + ", ".join(parts)


def _mock_profile(s: profile.Summary, raw: Path) -> str:
    top = ", ".join(f"{pct:.1f}% `{frame}`" for frame, pct in s.self_functions[:8])
    return (
        f"mock providers' profile ({s.samples} samples of {s.thread}, collapsed stacks in "
        f"`{raw.name}`), self time by function: {top}"
    )


def drain(opts: Options, seed: Seed, latency_ms: int) -> Outcome:
    name = f"drain-{latency_ms}ms"
    n = seed.messages
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp_name:
        cwd = Path(tmp_name)
        db = cwd / "var" / "gateway.db"
        facts = seed.copy_to(cwd)
        port, mock_port = procs.free_port(), procs.free_port()
        mock_config = cwd / "mock.toml"
        mock_config.write_text(
            gateway.mock_toml(
                latency_ms=latency_ms, dlr_delay_ms=DLR_DELAY_MS, review_delay_ms=REVIEW_DELAY_MS
            )
        )
        mock_env = gateway.environment(port, mock_port, dispatch=False)
        mock_env["GATEWAY_MOCK_CONFIG"] = str(mock_config)
        _log(f"{name}: starting the mock providers ({latency_ms} ms) in {cwd}")
        mock = procs.start(
            [sys.executable, "-m", "providers", "serve", "--host", "127.0.0.1"],
            cwd=cwd,
            env=mock_env,
            log=cwd / "mock.log",
        )
        gw: procs.Proc | None = None
        spy = mock_spy = None
        raw = opts.out_dir / f"profile-{name}.txt"
        mock_raw = opts.out_dir / f"profile-{name}-mock.txt"
        summary = None
        code, stop_s, early = None, 0.0, None
        try:
            procs.wait_ready(mock, f"http://127.0.0.1:{mock_port}/healthz")
            env = gateway.environment(port, mock_port, dispatch=True, extra_env=opts.gateway_env)
            _log(f"{name}: starting the gateway over {n:,} queued messages")
            spawned_wall, spawned = time.time(), time.monotonic()
            gw = procs.start(gateway.command(), cwd=cwd, env=env, log=cwd / "gateway.log")
            t0 = _wait_ready(gw, f"http://127.0.0.1:{port}/readyz")
            wall0 = spawned_wall + (t0 - spawned)
            pids = {"gateway": gw.pid, "mock providers": mock.pid}
            cpu0 = {k: procs.cpu_seconds(p) for k, p in pids.items()}
            steal0, total0 = procs.host_cpu_ticks()
            if opts.profile:
                spy = profile.start(gw.pid, DRAIN_BOUND_S, raw)
                mock_spy = profile.start(mock.pid, DRAIN_BOUND_S, mock_raw)
            _log(f"{name}: /readyz answered {t0 - spawned:.1f} s after start; draining")
            poll = _poll(db, t0, gw)
            wall = max(1e-9, time.monotonic() - t0)
            steal1, total1 = procs.host_cpu_ticks()
            steal = 100 * (steal1 - steal0) / max(1, total1 - total0)
            facts.append(_cpu_fact(pids, cpu0, wall) + f"; CPU steal by the host {steal:.1f}%")
            if spy is not None and mock_spy is not None:
                profile.stop(spy)
                profile.stop(mock_spy)
                summary = profile.summarize(raw)
                facts.append(_mock_profile(profile.summarize(mock_raw), mock_raw))
            stats: dict[str, dict[str, int]] = json.loads(
                procs.get_json_text(f"http://127.0.0.1:{mock_port}/_mock/stats")
            )
            facts.append(
                f"gateway peak memory (VmHWM, after the drain) {procs.peak_rss_mb(gw.pid):.1f} MB"
            )
        finally:
            for running in (spy, mock_spy):
                if running is not None and running.poll() is None:
                    running.kill()
                    running.wait()
            if gw is not None:
                early = gw.popen.poll()  # None: still running, as it should be
                t_stop = time.monotonic()
                code = procs.stop(gw, timeout_s=60)
                stop_s = time.monotonic() - t_stop
            procs.stop(mock)
        end, left = poll.points[-1]
        drained = left == 0
        readyz_rate = n / end if drained and end > 0 else 0.0
        statuses = gateway.status_counts(db)
        routes = gateway.read(
            db, "SELECT route, count(*) FROM messages GROUP BY route ORDER BY count(*) DESC"
        )
        first_ack, last_ack = gateway.read(
            db, "SELECT min(updated_at), max(updated_at) FROM messages WHERE status = 'submitted'"
        )[0]
        # The headline: from the first acknowledgement to the last. The gateway's dispatcher
        # starts before it listens, so a rate from /readyz counted work done before it.
        span = (
            last_ack - first_ack
            if isinstance(first_ack, float) and isinstance(last_ack, float)
            else 0.0
        )
        rate = n / span if drained and span > 0 else 0.0
        submitted = sum(s["submitted"] for s in stats.values())
        distinct = sum(s["distinct"] for s in stats.values())
        at_ready = poll.points[0][1]
        facts += [
            (
                f"drained: {n:,} messages from `accepted` in {end:.2f} s after /readyz "
                f"answered 200 ({t0 - spawned:.2f} s after the gateway was started): "
                f"{readyz_rate:,.0f} messages/s from /readyz"
                if drained
                else f"NOT drained: {left:,} of {n:,} still `accepted` after {end:.0f} s"
            ),
            f"at /readyz, {at_ready:,} were still `accepted` ({n - at_ready:,} had been "
            "acknowledged while the gateway was starting: its dispatcher starts before it "
            "listens)",
        ]
        if isinstance(first_ack, float) and isinstance(last_ack, float):
            facts.append(
                f"provider acknowledgements recorded (`messages.updated_at`) from "
                f"{first_ack - wall0:+.2f} s to {last_ack - wall0:+.2f} s of /readyz: first to "
                f"last ack {span:.2f} s, **{n / span if span > 0 else 0:,.0f} messages/s** "
                "(the headline); from "
                f"the gateway's start to the last ack {last_ack - spawned_wall:.2f} s, "
                f"{n / max(1e-9, last_ack - spawned_wall):,.0f} messages/s"
            )
        t10, t90 = poll.crossing(0.9 * n), poll.crossing(0.1 * n)
        if t10 is not None and t90 is not None and t90 > t10:
            facts.append(
                f"steady rate, 10% to 90% drained (polls at +{t10:.1f} s and +{t90:.1f} s): "
                f"{0.8 * n / (t90 - t10):,.0f} messages/s"
            )
        facts.append(f"still `accepted`, by second after /readyz: {poll.timeline()}")
        per = ", ".join(
            f"{p} {s['submitted']}/{s['distinct']}" for p, s in stats.items() if s["submitted"]
        )
        facts += [
            f"mock providers: submitted {submitted:,}, distinct {distinct:,} of {n:,} "
            f"(per provider submitted/distinct: {per or 'none'})"
            + ("" if submitted == distinct == n else " — MISMATCH"),
            "route split: "
            + ", ".join(f"{route or 'none'} {count:,}" for route, count in routes)
            + f"; statuses {statuses}",
            (
                f"gateway stopped by SIGTERM in {stop_s:.1f} s, exit {code}"
                if early is None
                else f"gateway had ALREADY EXITED ({early}{_outside(early)}) before bench "
                "sent it SIGTERM"
            ),
        ]
        ok = drained and submitted == distinct == n and statuses == {"submitted": n}
        ok = ok and code == 0
        if not ok:
            facts += [
                f"{what} log tail:\n```\n{proc.tail()}\n```"
                for what, proc in (("gateway", gw), ("mock providers", mock))
                if proc is not None
            ]
    result = wrk.WrkResult(
        requests=n,
        seconds=span,
        rps=rate,
        p50_ms=math.nan,
        p99_ms=math.nan,
        non_2xx=0,
    )
    return Outcome(name, label(latency_ms), result, facts, summary, ok=ok)


def run(opts: Options, seed: Seed) -> list[Outcome]:
    return [drain(opts, seed, latency) for latency in LATENCIES_MS]
