"""A template version compiled once: every text field checked, compiled, and ready to render.

Each text field of the card is its own small Jinja2 template; rendering walks
the card's structure and renders field by field, so user data can never break
or inject into the structure (no JSON is ever produced by Jinja).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cards.models import TemplateSpec
from cards.sandbox import Field, TemplateError, check, compile_field

Loc = tuple[str | int, ...]
_LITERAL_KEYS = frozenset({"type", "height"})


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

    @classmethod
    def build(cls, spec: TemplateSpec) -> CompiledTemplate:
        """Checks every field; raises ``ValueError`` listing ``(loc, msg)`` pairs on failure."""
        card = spec.card.model_dump(mode="json", exclude_none=True) if spec.card else None
        sources = _text_fields(card, ("card",)) if card else []
        if _is_template(spec.fallback_text):
            sources.append((("fallback_text",), spec.fallback_text))
        problems: list[tuple[Loc, str]] = []
        fields: dict[Loc, Field] = {}
        declared = set(spec.variables)
        for loc, source in sources:
            try:
                checked = check(source)
            except TemplateError as exc:
                problems.append((loc, str(exc)))
                continue
            undeclared = sorted(checked.names - declared)
            if undeclared:
                problems.append((loc, f"uses undeclared variable(s): {', '.join(undeclared)}"))
                continue
            fields[loc] = compile_field(source)
        if problems:
            raise TemplateCheckFailed(problems)
        fallback = fields.pop(("fallback_text",), None) or spec.fallback_text
        return cls(spec, card, fallback, fields)

    def render_card(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.card is None:
            return None
        return self._render(self.card, ("card",), context)

    def render_fallback(self, context: Mapping[str, Any]) -> str:
        if isinstance(self.fallback, str):
            return self.fallback
        return _render_one(self.fallback, ("fallback_text",), context)

    def _render(self, value: Any, loc: Loc, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            template = self.fields.get(loc)
            return value if template is None else _render_one(template, loc, context)
        if isinstance(value, dict):
            return {
                k: v if k in _LITERAL_KEYS else self._render(v, (*loc, k), context)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._render(item, (*loc, i), context) for i, item in enumerate(value)]
        return value


def _render_one(template: Field, loc: Loc, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context).strip()
    except Exception as exc:  # a sandbox refusal or an undefined name: never a crash
        raise RenderError(loc, f"{type(exc).__name__}: {exc}") from None


class TemplateCheckFailed(ValueError):
    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = problems
