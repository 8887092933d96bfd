"""A template variable's ``pattern``: Python's regular expressions, with a time limit.

Python's ``re`` backtracks: a pattern such as ``(a|aa)+`` against 40 characters of a
variable would hold the event loop (and every bank's sends) for minutes. The ``regex``
module reads patterns as ``re`` does (Unicode ``\\w`` and ``\\d``, ``\\uXXXX`` escapes, so
``[\\u4e00-\\u9fa5]+`` and ``\\w{2,4}`` still mean what they say for Chinese names) and
stops a match after a time limit. A pattern that once runs out of time is refused from
then on at once, with a message saying why.

Matches keep the GIL (``concurrent=False``): by default ``regex`` lets go of it while it
matches a ``str``, and on the send path the writer's thread then took it each time, so the
loop waited for it back (a single send's rate measured 3,700-4,000 req/s with the default
against 4,500-5,400 without, alternating, three rounds each).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import regex

MAX_PATTERN = 200  # characters
MATCH_TIMEOUT_S = 0.01

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
    try:
        return (
            compile_pattern(pattern).fullmatch(text, timeout=MATCH_TIMEOUT_S, concurrent=False)
            is not None
        )
    except TimeoutError:
        if len(_SLOW) < 1024:
            _SLOW.add(pattern)
        raise PatternError(_TOO_SLOW) from None


_TOO_SLOW = "its pattern takes too long to match (it backtracks): store a simpler one"
