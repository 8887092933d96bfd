"""Templates are data: the sandbox refuses code, and variables are checked by type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cards.compiled import CompiledTemplate, RenderError, TemplateCheckFailed
from cards.models import TemplateSpec, VariableSpec
from cards.variables import check_variables

SSTI_SOURCES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ name.__class__ }}",
    "{{ name|attr('__class__') }}",
    "{{ request.application.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__ }}",
    "{{ config.items() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self }}",
    "{{ self['x'] }}",
    "{{ caller }}",
    "{{ varargs }}{{ kwargs }}",
    "{% for x in name %}{{ loop }}{% endfor %}",
    "{% for x in name %}{{ loop|string }}{% endfor %}",
    "{% set x = 1 %}",
    "{% import 'os' as os %}",
    "{% include '/etc/passwd' %}",
    "{{ name['__class__'] }}",
    "{{ 'a' * 100000000 }}",
    "{{ 9 ** 999999 }}",
    "{{ name|format(1) }}",
    "{% for x in name %}{{ x.__class__ }}{% endfor %}",
    "{{ name.format_map }}",
    "{{ name.upper }}",
    "{% for a in name %}{% for b in name %}{{ '' }}{% endfor %}{% endfor %}",
    "{% for a in name %}{% endfor %}" * 4,
    "{% for a in name %}{{ loop.__class__ }}{% endfor %}",
    "{{ name",
    # ways to build a huge string, or to spend the event loop, from one short template
    "{{ name|join(name) }}",
    "{{ name|join(' ' ~ name) }}",
    "{{ name|join(', ', attribute='format') }}",
    "{{ name|join(attribute='format') }}",
    "{{ name|join('-----------') }}",
]


def _spec(title: str) -> TemplateSpec:
    return TemplateSpec.model_validate(
        {
            "brand_id": "b",
            "category": "transactional",
            "variables": {"name": {"type": "string"}},
            "card": {"title": title},
            "fallback_text": "hi {{ name }}",
        }
    )


@pytest.mark.parametrize("source", SSTI_SOURCES)
def test_template_injection_is_refused_at_put(source: str) -> None:
    """Templates that reach for Python internals, or cannot parse, never compile."""
    with pytest.raises(TemplateCheckFailed) as err:
        CompiledTemplate.build(_spec(source))
    assert err.value.problems[0][0] == ("card", "title")


@pytest.mark.parametrize(
    "value", ["{{7*7}}", "{{ ''.__class__ }}", "{% for x in y %}", "${7*7}", "<script>"]
)
def test_injection_in_variables_renders_literally(value: str) -> None:
    """A variable's value is data: it is never evaluated as a template."""
    compiled = CompiledTemplate.build(_spec("{{ name }}"))
    card = compiled.render_card({"name": value})
    assert card is not None and card["title"] == value.strip()


def test_a_loop_may_read_its_counters() -> None:
    """One loop, side by side with others, may number its items with ``loop.index``."""
    compiled = CompiledTemplate.build(
        _spec("{% for c in name %}{{ loop.index }}{{ c }}{% endfor %}")
    )
    card = compiled.render_card({"name": "ab"})
    assert card is not None and card["title"] == "1a2b"


@pytest.mark.parametrize(
    "title", ["{{ '%100000000s' % '' }}x", "{{ name % 3 }}", "{{ '%s' % name }}"]
)
def test_percent_is_never_string_formatting(title: str) -> None:
    """``%`` formats no string (a 100 MB one from a short template): refused as it renders."""
    compiled = CompiledTemplate.build(_spec(title))
    with pytest.raises(RenderError) as err:
        compiled.render_card({"name": "ab"})
    assert "remainder" in err.value.msg


def test_percent_is_a_numbers_remainder() -> None:
    compiled = CompiledTemplate.build(
        _spec("{% for c in name %}{{ c }}{% if loop.index % 2 == 0 %},{% endif %}{% endfor %}")
    )
    card = compiled.render_card({"name": "abcd"})
    assert card is not None and card["title"] == "ab,cd,"


def test_replace_refuses_before_it_builds_a_huge_field() -> None:
    compiled = CompiledTemplate.build(_spec("{{ name|replace('a', name) }}"))
    with pytest.raises(RenderError) as err:
        compiled.render_card({"name": "a" * 10_000})  # 100 million characters, never built
    assert "over 10000 characters" in err.value.msg
    card = compiled.render_card({"name": "ab"})
    assert card is not None and card["title"] == "abb"


def test_a_literal_join_separator_is_allowed() -> None:
    compiled = CompiledTemplate.build(_spec("{{ name|join(', ') }}|{{ name|join }}"))
    card = compiled.render_card({"name": "ab"})
    assert card is not None and card["title"] == "a, b|ab"


