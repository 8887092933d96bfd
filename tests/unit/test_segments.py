"""Audience rules: validation, every op, and Python and SQL agreeing on random rules."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.segments import RuleError, dump_rule, matches, parse_rule, to_sql

PERSON = {
    "tags": ["fund_interest", "vip"],
    "attrs": {
        "age": 41,
        "city": "太原",
        "score": 7.5,
        "active": True,
        "products": ["fund", "card"],
        "note": None,
    },
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"tag": "vip"}, True),
        ({"tag": "churned"}, False),
        ({"attr": "age", "op": "eq", "value": 41}, True),
        ({"attr": "age", "op": "eq", "value": "41"}, False),  # kinds never mix
        ({"attr": "age", "op": "ne", "value": 40}, True),
        ({"attr": "missing", "op": "ne", "value": 1}, True),
        ({"attr": "age", "op": "gt", "value": 41}, False),
        ({"attr": "age", "op": "gte", "value": 41}, True),
        ({"attr": "score", "op": "lt", "value": 8}, True),
        ({"attr": "score", "op": "lte", "value": 7.5}, True),
        ({"attr": "city", "op": "gt", "value": "大同"}, True),  # code-point order
        ({"attr": "city", "op": "in", "value": ["太原", "大同"]}, True),
        ({"attr": "age", "op": "in", "value": [30, 40]}, False),
        ({"attr": "city", "op": "contains", "value": "原"}, True),
        ({"attr": "products", "op": "contains", "value": "card"}, True),
        ({"attr": "products", "op": "contains", "value": "loan"}, False),
        ({"attr": "active", "op": "eq", "value": True}, True),
        ({"attr": "active", "op": "eq", "value": 1}, False),
        ({"attr": "age", "op": "exists"}, True),
        ({"attr": "note", "op": "exists"}, False),  # null is not there
        ({"attr": "nothing", "op": "exists"}, False),
        ({"attr": "age", "op": "exists", "value": True}, True),
        ({"attr": "nothing", "op": "exists", "value": False}, True),
        ({"attr": "age", "op": "exists", "value": False}, False),
        (
            {
                "all": [
                    {"tag": "vip"},
                    {"attr": "age", "op": "gte", "value": 30},
                    {"any": [{"attr": "city", "op": "in", "value": ["太原", "大同"]}]},
                    {"not": {"tag": "churned"}},
                ]
            },
            True,
        ),
        ({"any": []}, False),
        ({"all": []}, True),
    ],
)
def test_every_op_in_python_and_sql(rule: Any, expected: bool) -> None:
    """Each op means the same in Python and in SQLite."""
    parsed = parse_rule(rule)
    assert matches(parsed, PERSON["tags"], PERSON["attrs"]) is expected
    assert _sql_match(parsed, PERSON["tags"], PERSON["attrs"]) is expected


@pytest.mark.parametrize(
    ("rule", "loc"),
    [
        ({"attr": "age", "op": "between", "value": 1}, ("rule", "op")),
        ({"attr": "age", "op": "gt", "value": [1]}, ("rule", "value")),
        ({"attr": "age", "op": "gt", "value": True}, ("rule", "value")),
        ({"attr": "age", "op": "in", "value": []}, ("rule", "value")),
        ({"attr": "age", "op": "in", "value": 3}, ("rule", "value")),
        ({"attr": "age", "op": "exists", "value": 1}, ("rule", "value")),
        ({"attr": "age", "op": "eq"}, ("rule", "value")),
        ({"attr": 'a"b', "op": "eq", "value": 1}, ("rule", "attr")),
        ({"all": [{"tag": ""}]}, ("rule", "all", 0, "tag")),
        ({"all": {"tag": "x"}}, ("rule", "all")),
        ({"nope": 1}, ("rule",)),
        ([1], ("rule",)),
        (
            {"not": {"any": [{"attr": "x", "op": "contains", "value": {"a": 1}}]}},
            ("rule", "not", "any", 0, "value"),
        ),
    ],
)
def test_invalid_rules_name_the_place(rule: Any, loc: tuple[Any, ...]) -> None:
    """Unknown ops and ill-typed values are refused, naming where."""
    with pytest.raises(RuleError) as err:
        parse_rule(rule)
    assert err.value.loc == loc


def _sql_match(rule: Any, tags: list[str], attrs: dict[str, Any]) -> bool:
    conn = sqlite3.connect(":memory:")
    sql, params = to_sql(rule)
    row = conn.execute(
        f"SELECT {sql} FROM (SELECT ? AS tags, ? AS attrs)",
        (*params, json.dumps(tags), json.dumps(attrs)),
    ).fetchone()
    conn.close()
    return bool(row[0])


# property: the two evaluations agree ---------------------------------------------------

NAMES = st.sampled_from(["age", "city", "score", "flag", "list", "gone"])
SCALARS = st.one_of(
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False, width=32),
    st.booleans(),
    st.sampled_from(["", "a", "ab", "b", "太原", "大同", "原"]),
)
VALUES = st.one_of(SCALARS, st.none(), st.lists(SCALARS, max_size=3))
TAGS = st.sampled_from(["vip", "fund", "churned", "新客"])
LEAVES = st.one_of(
    TAGS.map(lambda t: {"tag": t}),
    st.tuples(NAMES, st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]), SCALARS).map(
        lambda t: {"attr": t[0], "op": t[1], "value": t[2]}
    ),
    st.tuples(NAMES, st.lists(SCALARS, min_size=1, max_size=3)).map(
        lambda t: {"attr": t[0], "op": "in", "value": t[1]}
    ),
    st.tuples(NAMES, st.one_of(st.integers(-5, 5), st.sampled_from(["a", "原", ""]))).map(
        lambda t: {"attr": t[0], "op": "contains", "value": t[1]}
    ),
    NAMES.map(lambda n: {"attr": n, "op": "exists"}),
    st.tuples(NAMES, st.booleans()).map(lambda t: {"attr": t[0], "op": "exists", "value": t[1]}),
)
RULES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda rs: {"all": rs}),
        st.lists(children, max_size=3).map(lambda rs: {"any": rs}),
        children.map(lambda r: {"not": r}),
    ),
    max_leaves=8,
)
RECIPIENTS = st.tuples(st.lists(TAGS, max_size=3), st.dictionaries(NAMES, VALUES, max_size=5))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=RULES, recipient=RECIPIENTS)
def test_python_and_sql_agree(rule: Any, recipient: tuple[list[str], dict[str, Any]]) -> None:
    """For random rules and recipients, the SQL a segment compiles to selects exactly the
    recipients the Python evaluation says are in it."""
    tags, attrs = recipient
    try:
        parsed = parse_rule(rule)
    except RuleError:
        return  # e.g. a bool given to gt: refused at PUT, never evaluated
    assert parse_rule(dump_rule(parsed)) == parsed
    assert matches(parsed, tags, attrs) == _sql_match(parsed, tags, attrs)


def test_rules_stay_within_what_sql_can_run() -> None:
    """Huge ``in`` lists and trees are refused at PUT, before SQLite could choke on them."""
    with pytest.raises(RuleError):
        parse_rule({"attr": "x", "op": "in", "value": list(range(101))})
    with pytest.raises(RuleError):
        parse_rule({"any": [{"tag": f"t{i}"} for i in range(250)]})
