"""The sandboxed Jinja2 environment and the checks a template passes before it is stored.

Templates are data, not code: only variables, a short list of filters and
tests, ``if`` and ``for``. Anything that could reach Python internals
(underscore attributes, ``attr``, calls, ``format`` strings…) is refused at
``PUT`` and never executed; at render time the immutable sandbox and
``StrictUndefined`` stand behind that check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.environment import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

ALLOWED_FILTERS = frozenset(
    {
        "default",
        "d",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "truncate",
        "replace",
        "round",
        "int",
        "float",
        "abs",
        "length",
        "join",
        "first",
        "last",
        "string",
        "e",
        "escape",
    }
)
ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "number", "string", "eq", "ne"})


class TemplateError(ValueError):
    """A template field that is not acceptable; ``msg`` says why."""


@dataclass(frozen=True, slots=True)
class Checked:
    source: str
    names: frozenset[str]


def make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, cache_size=0
    )
    env.filters = {k: v for k, v in env.filters.items() if k in ALLOWED_FILTERS}
    env.tests = {k: v for k, v in env.tests.items() if k in ALLOWED_TESTS}
    env.globals = {}
    return env


ENV = make_environment()


def _walk_forbidden(tree: nodes.Template) -> Iterable[str]:
    for node in tree.find_all(
        (
            nodes.Getattr,
            nodes.Getitem,
            nodes.Call,
            nodes.Filter,
            nodes.Test,
            nodes.Name,
            nodes.Macro,
            nodes.CallBlock,
            nodes.Import,
            nodes.FromImport,
            nodes.Include,
            nodes.Extends,
            nodes.Assign,
            nodes.AssignBlock,
            nodes.With,
            nodes.Mul,
            nodes.Pow,
            nodes.FloorDiv,
        )
    ):
        if isinstance(node, nodes.Mul | nodes.Pow | nodes.FloorDiv):
            yield "multiplication and powers are not allowed (they can build huge strings)"
        elif isinstance(node, nodes.Getattr):
            if node.attr.startswith("_"):
                yield f"attribute {node.attr!r} is not allowed"
        elif isinstance(node, nodes.Getitem):
            arg = node.arg
            if not (isinstance(arg, nodes.Const) and isinstance(arg.value, int | str)):
                yield "only constant subscripts are allowed"
            elif isinstance(arg.value, str) and arg.value.startswith("_"):
                yield f"key {arg.value!r} is not allowed"
        elif isinstance(node, nodes.Call):
            yield "calls are not allowed in templates"
        elif isinstance(node, nodes.Filter):
            if node.name not in ALLOWED_FILTERS:
                yield f"filter {node.name!r} is not allowed"
        elif isinstance(node, nodes.Test):
            if node.name not in ALLOWED_TESTS:
                yield f"test {node.name!r} is not allowed"
        elif isinstance(node, nodes.Name):
            if node.name.startswith("_"):
                yield f"name {node.name!r} is not allowed"
        else:
            yield f"{type(node).__name__.lower()} is not allowed in templates"


def check(source: str) -> Checked:
    """Parses one field; answers the variable names it uses, or raises ``TemplateError``."""
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    problems = list(dict.fromkeys(_walk_forbidden(tree)))
    if problems:
        raise TemplateError("; ".join(problems))
    return Checked(source, frozenset(meta.find_undeclared_variables(tree)))


@lru_cache(maxsize=8192)
def compile_field(source: str) -> Template:
    """Compiles a checked field once; templates are immutable per version, so this caches well."""
    check(source)
    return ENV.from_string(source)
