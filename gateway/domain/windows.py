"""When a marketing message may go: the campaign's send window and the tenant's quiet hours,
in the recipient's own time zone (pure).

A window is local start/end times and weekdays; one that ends before it starts crosses
midnight (its early-morning part belongs to the day it opened). Quiet hours (default
21:00–08:00) are the same kind of interval, when nothing goes. ``next_opening`` answers
the first instant at or after ``now`` that is inside the window and outside quiet hours,
so a message outside is deferred to exactly then, never dropped. DST is zoneinfo's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Interval:
    """Local times; ``end <= start`` means it crosses midnight."""

    start: time
    end: time

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


@dataclass(frozen=True, slots=True)
class Window:
    interval: Interval
    days: frozenset[int] = frozenset(range(7))  # 0 = Monday

    def contains(self, local: datetime) -> bool:
        t = local.timetz().replace(tzinfo=None)
        if not self.interval.contains(t):
            return False
        day = local.weekday()
        crosses = self.interval.end <= self.interval.start
        if crosses and t < self.interval.end:
            day = (day - 1) % 7  # after midnight: the window opened yesterday
        return day in self.days


_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_hhmm(text: str) -> time:
    """``"09:30"`` → 09:30. Only that form: two ASCII digits each (``int`` would also take
    ``"+9"``, ``" 8"`` or other scripts' digits)."""
    m = _HHMM.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a time of day (HH:MM, 00:00 to 23:59)")
    return time(int(m[1]), int(m[2]))


def stored_hhmm(text: str) -> time:
    """A time of day as stored: as ``parse_hhmm`` reads it, or as versions before it did
    (two characters each side that ``int`` reads: ``" 8:00"``, ``"+9:00"``), so that the
    settings and windows they stored are still read, not a failed dispatch round."""
    try:
        return parse_hhmm(text)
    except ValueError:
        hours, minutes = text.split(":")
        if len(hours) != 2 or len(minutes) != 2:
            raise
        return time(int(hours), int(minutes))


def parse_days(days: Sequence[str]) -> frozenset[int]:
    out = set()
    for d in days:
        if d not in DAYS:
            raise ValueError(f"{d!r} is not a day; one of {', '.join(DAYS)}")
        out.add(DAYS.index(d))
    if not out:
        raise ValueError("at least one day")
    return frozenset(out)


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """IANA's zone names, without the host's own zone (``localtime``) and tzdata's
    placeholder (``Factory``), which ``ZoneInfo`` would load too (as it would
    ``posixrules`` or ``right/UTC``: files, not names)."""
    return frozenset(available_timezones() - {"localtime", "Factory"})


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    if name not in _zone_names():
        raise ValueError(f"{name!r} is not an IANA time zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone") from None


@lru_cache(maxsize=1024)  # once a message the dispatcher holds to its window
def stored_zone(name: str) -> ZoneInfo:
    """A recipient's time zone as stored: versions before ``zone`` checked names took any
    file of the zone database (``localtime``, ``posixrules``), and those load as before."""
    try:
        return zone(name)
    except ValueError:
        return ZoneInfo(name)


def allowed(ts: float, tz: ZoneInfo, window: Window | None, quiet: Interval | None) -> bool:
    local = datetime.fromtimestamp(ts, tz)
    if window is not None and not window.contains(local):
        return False
    return not (quiet is not None and quiet.contains(local.time()))


def _local_instant(d: date, t: time, tz: ZoneInfo) -> float:
    """The instant of local ``d t``; a time that does not exist (DST gap) moves forward."""
    naive = datetime.combine(d, t)
    after = naive.replace(tzinfo=tz).timestamp()
    if datetime.fromtimestamp(after, tz).replace(tzinfo=None) == naive:
        return after
    # In a gap: the local time never happens that night. Its two readings fall either
    # side of the transition; the first instant past the gap is where the clock jumps.
    lo = naive.replace(tzinfo=tz, fold=1).timestamp()
    lo, hi = min(lo, after), max(lo, after)
    while hi - lo > 1:
        mid = (lo + hi) / 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return float(round(hi))


def next_opening(
    now: float, tz: ZoneInfo, window: Window | None, quiet: Interval | None
) -> float | None:
    """The first instant >= ``now`` a message may go; None if never within 9 days."""
    if allowed(now, tz, window, quiet):
        return now
    today = datetime.fromtimestamp(now, tz).date()
    starts = []
    if window is not None:
        starts.append(window.interval.start)
    if quiet is not None:
        starts.append(quiet.end)
    candidates = sorted(
        ts
        for offset in range(-1, 9)
        for t in starts
        if (ts := _local_instant(today + timedelta(days=offset), t, tz)) > now
    )
    for ts in candidates:
        if allowed(ts, tz, window, quiet):
            return ts
    return None
