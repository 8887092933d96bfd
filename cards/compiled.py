"""A template version compiled once: every text field checked, compiled, and ready to render.

Each text field of the card is its own small Jinja2 template; rendering walks
the card's structure and renders field by field, so user data can never break
or inject into the structure (no JSON is ever produced by Jinja).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from cards.models import TemplateSpec, kind_problems
from cards.sandbox import ENV, MAX_FIELD, Field, SimpleField, TemplateError, check, compile_field

Loc = tuple[str | int, ...]
_LITERAL_KEYS = frozenset({"type", "height"})
# Names the gateway provides to every template: ``link`` is the message's first tracked link.
BUILTINS = frozenset({"link"})


class RenderError(ValueError):
    """A field failed to render (e.g. an undefined name); ``loc`` says which."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc = loc
        self.msg = msg


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def _text_fields(value: Any, loc: Loc) -> list[tuple[Loc, str]]:
    if isinstance(value, str):
        return [(loc, value)] if _is_template(value) else []
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if key not in _LITERAL_KEYS:
                out.extend(_text_fields(item, (*loc, key)))
        return out
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in _text_fields(item, (*loc, i))]
    return []


@dataclass(frozen=True)
class CompiledTemplate:
    spec: TemplateSpec
    card: dict[str, Any] | None
    fallback: Field | str
    fields: dict[Loc, Field]
    _card_plan: Plan | None
    fallback_names: frozenset[str]

    @classmethod
    def build(cls, spec: TemplateSpec) -> CompiledTemplate:
        """Checks every field; raises ``ValueError`` listing ``(loc, msg)`` pairs on failure."""
        card = spec.card.model_dump(mode="json", exclude_none=True) if spec.card else None
        sources = _text_fields(card, ("card",)) if card else []
        if _is_template(spec.fallback_text):
            sources.append((("fallback_text",), spec.fallback_text))
        problems: list[tuple[Loc, str]] = kind_problems(spec)
        fields: dict[Loc, Field] = {}
        declared = set(spec.variables)
        for loc, source in sources:
            try:
                checked = check(source)
            except TemplateError as exc:
                problems.append((loc, str(exc)))
                continue
            undeclared = sorted(checked.names - declared - BUILTINS)
            if undeclared:
                problems.append((loc, f"uses undeclared variable(s): {', '.join(undeclared)}"))
                continue
            fields[loc] = compile_field(source)
        if problems:
            raise TemplateCheckFailed(problems)
        fallback = fields.pop(("fallback_text",), None) or spec.fallback_text
        fallback_names = (
            check(spec.fallback_text).names if _is_template(spec.fallback_text) else frozenset()
        )
        plan = _plan(card, ("card",), fields) if card is not None else None
        return cls(spec, card, fallback, fields, plan, fallback_names)

    def render_card(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        """The card with every field rendered; literal parts are shared, never copied.

        Callers treat the result as immutable (targets build their own payloads).
        """
        if self.card is None:
            return None
        if self._card_plan is None:
            return self.card
        return cast(dict[str, Any], self._card_plan(_Context(context)))

    def render_fallback(self, context: Mapping[str, Any]) -> str:
        if isinstance(self.fallback, str):
            return self.fallback
        return _render_one(self.fallback, ("fallback_text",), _Context(context))


class _Context:
    """The variables of one render, and the Jinja context built from them only if needed."""

    __slots__ = ("_jinja", "vars")

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self.vars = variables
        self._jinja: Any = None

    def jinja(self) -> Any:
        # One shared context for every field of the render: our templates cannot assign,
        # define blocks or macros, so rendering never writes to it.
        if self._jinja is None:
            self._jinja = ENV.context_class(ENV, dict(self.vars), None, {})
        return self._jinja


Plan = Callable[[_Context], Any]


def _plan(value: Any, loc: Loc, fields: Mapping[Loc, Field]) -> Plan | None:
    """A renderer for ``value``, or None when it has nothing to render (a constant)."""
    if isinstance(value, str):
        field = fields.get(loc)
        if field is None:
            return None
        return lambda ctx: _render_one(field, loc, ctx)
    if isinstance(value, dict):
        parts = [
            (k, None if k in _LITERAL_KEYS else _plan(v, (*loc, k), fields), v)
            for k, v in value.items()
        ]
        if all(p is None for _, p, _ in parts):
            return None
        return lambda ctx: {k: v if p is None else p(ctx) for k, p, v in parts}
    if isinstance(value, list):
        items = [(_plan(v, (*loc, i), fields), v) for i, v in enumerate(value)]
        if all(p is None for p, _ in items):
            return None
        return lambda ctx: [v if p is None else p(ctx) for p, v in items]
    return None


def _render_one(field: Field, loc: Loc, ctx: _Context) -> str:
    try:
        if isinstance(field, SimpleField):
            out = field.render(ctx.vars).strip()
        else:
            out = _bounded_concat(field.root_render_func(ctx.jinja())).strip()  # type: ignore[attr-defined]
    except _TooLong:
        raise RenderError(loc, f"rendered to over {MAX_FIELD} characters (stopped)") from None
    except Exception as exc:  # a sandbox refusal or an undefined name: never a crash
        raise RenderError(loc, f"{type(exc).__name__}: {exc}") from None
    if len(out) > MAX_FIELD:
        raise RenderError(loc, f"rendered to over {MAX_FIELD} characters")
    return str(out)


class _TooLong(Exception):
    pass


def _bounded_concat(chunks: Iterable[str]) -> str:
    """The rendered chunks joined, stopped as soon as they pass what a field may hold (with
    room for surrounding whitespace), not built whole first."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > 2 * MAX_FIELD:
            raise _TooLong
        out.append(chunk)
    return "".join(out)


class TemplateCheckFailed(ValueError):
    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = problems