def test_a_loop_goes_over_at_most_a_hundred_items() -> None:
    """A loop over a long string (or list) is refused when it renders, naming the field."""
    compiled = CompiledTemplate.build(_spec("{% for c in name %}{{ c }}{% endfor %}"))
    card = compiled.render_card({"name": "x" * 100})
    assert card is not None and card["title"] == "x" * 100
    with pytest.raises(RenderError) as err:
        compiled.render_card({"name": "x" * 101})
    assert err.value.loc == ("card", "title") and "at most 100 items" in err.value.msg


def test_a_field_stops_rendering_once_it_is_too_long() -> None:
    """Output is counted as it is made: a loop that would build 300,000 characters stops
    at the limit and says so, instead of building them first."""
    title = "{% for c in name %}{{ name }}{{ name }}{{ name }}{% endfor %}"
    compiled = CompiledTemplate.build(_spec(title))
    with pytest.raises(RenderError) as err:
        compiled.render_card({"name": "y" * 100})  # 30,000 characters in all, 100 at a time
    assert "stopped" in err.value.msg


def test_string_variables_are_bounded() -> None:
    """No string variable may be longer than a field can ever be (a loop over it is bounded)."""
    specs = {"name": VariableSpec.model_validate({"type": "string"})}
    _, problems = check_variables(specs, {"name": "x" * 10_001})
    assert problems and problems[0][0] == "name"


def test_undeclared_variable_is_named() -> None:
    """A field using a variable the template does not declare is refused, naming both."""
    with pytest.raises(TemplateCheckFailed) as err:
        CompiledTemplate.build(_spec("{{ nmae }}"))
    loc, msg = err.value.problems[0]
    assert loc == ("card", "title") and "nmae" in msg


def test_render_error_is_a_render_error() -> None:
    """A failure while rendering is reported as RenderError with its field, not a crash."""
    compiled = CompiledTemplate.build(_spec("{{ name[5] }}"))
    with pytest.raises(RenderError) as err:
        compiled.render_card({"name": "x"})
    assert err.value.loc == ("card", "title")


@pytest.mark.parametrize(
    ("spec", "value", "ok", "coerced"),
    [
        ({"type": "string", "max_length": 3}, "abc", True, "abc"),
        ({"type": "string", "max_length": 3}, "abcd", False, None),
        ({"type": "string", "pattern": "[0-9]{6}"}, "123456", True, "123456"),
        ({"type": "string", "pattern": "[0-9]{6}"}, "12345a", False, None),
        ({"type": "integer"}, 5, True, 5),
        ({"type": "integer"}, "42", True, 42),
        ({"type": "integer"}, True, False, None),
        ({"type": "integer"}, 1.5, False, None),
        ({"type": "decimal"}, "1000.50", True, "1000.50"),
        ({"type": "decimal"}, 12, True, "12"),
        ({"type": "decimal"}, "NaN", False, None),
        ({"type": "decimal"}, "lots", False, None),
        ({"type": "date"}, "2026-11-23", True, "2026-11-23"),
        ({"type": "date"}, "23/11/2026", False, None),
        ({"type": "datetime"}, "2026-11-23T09:30:00+08:00", True, "2026-11-23T09:30:00+08:00"),
        ({"type": "datetime"}, "2026-11-23T09:30:00", False, None),
        ({"type": "enum", "choices": ["a", "b"]}, "a", True, "a"),
        ({"type": "enum", "choices": ["a", "b"]}, "c", False, None),
        ({"type": "string"}, {"x": 1}, False, None),
    ],
)
def test_variable_types(spec: dict[str, Any], value: Any, ok: bool, coerced: Any) -> None:
    """Each type accepts what it should, coerces it, and names what is wrong otherwise."""
    context, errors = check_variables({"v": VariableSpec.model_validate(spec)}, {"v": value})
    assert (not errors) is ok
    if ok:
        assert context["v"] == coerced
    else:
        assert errors[0][0] == "v"


def test_required_and_optional_variables() -> None:
    """A missing required variable is an error; a missing optional one renders empty."""
    specs = {
        "a": VariableSpec(type="string", required=True),
        "b": VariableSpec(type="string", required=False),
    }
    context, errors = check_variables(specs, {})
    assert errors == [("a", "is required")] and context["b"] == ""


_SIMPLE_SOURCES = [
    "尾号{{ last4 }}信用卡",
    "{{ minutes or 5 }}分钟内有效",
    "{{ balance or '—' }}",
    "{{ a }}/{{ b or 1.5 }}/{{ a or 'x' }}",
]
_VALUES: list[Any] = ["", "0", "张三", 0, 7, 1.5, True, False, None, [], ["a"], {}, {"k": 1}]


