"""The sandboxed Jinja2 environment and the checks a template passes before it is stored.

Templates are data, not code: only variables, a short list of filters and
tests, ``if`` and ``for``. Anything that could reach Python internals
(underscore attributes, ``attr``, calls, ``format`` strings…) is refused at
``PUT`` and never executed; at render time the immutable sandbox and
``StrictUndefined`` stand behind that check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
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


MAX_FIELD = 10_000  # characters a rendered field may have
MAX_LOOP_ITEMS = 100  # items a ``for`` loop may go over (a string's characters count)
MAX_SEPARATOR = 10  # characters of a ``join`` separator, which must be written literally


def _safe_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    """``replace`` that cannot blow a field up: no empty ``old``, a bounded result."""
    text, old, new = str(value), str(old), str(new)
    if not old:
        raise ValueError("replace needs a non-empty string to replace")
    limit = -1 if count is None or count < 0 else count
    times = text.count(old) if limit < 0 else min(text.count(old), limit)
    if len(text) + times * (len(new) - len(old)) > MAX_FIELD:  # known before it is built
        raise ValueError(f"replace would make a field over {MAX_FIELD} characters")
    return text.replace(old, new, limit)


def _loop_items(value: Any) -> list[Any]:
    """What a ``for`` loop goes over, bounded: every loop's iterable passes through here."""
    items = list(islice(iter(value), MAX_LOOP_ITEMS + 1))
    if len(items) > MAX_LOOP_ITEMS:
        raise ValueError(f"a loop may go over at most {MAX_LOOP_ITEMS} items")
    return items


LOOP_FILTER = "gateway_loop_items"  # not a name a template may write (see ALLOWED_FILTERS)


