"""What the mock providers remember: counts, dedupe, phones' inboxes, rate buckets.

Pure bookkeeping: no I/O, so it is easy to reason about and to test.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any

import orjson

from providers.mock.config import PROVIDERS

E164 = re.compile(r"\+\d{8,15}")
CN_MOBILE = re.compile(r"1\d{10}")
DIGITS = re.compile(r"\d{8,15}")
SEPARATORS = re.compile(r"[\s\-()]")


_last_stamp: tuple[int, str] = (0, "")


def utc_now() -> str:
    """The current time, RFC 3339 in UTC, to the millisecond (formatted once a millisecond:
    a busy mock stamps thousands of messages in each)."""
    global _last_stamp
    now = time.time()
    ms = int(now * 1000)
    if ms != _last_stamp[0]:
        stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        _last_stamp = (ms, stamp)
    return _last_stamp[1]


def is_e164(number: str) -> bool:
    return E164.fullmatch(number) is not None


def normalise_number(raw: str) -> str | None:
    """``raw`` in E.164, or ``None``; accepts ``+86…``, an 11-digit CN mobile, or
    digits whose ``+`` was lost to URL decoding."""
    if is_e164(raw):  # the common case: nothing to strip
        return raw
    number = SEPARATORS.sub("", raw)
    if is_e164(number):
        return number
    if CN_MOBILE.fullmatch(number):
        return "+86" + number
    if DIGITS.fullmatch(number):
        return "+" + number
    return None


@dataclass(slots=True)
class Counts:
    submitted: int = 0
    distinct: int = 0


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submission the provider took: its reference, and whether it is new."""

    msg_id: str
    is_new: bool


@dataclass(slots=True)
class MockState:
    """Counts, dedupe and inboxes of every mock provider."""

    counts: dict[str, Counts] = field(default_factory=lambda: {p: Counts() for p in PROVIDERS})
    # each phone's messages as JSON: a million dicts of cards kept as objects made the
    # mock's full garbage collections take ~3 s in a million-recipient campaign, during
    # which it took nothing (bytes are not tracked by the collector)
    inboxes: dict[str, list[bytes]] = field(default_factory=dict)
    callback_bases: dict[str, str] = field(default_factory=dict)
    _seen: dict[tuple[str, str], str] = field(default_factory=dict)
    _ids: set[tuple[str, str]] = field(default_factory=set)  # (provider, gateway message id)
    # references are unique to this process (a random prefix) and cheap (a counter):
    # a uuid4 per message cost more than the rest of taking it
    _prefix: str = field(default_factory=lambda: secrets.token_hex(6))
    _serial: count[int] = field(default_factory=count)

    def accept(
        self, provider: str, client_ref: str, to: str, route: str, content: dict[str, Any]
    ) -> Accepted:
        """Take one message; a ``client_ref`` seen before keeps its id and is not re-delivered.

        ``client_ref`` is deduped per provider across its routes (a carrier's SMS
        and 5G messages share one id space); ``content`` (``text``, ``message`` or
        ``card`` and ``template_ref``) is what the phone's inbox records.
        """
        counts = self.counts[provider]
        counts.submitted += 1
        known = self._seen.get((provider, client_ref))
        if known is not None:
            return Accepted(known, is_new=False)
        msg_id = f"{provider}-{self._prefix}{next(self._serial):08x}"
        self._seen[(provider, client_ref)] = msg_id
        # distinct gateway message ids: a carrier's SMS after its own 5G message of the same
        # message comes as ``<id>.1`` (a new reference, one message)
        gateway_id = (provider, client_ref.split(".", 1)[0])
        if gateway_id not in self._ids:
            self._ids.add(gateway_id)
            counts.distinct += 1
        self.inboxes.setdefault(to, []).append(
            orjson.dumps(
                {
                    "provider": provider,
                    "client_ref": client_ref,
                    "msg_id": msg_id,
                    "route": route,
                    **content,
                    "at": utc_now(),
                }
            )
        )
        return Accepted(msg_id, is_new=True)

    def seen_refs(self) -> dict[tuple[str, str], str]:
        return self._seen

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            p: {"submitted": c.submitted, "distinct": c.distinct} for p, c in self.counts.items()
        }

    def inbox(self, to: str) -> list[dict[str, Any]]:
        return [orjson.loads(m) for m in self.inboxes.get(to, ())]

    def last_ref_to(self, to: str) -> str | None:
        """The client_ref of the last message the phone ``to`` got, from any provider: a
        reply answers the thread the phone shows last (a card a vendor showed included)."""
        inbox = self.inboxes.get(to)
        return str(orjson.loads(inbox[-1])["client_ref"]) if inbox else None

    def reset(self) -> None:
        """Forget counts, inboxes and dedupe (rate buckets and callback bases stay)."""
        self.counts = {p: Counts() for p in PROVIDERS}
        self.inboxes.clear()
        self._seen.clear()
        self._ids.clear()


class TokenBucket:
    """A rate limit in messages per second; the bucket holds ``max(1, rate)`` messages.

    A batch larger than the bucket is let through once the bucket is full and
    leaves it in debt, so any batch size gets through at the configured rate.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def take(self, n: int) -> float:
        """Take ``n`` tokens and return 0, or take none and return the seconds to wait."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        need = min(float(n), self.capacity)
        if self._tokens >= need:
            self._tokens -= n
            return 0.0
        return (need - self._tokens) / self.rate


def retry_after(wait_s: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
