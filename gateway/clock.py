"""One injectable clock: everything that depends on time asks it, so tests move time."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FrozenClock:
    """A clock for tests: stands still until moved."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, at: float) -> None:
        self._now = at


def to_rfc3339(ts: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-23T01:30:00.123+00:00``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# Times inside events' data (a deferral's end, a retry's next attempt), kept as epoch
# seconds in the store, shown as RFC 3339 like every other time the API answers.
EVENT_TIME_KEYS = frozenset({"until", "next_at"})


def event_json(type_: str, at: float, data: dict[str, Any]) -> dict[str, Any]:
    """An event as the API and webhooks show it: its type, its time, its data, with every
    time in RFC 3339."""
    out: dict[str, Any] = {"type": type_, "at": to_rfc3339(at)}
    for key, value in data.items():
        if key in EVENT_TIME_KEYS and isinstance(value, int | float):
            value = to_rfc3339(value)
        out[key] = value
    return out


def from_rfc3339(text: str) -> float:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError("time must carry an offset")
    return dt.timestamp()
