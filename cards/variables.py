"""Checking a send's variables against the template's declared types, before rendering."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cards.models import VariableSpec
from cards.patterns import matches
from cards.sandbox import MAX_FIELD

VariableErrors = list[tuple[str, str]]

_INTEGER = re.compile(r"-?\d{1,18}")
# A decimal already in the form ``format(Decimal(text), "f")`` gives back, within the bounds
# below (at most 30 digits, a scale of at most 12): answered as it is, without Decimal.
_PLAIN_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,12})?")


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def coerce(name: str, spec: VariableSpec, value: Any) -> Any:
    """The value as the template sees it; ``ValueError`` says what is wrong with it."""
    if spec.type == "integer":
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value)
        raise ValueError("must be an integer")
    if spec.type == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("must be a decimal number")
        literal = str(value).strip()
        if _PLAIN_DECIMAL.fullmatch(literal):
            return literal
        try:
            number = Decimal(literal)
        except InvalidOperation:
            raise ValueError("must be a decimal number") from None
        if not number.is_finite():
            raise ValueError("must be a finite decimal number")
        digits, exponent = len(number.as_tuple().digits), number.as_tuple().exponent
        if digits > 30 or not isinstance(exponent, int) or not -12 <= exponent <= 30:
            raise ValueError("must have at most 30 digits and a sensible scale")
        return format(number, "f")
    if spec.type == "date":
        if not isinstance(value, str):
            raise ValueError("must be a date (YYYY-MM-DD)")
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("must be a date (YYYY-MM-DD)") from None
    if spec.type == "datetime":
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise ValueError("must be an RFC 3339 time with an offset")
        return value
    text = _as_text(value)
    if text is None:
        raise ValueError("must be a string")
    if len(text) > MAX_FIELD:  # it could never be shown; and a loop over it is bounded
        raise ValueError(f"must be at most {MAX_FIELD} characters")
    if spec.type == "enum":
        assert spec.choices is not None
        if text not in spec.choices:
            raise ValueError(f"must be one of {', '.join(spec.choices)}")
        return text
    if spec.max_length is not None and len(text) > spec.max_length:
        raise ValueError(f"must be at most {spec.max_length} characters")
    if spec.pattern is not None and not matches(spec.pattern, text):
        raise ValueError(f"must match {spec.pattern}")
    return text


def check_variables(
    specs: Mapping[str, VariableSpec], values: Mapping[str, Any], *, only_declared: bool = False
) -> tuple[dict[str, Any], VariableErrors]:
    """Coerces every declared variable; answers the context and one error per bad variable.

    Values for undeclared names pass through untouched (campaign variables and
    recipient attributes may carry more than a template uses), unless ``only_declared``:
    a single send names exactly its template's variables, so a typo cannot go unseen.
    """
    context: dict[str, Any] = dict(values)
    errors: VariableErrors = []
    if only_declared:
        errors = [(n, "is not a variable of this template") for n in values if n not in specs]
    for name, spec in specs.items():
        value = values.get(name)
        if value is None:
            if spec.required:
                errors.append((name, "is required"))
            else:
                context[name] = ""
            continue
        try:
            context[name] = coerce(name, spec, value)
        except ValueError as exc:
            errors.append((name, str(exc)))
    return context, errors


class SharedVariables:
    """A template's variables for many recipients who share some values (a campaign's
    variables, which win over a recipient's attribute of the same name).

    The shared values are checked once, here; ``check(own)`` checks only a recipient's
    own and answers what ``check_variables(specs, {**own, **shared})`` would: a context
    with the same names and values (not in the same order: a renderer looks names up),
    the same errors in the same order. A campaign's date or pattern checked once a batch
    instead of once a recipient.
    """

    def __init__(self, specs: Mapping[str, VariableSpec], shared: Mapping[str, Any]) -> None:
        self._own = {n: s for n, s in specs.items() if n not in shared}
        self._shared, self._shared_errors = check_variables(
            {n: s for n, s in specs.items() if n in shared}, shared
        )
        self._order = {n: i for i, n in enumerate(specs)}

    def check(self, own: Mapping[str, Any]) -> tuple[dict[str, Any], VariableErrors]:
        context, errors = check_variables(self._own, own)
        context.update(self._shared)
        if self._shared_errors:
            errors = sorted(errors + self._shared_errors, key=lambda e: self._order[e[0]])
        return context, errors
