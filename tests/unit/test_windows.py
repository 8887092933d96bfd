"""Send windows and quiet hours in the recipient's own time: edges, midnight, zones, DST."""

from __future__ import annotations

from datetime import datetime, time

import pytest

from gateway.domain.windows import (
    Interval,
    Window,
    allowed,
    next_opening,
    parse_days,
    parse_hhmm,
    zone,
)

SH = zone("Asia/Shanghai")
NY = zone("America/New_York")
WEEKDAYS_9_20 = Window(Interval(time(9), time(20)), parse_days(["mon", "tue", "wed", "thu", "fri"]))
QUIET = Interval(time(21), time(8))


def at(text: str, tz=SH) -> float:  # type: ignore[no-untyped-def]
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def local(ts: float, tz=SH) -> str:  # type: ignore[no-untyped-def]
    return datetime.fromtimestamp(ts, tz).strftime("%a %Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-11-23 10:00", "Mon 2026-11-23 10:00"),  # inside: now
        ("2026-11-23 08:59", "Mon 2026-11-23 09:00"),  # just before the start
        ("2026-11-23 09:00", "Mon 2026-11-23 09:00"),  # the start is inside
        ("2026-11-23 20:00", "Tue 2026-11-24 09:00"),  # the end is outside
        ("2026-11-27 19:59", "Fri 2026-11-27 19:59"),
        ("2026-11-27 20:30", "Mon 2026-11-30 09:00"),  # Friday night waits for Monday
        ("2026-11-28 12:00", "Mon 2026-11-30 09:00"),  # Saturday
    ],
)
def test_weekday_window(now: str, expected: str) -> None:
    """A 09:00–20:00 weekday window: inside goes now, outside waits for the next opening."""
    assert local(next_opening(at(now), SH, WEEKDAYS_9_20, None)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-11-23 21:00", "Tue 2026-11-24 08:00"),
        ("2026-11-23 23:59", "Tue 2026-11-24 08:00"),
        ("2026-11-24 07:59", "Tue 2026-11-24 08:00"),
        ("2026-11-24 08:00", "Tue 2026-11-24 08:00"),
        ("2026-11-24 20:59", "Tue 2026-11-24 20:59"),
    ],
)
def test_quiet_hours_cross_midnight(now: str, expected: str) -> None:
    """Quiet hours 21:00–08:00 hold messages until 08:00 the next morning."""
    assert local(next_opening(at(now), SH, None, QUIET)) == expected  # type: ignore[arg-type]


def test_window_crossing_midnight_belongs_to_the_day_it_opened() -> None:
    """A Friday-only 22:00–02:00 window includes Saturday 01:00 but not Friday 01:00."""
    w = Window(Interval(time(22), time(2)), parse_days(["fri"]))
    assert allowed(at("2026-11-28 01:00"), SH, w, None)  # Saturday early morning
    assert not allowed(at("2026-11-27 01:00"), SH, w, None)  # Friday early morning
    assert local(next_opening(at("2026-11-27 01:00"), SH, w, None)) == "Fri 2026-11-27 22:00"  # type: ignore[arg-type]


def test_window_and_quiet_hours_together() -> None:
    """A 07:00–22:00 window under 21:00–08:00 quiet hours opens 08:00–21:00."""
    w = Window(Interval(time(7), time(22)))
    assert local(next_opening(at("2026-11-23 07:30"), SH, w, QUIET)) == "Mon 2026-11-23 08:00"  # type: ignore[arg-type]
    assert local(next_opening(at("2026-11-23 21:30"), SH, w, QUIET)) == "Tue 2026-11-24 08:00"  # type: ignore[arg-type]


def test_recipient_in_another_time_zone() -> None:
    """The same instant is outside the window in Shanghai and inside it in New York."""
    instant = at("2026-11-23 22:00", SH)  # 09:00 in New York
    assert not allowed(instant, SH, WEEKDAYS_9_20, None)
    assert allowed(instant, NY, WEEKDAYS_9_20, None)
    assert local(next_opening(instant, SH, WEEKDAYS_9_20, None)) == "Tue 2026-11-24 09:00"  # type: ignore[arg-type]


def test_dst_spring_forward_gap() -> None:
    """A 02:30 window start on the night New York skips 02:00–03:00 opens when the clock jumps."""
    w = Window(Interval(time(2, 30), time(5)))
    opening = next_opening(at("2026-03-08 01:00", NY), NY, w, None)
    assert opening is not None
    assert (
        datetime.fromtimestamp(opening, NY).strftime("%H:%M %Z") == "03:30 EDT"
        or datetime.fromtimestamp(opening, NY).strftime("%H:%M %Z") == "03:00 EDT"
    )


def test_dst_fall_back_keeps_local_times() -> None:
    """On the night clocks go back, 09:00 is still 09:00 local (EST)."""
    opening = next_opening(
        at("2026-11-01 00:30", NY),
        NY,
        Window(Interval(time(9), time(20))),
        None,
    )
    assert opening is not None
    assert (
        datetime.fromtimestamp(opening, NY).strftime("%Y-%m-%d %H:%M %Z") == "2026-11-01 09:00 EST"
    )


def test_parsing() -> None:
    """Times are HH:MM, days three-letter names, zones IANA names; anything else is refused."""
    assert parse_hhmm("09:30") == time(9, 30)
    for bad in ("9:30", "25:00", "0930", "ab:cd"):
        with pytest.raises(ValueError):
            parse_hhmm(bad)
    with pytest.raises(ValueError):
        parse_days(["monday"])
    with pytest.raises(ValueError):
        zone("Mars/Olympus")
