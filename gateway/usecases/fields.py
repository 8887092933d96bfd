"""Field types shared by request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StrictInt

from gateway.domain.windows import parse_hhmm
from gateway.errors import InvalidInput

# How far ahead a send or a campaign may be scheduled: a year, with a day to spare.
MAX_SCHEDULE_S = 366 * 86400


def _text_only(value: Any) -> Any:
    """Times come as RFC 3339 text; a bare number (pydantic would read epoch seconds) is
    refused rather than guessed at."""
    if isinstance(value, str | datetime):
        return value
    raise ValueError("must be an RFC 3339 time with an offset, as a string")


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_text_only)]


def _whole(value: Any) -> Any:
    """JSON may write a whole number as 2 or as 2.0: both are 2; a string, a boolean or a
    fraction is then refused by ``StrictInt`` (lax, pydantic would take ``"2"`` and true)."""
    return int(value) if type(value) is float and value.is_integer() else value


WholeNumber = Annotated[StrictInt, BeforeValidator(_whole)]


def _hhmm(value: str) -> str:
    parse_hhmm(value)
    return value


Hhmm = Annotated[str, AfterValidator(_hhmm)]  # a time of day, "09:30" (see parse_hhmm)


def check_schedule(at: datetime | None, now: float, field: str) -> None:
    """A scheduled time further ahead than ``MAX_SCHEDULE_S`` is refused, naming ``field``."""
    if at is not None and at.timestamp() > now + MAX_SCHEDULE_S:
        raise InvalidInput.field([field], "must be at most 366 days from now")
