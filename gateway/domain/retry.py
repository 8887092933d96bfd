"""Retry policy: exponential backoff with jitter, honouring the provider's own hint (pure)."""

from __future__ import annotations

import random


def backoff(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    defer: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    "Equal jitter": half the exponential delay is kept, half is drawn at random,
    so retries of a burst spread out but never come back sooner than half the
    step. A provider's ``Retry-After`` is a floor, not a suggestion.
    """
    r = rng or random
    step = min(max_s, base_s * (2 ** min(max(0, attempt - 1), 40)))
    delay = step / 2 + r.uniform(0, step / 2)
    if defer is not None:
        delay = max(delay, defer + r.uniform(0, min(1.0, defer / 4)))
    return delay
