"""Card templates as pydantic models: what a bank PUTs, validated before it is stored.

Text fields hold Jinja2 *source*; they are compiled and checked by
``cards.sandbox`` and rendered one field at a time, never as JSON text.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cards.patterns import PatternError, compile_pattern

MAX_BUTTONS = 4
MAX_LABEL = 25
MAX_TITLE = 50
MIN_CAROUSEL, MAX_CAROUSEL = 2, 10

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariableSpec(Strict):
    type: Literal["string", "integer", "decimal", "date", "datetime", "enum"] = "string"
    required: bool = True
    max_length: int | None = Field(default=None, ge=1, le=10_000)
    pattern: str | None = None
    choices: list[str] | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_pattern(value)
            except PatternError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _enum_has_choices(self) -> VariableSpec:
        if self.type == "enum" and not self.choices:
            raise ValueError("an enum variable needs choices")
        return self


def _is_url_template(value: str) -> bool:
    """``https://…`` or ``http://…`` with a literal host that ends before any template text
    (at ``/``, ``?``, ``#`` or the end), so no variable can ever change where it points."""
    return bool(re.match(r"^https?://[^\s/{}?#@\\]+(?:[/?#]|$)", value))


class OpenUrl(Strict):
    type: Literal["open_url"]
    url: str = Field(min_length=1, max_length=2000)

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        if not _is_url_template(value):
            raise ValueError("must be an https:// or http:// URL with a literal host")
        return value


class Dial(Strict):
    type: Literal["dial"]
    number: str = Field(min_length=1, max_length=40)

    @field_validator("number")
    @classmethod
    def _is_number(cls, value: str) -> str:
        if "{{" not in value and not re.fullmatch(r"\+?[0-9][0-9\- ]{2,30}", value):
            raise ValueError("must be a phone number (digits, optional +, spaces or dashes)")
        return value


class CopyCode(Strict):
    type: Literal["copy_code"]
    code: str = Field(min_length=1, max_length=100)


class Reply(Strict):
    type: Literal["reply"]
    text: str = Field(min_length=1, max_length=200)


def calendar_problem(start: str, end: str) -> str | None:
    """What is wrong with an event's times, if anything: RFC 3339 with an offset, the end
    not before the start."""
    try:
        begins, ends = datetime.fromisoformat(start), datetime.fromisoformat(end)
    except ValueError:
        return "start and end must be RFC 3339 times with an offset"
    if begins.tzinfo is None or ends.tzinfo is None:
        return "start and end must be RFC 3339 times with an offset"
    if ends < begins:
        return "the event ends before it starts"
    return None


class Calendar(Strict):
    type: Literal["calendar"]
    title: str = Field(min_length=1, max_length=100)
    start: str = Field(min_length=1, max_length=40)
    end: str = Field(min_length=1, max_length=40)
    description: str | None = None

    @model_validator(mode="after")
    def _times(self) -> Calendar:
        # templated times are checked once rendered (``cards.targets``)
        if not (_is_template_text(self.start) or _is_template_text(self.end)):
            problem = calendar_problem(self.start, self.end)
            if problem:
                raise ValueError(problem)
        return self


class MapAction(Strict):
    type: Literal["map"]
    query: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    label: str | None = None

    @model_validator(mode="after")
    def _query_or_position(self) -> MapAction:
        position = (self.latitude, self.longitude)
        if self.query is None and None in position:
            raise ValueError("a map action needs a query, or a latitude and a longitude")
        if self.query is not None and position != (None, None):
            raise ValueError("a map action is a query or a position (latitude, longitude): one")
        return self


Action = Annotated[
    OpenUrl | Dial | CopyCode | Reply | Calendar | MapAction, Field(discriminator="type")
]


class Button(Strict):
    label: str = Field(min_length=1)
    action: Action

    @field_validator("label")
    @classmethod
    def _label_limit(cls, value: str) -> str:
        if not _is_template_text(value) and len(value) > MAX_LABEL:
            raise ValueError(f"a button label is at most {MAX_LABEL} characters")
        return value


def _is_template_text(value: str) -> bool:
    return "{{" in value or "{%" in value


def _check_title(value: str) -> str:
    if not _is_template_text(value) and len(value) > MAX_TITLE:
        raise ValueError(f"a card title is at most {MAX_TITLE} characters")
    return value


def _check_buttons(buttons: list[Button]) -> list[Button]:
    if len(buttons) > MAX_BUTTONS:
        raise ValueError(f"a card has at most {MAX_BUTTONS} buttons")
    return buttons


class Media(Strict):
    url: str
    height: Literal["short", "medium", "tall"] = "medium"
    alt: str | None = None

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        if not _is_url_template(value):
            raise ValueError("must be an https:// or http:// URL with a literal host")
        return value


class FieldRow(Strict):
    label: str = Field(min_length=1)
    value: str


class CardItem(Strict):
    """One card of a carousel."""

    title: str = Field(min_length=1)
    body: str | None = None
    media: Media | None = None
    buttons: list[Button] = Field(default_factory=list)

    _title = field_validator("title")(classmethod(lambda cls, v: _check_title(v)))
    _buttons = field_validator("buttons")(classmethod(lambda cls, v: _check_buttons(v)))


class CardSpec(Strict):
    title: str = Field(min_length=1)
    body: str | None = None
    media: Media | None = None
    fields: list[FieldRow] = Field(default_factory=list)
    items: list[CardItem] = Field(default_factory=list)
    buttons: list[Button] = Field(default_factory=list)
    code: str | None = Field(default=None, description="otp kind: the code shown on the card")

    _title = field_validator("title")(classmethod(lambda cls, v: _check_title(v)))
    _buttons = field_validator("buttons")(classmethod(lambda cls, v: _check_buttons(v)))


Kind = Literal["standard", "carousel", "notice", "otp"]
Category = Literal["marketing", "transactional"]


class TemplateSpec(Strict):
    """The body of ``PUT /v1/templates/{id}``."""

    brand_id: str = Field(min_length=1, max_length=64)
    category: Category
    kind: Kind = "standard"
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    card: CardSpec | None = None
    fallback_text: str = Field(min_length=1, max_length=2000)
    routes: list[Literal["vendor_card", "carrier_rich", "sms"]] | None = Field(
        default=None, description="route preference for sends of this template"
    )

    @field_validator("variables")
    @classmethod
    def _names(cls, value: dict[str, VariableSpec]) -> dict[str, VariableSpec]:
        for name in value:
            if not _NAME.match(name) or name.startswith("_"):
                raise ValueError(
                    f"variable name {name!r} must be an identifier not starting with _"
                )
        return value


def template_dump(spec: TemplateSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_none=True)


def kind_problems(spec: TemplateSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """What the template's kind needs of its card, as ``(loc, msg)`` pairs."""
    card = spec.card
    if card is None:  # an SMS-only template
        return (
            [] if spec.kind == "standard" else [(("card",), f"a {spec.kind} template needs a card")]
        )
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if spec.kind == "carousel":
        if not MIN_CAROUSEL <= len(card.items) <= MAX_CAROUSEL:
            problems.append(
                (("card", "items"), f"a carousel has {MIN_CAROUSEL} to {MAX_CAROUSEL} cards")
            )
    elif card.items:
        problems.append((("card", "items"), "only a carousel has items"))
    if spec.kind == "notice" and not card.fields:
        problems.append((("card", "fields"), "a notice shows at least one field"))
    if (
        spec.kind == "otp"
        and card.code is None
        and not any(b.action.type == "copy_code" for b in card.buttons)
    ):
        problems.append((("card", "code"), "an otp card shows a code or has a copy_code button"))
    return problems
