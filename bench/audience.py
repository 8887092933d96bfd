"""Audience figures: importing a million NDJSON recipients, and a campaign end to end.

Both run the real gateway as a process (and for the campaign the real mock providers,
zero latency), over HTTP, on the real SQLite database; the gateway's peak memory is
its process's VmHWM (`bench.procs.peak_rss_mb`).
"""

from __future__ import annotations

import http.client
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import gateway, procs

CITIES = ("太原", "大同", "北京", "上海")


def _log(msg: str) -> None:
    print(f"bench: {msg}", flush=True, file=sys.stderr)


def write_ndjson(path: Path, count: int) -> None:
    """``count`` recipients spread over the number space (not in key order), as banks send."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            n = (i * 7_919_993) % 1_000_000_000
            out.write(
                json.dumps(
                    {
                        "phone": f"13{n:09d}",
                        "tags": ["fund"] if i % 5 else ["fund", "churned"],
                        "attrs": {
                            "name": f"客户{i}",
                            "age": 20 + i % 50,
                            "city": CITIES[i % 4],
                            "amount": 1000 + i % 9000,
                        },
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )


def _request(
    gw: gateway.Gateway,
    method: str,
    path: str,
    body: Any = None,
    data: bytes | None = None,
    content_type: str = "application/json",
    timeout_s: float = 600,
) -> Any:
    raw = data if data is not None else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{gw.url}{path}",
        data=raw,
        method=method,
        headers={"Authorization": f"Bearer {gw.campaign_key}", "Content-Type": content_type},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def _import(gw: gateway.Gateway, path: Path) -> tuple[dict[str, Any], float]:
    """Streams the file as the body, in 256 KiB blocks (urllib's 8 KiB would be the bottleneck)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=900, blocksize=1 << 18)
    try:
        with path.open("rb") as body:
            conn.request(
                "POST",
                "/v1/recipients:import",
                body=body,
                headers={
                    "Authorization": f"Bearer {gw.campaign_key}",
                    "Content-Type": "application/x-ndjson",
                    "Content-Length": str(path.stat().st_size),
                },
            )
            resp = conn.getresponse()
            out: dict[str, Any] = json.loads(resp.read())
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"import answered {resp.status}: {out}")
    return out, time.perf_counter() - started


def measure_import(count: int = 1_000_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        cwd = Path(tmp)
        data = cwd / "recipients.ndjson"
        _log(f"import: writing {count:,} NDJSON lines")
        write_ndjson(data, count)
        gw = gateway.start(cwd, dispatch=False)
        try:
            _log("import: streaming them to POST /v1/recipients:import")
            out, seconds = _import(gw, data)
            peak = procs.peak_rss_mb(gw.proc.pid)
        finally:
            procs.stop(gw.proc)
    return {
        "lines": count,
        "created": out["created"],
        "updated": out["updated"],
        "rejected": len(out["rejected"]),
        "seconds": round(seconds, 2),
        "rows_per_s": round(count / seconds),
        "peak_rss_mb": round(peak, 1),
    }


_FINAL = ",".join(f"'{s}'" for s in sorted(gateway.TERMINAL))


def _final_count(db: Path, campaign_id: str) -> int:
    sql = f"SELECT count(*) FROM messages WHERE campaign_id = ? AND status IN ({_FINAL})"
    return int(gateway.read(db, sql, (campaign_id,))[0][0])


def _failure_reasons(db: Path, campaign_id: str) -> dict[str, int]:
    """Why the campaign's failed messages failed (reason, and a render error's detail:
    count), the ten commonest: a run with failures says why, instead of leaving only their
    count behind its deleted database."""
    rows = gateway.read(
        db,
        "SELECT coalesce(reason, '?'), json_extract(rendered, '$.error'), count(*)"
        " FROM messages WHERE campaign_id = ? AND status = 'failed'"
        " GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10",
        (campaign_id,),
    )
    return {f"{reason}: {detail}" if detail else str(reason): int(n) for reason, detail, n in rows}


class _CpuMeter:
    """CPU used from now on by the gateway, its event loop (the main thread) and the mock
    providers (its children), each in % of one core: which of them a campaign waits on."""

    def __init__(self, pid: int) -> None:
        self._pids: dict[str, tuple[int, int | None]] = {
            "gateway": (pid, None),
            "event loop": (pid, pid),
        }
        for i, child in enumerate(procs.children(pid)):  # the mock providers, and no other
            self._pids["mock providers" if i == 0 else f"child {child}"] = (child, None)
        self._before = {k: procs.cpu_seconds(*p) for k, p in self._pids.items()}

    def shares(self, wall_s: float) -> dict[str, int]:
        """Each one's share; one that is gone (its CPU time reads 0) is left out."""
        used = {k: procs.cpu_seconds(*p) - self._before[k] for k, p in self._pids.items()}
        return {k: round(100 * v / wall_s) for k, v in used.items() if v >= 0}


def measure_campaign(count: int = 100_000, timeout_s: float = 900) -> dict[str, Any]:
    """Import ``count`` recipients, then time one campaign to them from POST to all delivered."""
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        cwd = Path(tmp)
        data = cwd / "recipients.ndjson"
        write_ndjson(data, count)
        gw = gateway.start(cwd, dispatch=True)
        try:
            _import(gw, data)
            import_peak = procs.peak_rss_mb(gw.proc.pid)
            # The campaign's own peak: the audience's import (its batches) came before it.
            reset = procs.reset_peak_rss(gw.proc.pid)
            rss_before = procs.rss_mb(gw.proc.pid)
            _request(gw, "PUT", "/v1/settings", {"quiet_hours": None, "frequency_cap": None})
            _request(gw, "PUT", "/v1/segments/fund", {"rule": {"tag": "fund"}})
            audience = _request(gw, "GET", "/v1/segments/fund/count")["count"]
            _log(f"campaign: {audience:,} recipients in the segment; starting the campaign")
            cpu = _CpuMeter(gw.proc.pid)
            started = time.perf_counter()
            campaign = _request(
                gw,
                "POST",
                "/v1/campaigns",
                {
                    "name": "bench",
                    "audience": {"segment_id": "fund"},
                    "variants": [{"template_id": "fund_due", "weight": 1}],
                    "variables": {"date": "2026-12-01", "fund_id": "F001"},
                    "ttl_seconds": 86400,
                },
            )
            # Poll the database read-only from here (the other core), not the stats API:
            # the funnel's aggregate over every message would load the gateway it measures.
            campaign_id = campaign["campaign_id"]
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if _final_count(gw.db, campaign_id) >= audience:
                    break
                time.sleep(0.25)
            seconds = time.perf_counter() - started
            cpu_share = cpu.shares(seconds)
            peak = procs.peak_rss_mb(gw.proc.pid)
            stats = _request(gw, "GET", f"/v1/campaigns/{campaign_id}/stats")
            delivered = stats["delivered"]
            reasons = _failure_reasons(gw.db, campaign_id) if stats.get("failed") else {}
        finally:
            procs.stop(gw.proc)
    return {
        "recipients": audience,
        "delivered": delivered,
        "seconds": round(seconds, 2),
        "messages_per_s": round(audience / seconds),
        "peak_rss_mb": round(peak, 1),
        "rss_at_start_mb": round(rss_before, 1),
        "import_peak_rss_mb": round(import_peak, 1),
        "peak_is_campaign_only": reset,
        "cpu": cpu_share,
        "routes": {k: v["targeted"] for k, v in stats.get("routes", {}).items()},
        "failed": stats.get("failed"),
        "failed_reasons": reasons,
        "suppressed": stats.get("suppressed"),
    }
