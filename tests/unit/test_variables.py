"""A campaign's shared variables checked once: the same answer as checking every value."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cards.models import VariableSpec
from cards.variables import SharedVariables, check_variables

NAMES = ["name", "amount", "date", "fund_id", "tier", "count"]

specs_st = st.dictionaries(
    st.sampled_from(NAMES),
    st.one_of(
        st.builds(
            VariableSpec,
            type=st.just("string"),
            required=st.booleans(),
            max_length=st.none() | st.integers(1, 6),
            pattern=st.none() | st.sampled_from(["[A-Z0-9]{1,12}", r"\d+"]),
        ),
        st.builds(
            VariableSpec,
            type=st.sampled_from(["integer", "decimal", "date", "datetime"]),
            required=st.booleans(),
        ),
        st.builds(
            VariableSpec,
            type=st.just("enum"),
            required=st.booleans(),
            choices=st.just(["gold", "silver"]),
        ),
    ),
)
values_st = st.dictionaries(
    st.sampled_from([*NAMES, "city", "extra"]),
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["F001", "gold", "2026-12-01", "2026-12-01T09:00:00+08:00", "12.50", "x" * 9])
    | st.text(max_size=8)
    | st.lists(st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(specs=specs_st, owns=st.lists(values_st, min_size=1, max_size=4), shared=values_st)
def test_shared_variables_answer_as_checking_them_all(
    specs: dict[str, VariableSpec], owns: list[dict[str, Any]], shared: dict[str, Any]
) -> None:
    checker = SharedVariables(specs, shared)  # one checker for a batch of recipients
    for own in owns:
        expected = check_variables(specs, {**own, **shared})
        context, errors = checker.check(own)
        assert (context, errors) == expected
        context["name"] = "changed by a render"  # a recipient's context is their own
        errors.append(("x", "y"))
    assert checker.check(owns[0]) == check_variables(specs, {**owns[0], **shared})


def test_a_bad_shared_value_is_reported_for_every_recipient_in_its_place() -> None:
    specs = {
        "name": VariableSpec(type="string", max_length=3),
        "date": VariableSpec(type="date"),
        "amount": VariableSpec(type="decimal"),
    }
    checker = SharedVariables(specs, {"date": "12/01/2026"})
    context, errors = checker.check({"name": "张三丰老师", "amount": "x"})
    assert [n for n, _ in errors] == ["name", "date", "amount"]
    context, errors = checker.check({"name": "张三", "amount": 12})
    assert errors == [("date", "must be a date (YYYY-MM-DD)")]
    assert context["name"] == "张三" and context["amount"] == "12"


def test_the_campaigns_value_wins_over_the_recipients_own() -> None:
    specs = {"fund_id": VariableSpec(pattern="[A-Z0-9]{1,12}")}
    context, errors = SharedVariables(specs, {"fund_id": "F001"}).check({"fund_id": "bad id"})
    assert errors == [] and context["fund_id"] == "F001"