class _Sandbox(ImmutableSandboxedEnvironment):
    """``%`` is a number's remainder (``loop.index % 4``), never a format string: a
    ``"%100000000s" % ""`` would allocate 100 MB."""

    intercepted_binops = frozenset({"%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and not (_is_number(left) and _is_number(right)):
            raise ValueError("% is only a number's remainder here, not string formatting")
        return super().call_binop(context, operator, left, right)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def make_environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, cache_size=0
    )
    env.filters = {k: v for k, v in env.filters.items() if k in ALLOWED_FILTERS}
    env.filters["replace"] = _safe_replace
    env.filters[LOOP_FILTER] = _loop_items
    env.tests = {k: v for k, v in env.tests.items() if k in ALLOWED_TESTS}
    env.globals = {}
    return env


ENV = make_environment()


def _walk_forbidden(tree: nodes.Template) -> Iterable[str]:
    counters: set[int] = set()  # the ``loop`` names read as ``loop.index`` and the like
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
            # Variables are plain values: an attribute could only be a method of str or int
            # (whose repr leaks addresses). Only a loop's own counters may be read.
            if (
                isinstance(node.node, nodes.Name)
                and node.node.name == "loop"
                and node.attr in LOOP_ATTRIBUTES
            ):
                counters.add(id(node.node))  # parents come first: its name is next
            else:
                yield f"attribute {node.attr!r} is not allowed (variables are plain values)"
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
            elif node.name == "join" and not _literal_separator(node):
                yield (
                    f"join takes at most a literal separator of up to {MAX_SEPARATOR} characters"
                    " (a variable one multiplies a string by itself)"
                )
        elif isinstance(node, nodes.Test):
            if node.name not in ALLOWED_TESTS:
                yield f"test {node.name!r} is not allowed"
        elif isinstance(node, nodes.Name):
            if node.name.startswith("_") or node.name in JINJA_NAMES:
                yield f"name {node.name!r} is not allowed"
            elif node.name == "loop" and id(node) not in counters:
                yield "only a loop's counters may be read (loop.index, loop.first, …)"
        else:
            yield f"{type(node).__name__.lower()} is not allowed in templates"


def _literal_separator(node: nodes.Filter) -> bool:
    """``join``, ``join('')`` or ``join(', ')``: no variable separator, no ``attribute``."""
    if node.kwargs or node.dyn_args or node.dyn_kwargs or len(node.args) > 1:
        return False
    if not node.args:
        return True
    arg = node.args[0]
    return isinstance(arg, nodes.Const) and isinstance(arg.value, str) and (
        len(arg.value) <= MAX_SEPARATOR
    )


# Names Jinja itself gives meaning to, which jinja2.meta does not count as variables: they
# would render Jinja's objects (``{{ self }}`` its template reference), not a value.
JINJA_NAMES = frozenset({"self", "caller", "varargs", "kwargs"})
LOOP_ATTRIBUTES = frozenset(
    {"index", "index0", "revindex", "revindex0", "first", "last", "length", "previtem", "nextitem"}
)
MAX_LOOPS = 3  # ``for`` loops a field may have; never one inside another


def _loop_problems(tree: nodes.Template) -> Iterable[str]:
    """Loops cost their iterable's length in time; nested, they multiply (six levels over a
    20-character name took seconds of the event loop), so a field gets a few, side by side."""
    loops = list(tree.find_all(nodes.For))
    if len(loops) > MAX_LOOPS:
        yield f"at most {MAX_LOOPS} for loops a field"
    if any(True for outer in loops for _ in outer.find_all(nodes.For)):
        yield "for loops may not be nested"


def check(source: str) -> Checked:
    """Parses one field; answers the variable names it uses, or raises ``TemplateError``."""
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    problems = list(dict.fromkeys([*_walk_forbidden(tree), *_loop_problems(tree)]))
    if problems:
        raise TemplateError("; ".join(problems))
    return Checked(source, frozenset(meta.find_undeclared_variables(tree)))


class SimpleField:
    """A field that is only literal text, bare ``{{ name }}`` substitutions and defaults
    written ``{{ name or 'text' }}`` (or a number).

    Most card fields look like this; rendering them needs no Jinja context at
    all (which costs more than the rendering), and with no attribute access,
    filters or calls there is nothing for the sandbox to guard. The output is what
    Jinja gives for the same source (a unit test holds the two equal).
    """

    __slots__ = ("parts",)

    def __init__(self, parts: list[tuple[int, str, str]]) -> None:
        # (LITERAL, text, "") | (NAME, name, "") | (NAME_OR, name, the default as text)
        self.parts = parts

    def render(self, context: Mapping[str, Any]) -> str:
        out = []
        for kind, text, default in self.parts:
            if kind == LITERAL:
                out.append(text)
                continue
            try:
                value = context[text]
            except KeyError:
                raise UndefinedError(f"{text!r} is undefined") from None
            if kind == NAME_OR and not value:
                out.append(default)
            else:
                out.append(value if isinstance(value, str) else str(value))
        return "".join(out)


LITERAL, NAME, NAME_OR = 0, 1, 2


def _simple_part(item: nodes.Node) -> tuple[int, str, str] | None:
    if isinstance(item, nodes.TemplateData):
        return (LITERAL, item.data, "")
    if isinstance(item, nodes.Name) and item.ctx == "load":
        return (NAME, item.name, "")
    if (
        isinstance(item, nodes.Or)
        and isinstance(item.left, nodes.Name)
        and item.left.ctx == "load"
        and isinstance(item.right, nodes.Const)
        and type(item.right.value) in (str, int, float)
    ):
        return (NAME_OR, item.left.name, str(item.right.value))
    return None


def _simple_parts(tree: nodes.Template) -> list[tuple[int, str, str]] | None:
    parts: list[tuple[int, str, str]] = []
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            return None
        for item in node.nodes:
            part = _simple_part(item)
            if part is None:
                return None
            parts.append(part)
    return parts


Field = Template | SimpleField


def _bound_loops(tree: nodes.Template) -> nodes.Template:
    """Every loop's iterable goes through ``_loop_items``: at most ``MAX_LOOP_ITEMS``."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
    return tree


@lru_cache(maxsize=8192)
def compile_field(source: str) -> Field:
    """Compiles a checked field once; templates are immutable per version, so this caches well."""
    check(source)
    tree = ENV.parse(source)
    parts = _simple_parts(tree)
    if parts is not None:
        return SimpleField(parts)
    code = ENV.compile(_bound_loops(tree))
    return ENV.template_class.from_code(ENV, code, ENV.make_globals(None), None)
