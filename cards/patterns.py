"""A template variable's ``pattern``, matched by RE2: in linear time, whatever the pattern.

Python's ``re`` backtracks: a pattern such as ``(a+)+`` took 0.44 s over 24 characters of a
variable and doubled with each one more, holding the event loop (and every bank's sends)
all the while. RE2 has no backtracking, and so no backreferences or lookarounds either: a
pattern that needs them is refused when the template is stored.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

MAX_PATTERN = 200  # characters

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is the caller's 422, not a line on stderr


class PatternError(ValueError):
    pass


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"at most {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise PatternError(
            f"not a pattern RE2 accepts ({reason}; no backreferences or lookarounds)"
        ) from None


def matches(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern`` (a pattern that compiled when stored)."""
    return compile_pattern(pattern).fullmatch(text) is not None
