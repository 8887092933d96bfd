"""Structured logs: JSON lines, a request id per request, phone numbers masked everywhere."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from gateway.domain.phones import mask_in_text

_DIGITS = re.compile(r"\d{11}")
# a number written with spaces, dashes or brackets ("+86 138 1234 5678", "(138)1234-5678"),
# as a path or a message may carry it; not digits inside an id or a time
_WRITTEN = re.compile(r"(?<![A-Za-z0-9])\+?\(?\d[\d \-()]{9,}\d(?![A-Za-z0-9])")


def _mask_written(m: re.Match[str]) -> str:
    """Only what reads as a phone number: ``+`` and 8 to 15 digits, or a Chinese mobile's
    11 digits from a 1 (not a date range, an id like 20261123-001, or a list of numbers)."""
    text = m.group(0)
    plain = "".join(c for c in text if c.isdigit())
    digits = len(plain)
    if not (
        (text.startswith("+") and 8 <= digits <= 15) or (digits == 11 and plain[0] == "1")
    ):
        return text
    seen = 0
    out = []
    for c in text:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


def mask_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if not isinstance(value, str):
            continue
        if _DIGITS.search(value):
            value = event[key] = mask_in_text(value)
        if _WRITTEN.search(value):
            event[key] = _WRITTEN.sub(_mask_written, value)
    return event


# The request being served, for every line logged while serving it. Set with one
# ``ContextVar.set`` per request (structlog's ``bind_contextvars`` costs several times that).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


INFO_ENABLED = True  # the per-request line is built only when it will be written


def configure_logging(
    level: str = "info", json: bool = True, stream: TextIO | None = None, *, cache: bool = True
) -> None:
    """JSON lines to stdout; ``cache=False`` lets tests configure again after loggers were used."""
    global INFO_ENABLED
    INFO_ENABLED = logging.getLevelNamesMapping()[level.upper()] <= logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # the traceback as one string, masked too
            mask_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=cache,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
