"""A template variable's ``pattern``: Python's regular expressions, with a time limit.

Python's ``re`` backtracks: a pattern such as ``(a|aa)+`` against 40 characters of a
variable would hold the event loop (and every bank's sends) for minutes. The ``regex``
module reads patterns as ``re`` does (Unicode ``\\w`` and ``\\d``, ``\\uXXXX`` escapes, so
``[\\u4e00-\\u9fa5]+`` and ``\\w{2,4}`` still mean what they say for Chinese names) and
stops a match after a time limit. A pattern that once runs out of time is refused from
then on at once, with a message saying why.

That limit is read on ``clock()``: the CPU time of the whole process, every thread's, which
moves in steps. A match of ``[A-Z0-9]{1,12}`` against ``F001`` timed out 188 times in 1.2
million while three threads worked beside it (none without them), and once was enough to
refuse the pattern for good: a million-recipient campaign then failed every later batch as
``render_error``. So a time-out is believed only when this thread's own CPU time shows the
match ran that long; otherwise the match is tried again.

Matches keep the GIL (``concurrent=False``): by default ``regex`` lets go of it while it
matches a ``str``, and on the send path the writer's thread then took it each time, so the
loop waited for it back (a single send's rate measured 3,700-4,000 req/s with the default
against 4,500-5,400 without, alternating, three rounds each).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import regex

MAX_PATTERN = 200  # characters
MATCH_TIMEOUT_S = 0.01
RETRIES = 3  # time-outs not of the match's own making, this many in a row: the value fails
# A match that ran out of the process's time used at least this much of its thread's own,
# with up to ten threads of the process busy beside it; a match of a few microseconds that
# was held up used next to none.
_OWN_SHARE = MATCH_TIMEOUT_S / 10

_SLOW: set[str] = set()  # patterns that ran out of time once: refused at once from then on


class PatternError(ValueError):
    pass


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"at most {MAX_PATTERN} characters")
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise PatternError(f"not a regular expression: {exc}") from None


def matches(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern``; ``PatternError`` if matching it takes
    too long (a pattern that backtracks without end: the template needs a simpler one)."""
    if pattern in _SLOW:
        raise PatternError(_TOO_SLOW)
    compiled = compile_pattern(pattern)
    try:
        return _fullmatch(compiled, text)
    except TimeoutError:
        pass
    # Out of time: the pattern backtracks, or other threads' CPU time ran the clock while
    # this one waited. Tried again, timing this thread's own.
    for _ in range(RETRIES):
        started = time.thread_time()
        try:
            return _fullmatch(compiled, text)
        except TimeoutError:
            if time.thread_time() - started >= _OWN_SHARE:
                if len(_SLOW) < 1024:
                    _SLOW.add(pattern)
                raise PatternError(_TOO_SLOW) from None
    raise PatternError(_HELD_UP)  # this value fails; the pattern is not refused


def _fullmatch(compiled: Any, text: str) -> bool:
    return compiled.fullmatch(text, timeout=MATCH_TIMEOUT_S, concurrent=False) is not None


_TOO_SLOW = "its pattern takes too long to match (it backtracks): store a simpler one"
_HELD_UP = "its pattern could not be checked in time (the gateway was too busy)"