@pytest.mark.parametrize("source", _SIMPLE_SOURCES)
def test_simple_fields_render_as_jinja_does(source: str) -> None:
    """Fields rendered without Jinja (names and `name or default`) give Jinja's output exactly."""
    from cards.sandbox import ENV, SimpleField, compile_field

    field = compile_field(source)
    assert isinstance(field, SimpleField)
    jinja = ENV.from_string(source)
    for value in _VALUES:
        context = {"last4": value, "minutes": value, "balance": value, "a": value, "b": value}
        assert field.render(context) == jinja.render(context), (source, value)


def test_simple_field_with_an_undefined_name_fails_as_jinja_does() -> None:
    """A name missing from the context is an undefined error, with or without a default."""
    from jinja2 import UndefinedError

    from cards.sandbox import compile_field

    for source in ("{{ gone }}", "{{ gone or 5 }}"):
        with pytest.raises(UndefinedError):
            compile_field(source).render({})


@pytest.mark.parametrize("source", ["{{ a or b }}", "{{ a or none }}", "{{ a | upper }}"])
def test_other_expressions_render_with_jinja(source: str) -> None:
    """Anything beyond names and constant defaults is left to the sandboxed Jinja template."""
    from cards.sandbox import SimpleField, compile_field

    assert not isinstance(compile_field(source), SimpleField)


def test_a_pattern_that_backtracks_without_end_is_stopped_and_refused() -> None:
    """``(a|aa)+`` against 40 a's and a b would hold the loop for minutes: the match stops
    at its time limit, the value is refused saying why, and so is every later one at once."""
    specs = {"code": VariableSpec.model_validate({"type": "string", "pattern": "(a|aa)+"})}
    _, problems = check_variables(specs, {"code": "a" * 40 + "b"})
    assert problems and problems[0][0] == "code" and "too long to match" in problems[0][1]
    _, again = check_variables(specs, {"code": "aa"})  # would match: the pattern is refused
    assert again and again[0][0] == "code" and "too long to match" in again[0][1]


class _HeldUp:
    """A compiled pattern whose first ``stalls`` matches run out of the process's time
    while using none of their thread's: what other busy threads do to ``regex``'s clock."""

    def __init__(self, stalls: int) -> None:
        self.stalls = stalls
        self.calls = 0

    def fullmatch(self, text: str, **_: Any) -> object | None:
        self.calls += 1
        if self.calls <= self.stalls:
            raise TimeoutError("regular expression time-out")
        return object() if text == "F001" else None


@pytest.fixture
def held_up(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], _HeldUp]:
    from cards import patterns

    def install(stalls: int) -> _HeldUp:
        fake = _HeldUp(stalls)
        monkeypatch.setattr(patterns, "compile_pattern", lambda pattern: fake)
        return fake

    monkeypatch.setattr(patterns, "_SLOW", set())
    return install


def test_a_match_held_up_by_other_threads_is_tried_again_and_the_pattern_kept(
    held_up: Callable[[int], _HeldUp],
) -> None:
    """``regex`` times a match on the whole process's CPU clock: a time-out in which this
    thread did no work is not the pattern's doing. The value is checked again, and the
    pattern stays usable for every later value (a campaign's batches)."""
    from cards.patterns import _SLOW

    fake = held_up(2)
    specs = {"fund_id": VariableSpec.model_validate({"type": "string", "pattern": "[A-Z0-9]+"})}
    assert check_variables(specs, {"fund_id": "F001"})[1] == []
    assert fake.calls == 3 and not _SLOW
    assert check_variables(specs, {"fund_id": "f001"})[1] == [
        ("fund_id", "must match [A-Z0-9]+")
    ]


def test_a_match_held_up_every_time_fails_the_value_not_the_pattern(
    held_up: Callable[[int], _HeldUp],
) -> None:
    from cards.patterns import _SLOW, RETRIES

    fake = held_up(1 + RETRIES)
    specs = {"fund_id": VariableSpec.model_validate({"type": "string", "pattern": "[A-Z0-9]+"})}
    _, problems = check_variables(specs, {"fund_id": "F001"})
    assert problems == [
        ("fund_id", "its pattern could not be checked in time (the gateway was too busy)")
    ]
    assert fake.calls == 1 + RETRIES and not _SLOW
    assert check_variables(specs, {"fund_id": "F001"})[1] == []  # the next value is checked


def test_patterns_read_as_python_reads_them() -> None:
    """Unicode classes and escapes: Chinese names and full-width digits match as before."""
    for pattern, value in [(r"\w{2,4}", "张三"), (r"[\u4e00-\u9fa5]+", "李四"), (r"\d{6}", "１２３４５６")]:
        specs = {"v": VariableSpec.model_validate({"type": "string", "pattern": pattern})}
        assert check_variables(specs, {"v": value})[1] == [], pattern


@pytest.mark.parametrize("pattern", [r"([0-9]", "x" * 201])
def test_a_pattern_that_cannot_be_read_is_refused_when_stored(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        VariableSpec.model_validate({"type": "string", "pattern": pattern})
