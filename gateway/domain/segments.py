"""Audience rules: a JSON rule tree, validated, evaluated in Python and compiled to SQL.

``{"all": [...]}``, ``{"any": [...]}``, ``{"not": rule}``, ``{"tag": "fund_interest"}`` and
``{"attr": "age", "op": "gte", "value": 30}`` with ops eq, ne, gt, gte, lt, lte, in,
contains, exists. Both evaluations share one meaning (a property test holds them to it):

- values compare only with values of their own kind: numbers with numbers, strings with
  strings (code-point order, which is UTF-8 byte order, as SQLite compares), booleans
  with booleans; any other comparison is false;
- ``ne`` is ``not eq``, so a missing attribute is "not equal";
- ``contains`` is a substring of a string attribute, or an element of an array one;
- ``exists`` is present and not null (``"value": false``: absent or null).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union

OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists")
MAX_DEPTH = 12
MAX_NODES = 200
MAX_IN_VALUES = 100  # SQLite's expression depth and parameter limits stay far away

Scalar = Union[str, int, float, bool]  # noqa: UP007


class RuleError(ValueError):
    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc = loc
        self.msg = msg


@dataclass(frozen=True, slots=True)
class All:
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    rule: Rule


@dataclass(frozen=True, slots=True)
class Tag:
    name: str


@dataclass(frozen=True, slots=True)
class Attr:
    name: str
    op: str
    value: Any = None


Rule = All | AnyOf | Not | Tag | Attr


_BAD_NAME_CHARS = frozenset("\"'\\$[].") | frozenset(chr(c) for c in range(32))


@lru_cache(maxsize=4096)
def valid_attr_name(name: str) -> bool:
    """Attribute names usable in rules (and so in JSON paths): no quoting characters."""
    return 0 < len(name) <= 64 and not any(c in _BAD_NAME_CHARS for c in name)


# parsing -------------------------------------------------------------------------------


def parse_rule(data: Any, loc: tuple[str | int, ...] = ("rule",)) -> Rule:
    """A validated rule tree; ``RuleError`` names the place of the first problem."""
    count = [0]
    return _parse(data, loc, 0, count)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, str | bool | int | float) and not (isinstance(v, float) and v != v)


# SQLite's integers are 64-bit: a larger one cannot be compared in SQL.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def lossy(v: Any) -> bool:
    """A float that stands for a whole number JSON wrote beyond -2^63..2^64-1 (orjson reads
    those as floats, their digits lost), or a float as large."""
    return type(v) is float and (v >= 2.0**64 or v <= -(2.0**63))


def out_of_range(v: Any) -> bool:
    """A number a rule cannot compare in SQL: a whole number beyond SQLite's 64 bits, or a
    ``lossy`` one."""
    return (type(v) is int and not INT64_MIN <= v <= INT64_MAX) or lossy(v)


def _parse(data: Any, loc: tuple[str | int, ...], depth: int, count: list[int]) -> Rule:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise RuleError(loc, f"a rule has at most {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise RuleError(loc, f"a rule nests at most {MAX_DEPTH} deep")
    if not isinstance(data, dict):
        raise RuleError(loc, "a rule is a JSON object")
    keys = set(data)
    if keys in ({"all"}, {"any"}):
        key = next(iter(keys))
        items = data[key]
        if not isinstance(items, list):
            raise RuleError((*loc, key), "must be a list of rules")
        rules = tuple(_parse(r, (*loc, key, i), depth + 1, count) for i, r in enumerate(items))
        return All(rules) if key == "all" else AnyOf(rules)
    if keys == {"not"}:
        return Not(_parse(data["not"], (*loc, "not"), depth + 1, count))
    if keys == {"tag"}:
        if not isinstance(data["tag"], str) or not data["tag"]:
            raise RuleError((*loc, "tag"), "must be a non-empty string")
        return Tag(data["tag"])
    if "attr" in keys and keys <= {"attr", "op", "value"}:
        return _parse_attr(data, loc)
    raise RuleError(loc, "expected one of all, any, not, tag, or attr with op (and value)")


def _parse_attr(data: dict[str, Any], loc: tuple[str | int, ...]) -> Attr | Not:
    name, op = data["attr"], data.get("op")
    if not isinstance(name, str) or not valid_attr_name(name):
        raise RuleError(
            (*loc, "attr"), "1 to 64 characters, none of them quotes, backslashes, $ [ ] or ."
        )
    if op not in OPS:
        raise RuleError((*loc, "op"), f"unknown op {op!r}; one of {', '.join(OPS)}")
    has_value, value = "value" in data, data.get("value")
    if op == "exists":  # a value, if given, says which: true (the default) or false
        if has_value and not isinstance(value, bool):
            raise RuleError((*loc, "value"), "exists takes true, false or no value")
        return Attr(name, op) if value is not False else Not(Attr(name, op))
    if not has_value:
        raise RuleError((*loc, "value"), f"{op} needs a value")
    if out_of_range(value) or (isinstance(value, list) and any(map(out_of_range, value))):
        raise RuleError((*loc, "value"), "whole numbers run from -2^63 to 2^63-1")
    if op == "in":
        if (
            not isinstance(value, list)
            or not value
            or not all(_is_scalar(v) for v in value)
            or (len(value) > MAX_IN_VALUES)
        ):
            raise RuleError(
                (*loc, "value"),
                f"in needs 1 to {MAX_IN_VALUES} strings, numbers or booleans",
            )
        return Attr(name, op, tuple(value))
    if op in ("gt", "gte", "lt", "lte") and (isinstance(value, bool) or not _is_scalar(value)):
        raise RuleError((*loc, "value"), f"{op} needs a number or a string")
    if op == "contains" and (isinstance(value, bool) or not _is_scalar(value)):
        raise RuleError((*loc, "value"), "contains needs a string or a number")
    if not _is_scalar(value):
        raise RuleError((*loc, "value"), f"{op} needs a string, a number or a boolean")
    return Attr(name, op, value)


def dump_rule(rule: Rule) -> Any:
    if isinstance(rule, All):
        return {"all": [dump_rule(r) for r in rule.rules]}
    if isinstance(rule, AnyOf):
        return {"any": [dump_rule(r) for r in rule.rules]}
    if isinstance(rule, Not):
        return {"not": dump_rule(rule.rule)}
    if isinstance(rule, Tag):
        return {"tag": rule.name}
    out: dict[str, Any] = {"attr": rule.name, "op": rule.op}
    if rule.op != "exists":
        out["value"] = list(rule.value) if isinstance(rule.value, tuple) else rule.value
    return out


# Python --------------------------------------------------------------------------------


def _kind(v: Any) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return None


def _eq(a: Any, b: Any) -> bool:
    ka = _kind(a)
    return ka is not None and ka == _kind(b) and a == b


def _cmp(a: Any, b: Any, op: str) -> bool:
    ka = _kind(a)
    if ka not in ("number", "string") or ka != _kind(b):
        return False
    if op == "gt":
        return bool(a > b)
    if op == "gte":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


def matches(rule: Rule, tags: Iterable[str], attrs: Mapping[str, Any]) -> bool:
    """Whether one recipient is in the audience."""
    tag_set = tags if isinstance(tags, set | frozenset) else set(tags)
    return _match(rule, tag_set, attrs)


def _match(rule: Rule, tags: Any, attrs: Mapping[str, Any]) -> bool:
    if isinstance(rule, All):
        return all(_match(r, tags, attrs) for r in rule.rules)
    if isinstance(rule, AnyOf):
        return any(_match(r, tags, attrs) for r in rule.rules)
    if isinstance(rule, Not):
        return not _match(rule.rule, tags, attrs)
    if isinstance(rule, Tag):
        return rule.name in tags
    v = attrs.get(rule.name)
    op = rule.op
    if op == "exists":
        return v is not None
    if op == "eq":
        return _eq(v, rule.value)
    if op == "ne":
        return not _eq(v, rule.value)
    if op == "in":
        return any(_eq(v, x) for x in rule.value)
    if op == "contains":
        if isinstance(v, str):
            return isinstance(rule.value, str) and rule.value in v
        if isinstance(v, list):
            return any(_eq(x, rule.value) for x in v)
        return False
    return _cmp(v, rule.value, op)


# SQL (SQLite JSON1) --------------------------------------------------------------------

_TYPES = {"number": "('integer','real')", "string": "('text')"}


def to_sql(rule: Rule, tags: str = "tags", attrs: str = "attrs") -> tuple[str, list[Any]]:
    """A boolean SQL expression over a JSON-array ``tags`` and a JSON-object ``attrs`` column.

    Never NULL: every leaf is wrapped, so ``NOT`` means what it says.
    """
    params: list[Any] = []
    sql = _sql(rule, tags, attrs, params)
    return sql, params


def _path(name: str) -> str:
    """The JSON path of an attribute, as an SQL literal (names are checked: no quotes)."""
    return "'$.\"" + name + "\"'"


def _eq_sql(attrs: str, path: str, value: Any, params: list[Any]) -> str:
    kind = _kind(value)
    if kind == "bool":
        return f"json_type({attrs}, {path}) = '{'true' if value else 'false'}'"
    params.append(value)
    return (
        f"(json_type({attrs}, {path}) IN {_TYPES[kind or 'string']}"
        f" AND json_extract({attrs}, {path}) = ?)"
    )


def _sql(rule: Rule, tags: str, attrs: str, params: list[Any]) -> str:
    if isinstance(rule, All):
        if not rule.rules:
            return "1"
        return "(" + " AND ".join(_sql(r, tags, attrs, params) for r in rule.rules) + ")"
    if isinstance(rule, AnyOf):
        if not rule.rules:
            return "0"
        return "(" + " OR ".join(_sql(r, tags, attrs, params) for r in rule.rules) + ")"
    if isinstance(rule, Not):
        return f"(NOT {_sql(rule.rule, tags, attrs, params)})"
    if isinstance(rule, Tag):
        params.append(rule.name)
        return f"EXISTS (SELECT 1 FROM json_each({tags}) WHERE type = 'text' AND value = ?)"
    path, op, value = _path(rule.name), rule.op, rule.value
    if op == "exists":
        expr = f"json_type({attrs}, {path}) <> 'null'"
    elif op in ("eq", "ne"):
        expr = _eq_sql(attrs, path, value, params)
        if op == "ne":
            return f"(NOT COALESCE({expr}, 0))"
    elif op == "in":
        expr = (
            "("
            + " OR ".join(f"COALESCE({_eq_sql(attrs, path, v, params)}, 0)" for v in value)
            + ")"
        )
    elif op == "contains":
        kind = _kind(value)
        parts = []
        if kind == "string":
            params.append(value)
            parts.append(
                f"(json_type({attrs}, {path}) = 'text'"
                f" AND instr(json_extract({attrs}, {path}), ?) > 0)"
            )
        params.append(value)
        parts.append(
            f"(json_type({attrs}, {path}) = 'array' AND EXISTS (SELECT 1 FROM json_each({attrs},"
            f" {path}) WHERE type IN {_TYPES[kind or 'string']} AND value = ?))"
        )
        expr = "(" + " OR ".join(parts) + ")"
    else:
        params.append(value)
        sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        expr = (
            f"(json_type({attrs}, {path}) IN {_TYPES[_kind(value) or 'string']}"
            f" AND json_extract({attrs}, {path}) {sym} ?)"
        )
    return f"COALESCE({expr}, 0)"
