"""Brands and card templates: validated, versioned, compiled once per version and cached."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from cards.compiled import CompiledTemplate, TemplateCheckFailed
from cards.models import TemplateSpec, template_dump
from cards.vendors import CAPABILITIES, Skip, vendor_payload
from gateway.clock import Clock
from gateway.errors import FieldError, InvalidInput, NotFound
from gateway.logging import get_logger
from gateway.storage.base import ReviewState, Store, TemplateRecord

log = get_logger("gateway.catalog")


class Brand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=40)
    signature: str = Field(min_length=1, max_length=20)
    logo_url: str | None = Field(default=None, max_length=2000)
    color: str | None = Field(default=None, pattern=r"^#[0-9A-Fa-f]{6}$")
    verified: StrictBool = False  # true or false, not "yes" or 1

    @field_validator("logo_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// or http:// URL")
        return value


class LoadedTemplate:
    """One stored version with its compiled form."""

    __slots__ = ("compiled", "record")

    def __init__(self, record: TemplateRecord, compiled: CompiledTemplate) -> None:
        self.record = record
        self.compiled = compiled

    @property
    def spec(self) -> TemplateSpec:
        return self.compiled.spec


def compile_template(body: dict[str, Any]) -> CompiledTemplate:
    """Validates and compiles a template body; every problem is a 422 naming its place."""
    try:
        spec = TemplateSpec.model_validate(body)
    except ValidationError as exc:
        raise invalid_from_pydantic(exc) from None
    try:
        return CompiledTemplate.build(spec)
    except TemplateCheckFailed as exc:
        raise InvalidInput(
            "template rejected", [FieldError(loc, msg) for loc, msg in exc.problems]
        ) from None


def invalid_from_pydantic(exc: ValidationError, prefix: tuple[str, ...] = ()) -> InvalidInput:
    """One error per field; pydantic's union-member tags (``list[…]``) are left out of ``loc``."""
    merged: dict[tuple[str | int, ...], list[str]] = {}
    for e in exc.errors(include_url=False):
        parts = e["loc"]
        loc = (
            *prefix,
            *(
                p
                for i, p in enumerate(parts)
                if not _is_type_tag(p) and not (i and parts[i - 1] == "action" and p in _ACTIONS)
            ),
        )
        msgs = merged.setdefault(loc, [])
        if e["msg"] not in msgs:
            msgs.append(e["msg"])
    errors = [FieldError(loc, "; or ".join(msgs)) for loc, msgs in merged.items()]
    return InvalidInput("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors), errors)


def variable_errors(problems: list[tuple[str, str]]) -> InvalidInput:
    """One error per bad variable, each named ``[\"variables\", name]``."""
    return InvalidInput(
        "; ".join(f"variables.{n}: {m}" for n, m in problems),
        [FieldError(("variables", n), m) for n, m in problems],
    )


def _is_type_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


# the tags of the action union, which pydantic puts in ``loc`` after "action"
_ACTIONS = frozenset({"open_url", "dial", "copy_code", "reply", "calendar", "map"})
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


class Catalog:
    """Brands and templates of every tenant, with the latest versions cached in memory.

    This process invalidates its cache on every write it makes; the TTL bounds
    staleness when several instances share one database.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        ttl_s: float = 5.0,
        *,
        reviewers: Sequence[str] = (),
        on_review_needed: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl_s = ttl_s
        self._reviewers = [v for v in reviewers if v in CAPABILITIES]
        self.on_review_needed = on_review_needed
        self._approved: dict[tuple[str, str, int], tuple[frozenset[str], float]] = {}
        self._latest: dict[tuple[str, str], tuple[LoadedTemplate | None, float]] = {}
        self._versions: dict[tuple[str, str, int], LoadedTemplate] = {}
        self._refused: dict[tuple[str, str, int], str] = {}  # versions failing today's checks
        self._brands: dict[tuple[str, str], tuple[Brand | None, float]] = {}

    async def put_brand(self, tenant_id: str, brand_id: str, body: dict[str, Any]) -> Brand:
        try:
            brand = Brand.model_validate(body)
        except ValidationError as exc:
            raise invalid_from_pydantic(exc) from None
        await self._store.put_brand(
            tenant_id, brand_id, brand.model_dump(mode="json"), self._clock.now()
        )
        self._brands.pop((tenant_id, brand_id), None)
        return brand

    async def brand(self, tenant_id: str, brand_id: str) -> Brand | None:
        now = time.monotonic()
        hit = self._brands.get((tenant_id, brand_id))
        if hit is not None and hit[1] > now:
            return hit[0]
        body = await self._store.get_brand(tenant_id, brand_id)
        brand = Brand.model_validate(body) if body is not None else None
        self._brands[(tenant_id, brand_id)] = (brand, now + self._ttl_s)
        return brand

    async def list_brands(self, tenant_id: str) -> list[tuple[str, Brand]]:
        return [
            (b, Brand.model_validate(body)) for b, body in await self._store.list_brands(tenant_id)
        ]

    async def put_template(
        self, tenant_id: str, template_id: str, body: dict[str, Any]
    ) -> LoadedTemplate:
        compiled = compile_template(body)
        brand = await self.brand(tenant_id, compiled.spec.brand_id)
        if brand is None:
            raise InvalidInput.field(["brand_id"], f"no brand {compiled.spec.brand_id!r}")
        reviews = self._reviews_needed(compiled, brand)
        record = await self._store.put_template(
            tenant_id, template_id, template_dump(compiled.spec), self._clock.now(), reviews
        )
        if any(reason is None for reason in reviews.values()):
            self.on_review_needed()
        loaded = LoadedTemplate(record, compiled)
        self._versions[(tenant_id, template_id, record.version)] = loaded
        self._latest[(tenant_id, template_id)] = (loaded, time.monotonic() + self._ttl_s)
        return loaded

    async def template(
        self, tenant_id: str, template_id: str, version: int | None = None
    ) -> LoadedTemplate | None:
        if version is not None:
            hit = self._versions.get((tenant_id, template_id, version))
            if hit is not None:
                return hit
            return self._load(await self._store.get_template(tenant_id, template_id, version))
        now = time.monotonic()
        cached = self._latest.get((tenant_id, template_id))
        if cached is not None and cached[1] > now:
            return cached[0]
        loaded = self._load(await self._store.get_template(tenant_id, template_id))
        self._latest[(tenant_id, template_id)] = (loaded, now + self._ttl_s)
        return loaded

    async def record(
        self, tenant_id: str, template_id: str, version: int | None = None
    ) -> TemplateRecord | None:
        """A stored version (the latest by default) as it was stored, whether or not it
        passes today's checks."""
        return await self._store.get_template(tenant_id, template_id, version)

    def _reviews_needed(self, compiled: CompiledTemplate, brand: Brand) -> dict[str, str | None]:
        """Each vendor that could show this card reviews it; the others are not applicable."""
        if compiled.card is None:
            return {}
        reviews: dict[str, str | None] = {}
        for vendor in self._reviewers:
            try:
                vendor_payload(vendor, compiled.card, compiled.spec.kind, brand.model_dump())
            except Skip as skip:
                reviews[vendor] = skip.reason
            else:
                reviews[vendor] = None
        return reviews

    async def reviews(self, loaded: LoadedTemplate) -> list[ReviewState]:
        r = loaded.record
        return await self._store.reviews_for(r.tenant_id, r.template_id, r.version)

    async def approved_vendors(
        self, tenant_id: str, template_id: str, version: int
    ) -> frozenset[str]:
        """Vendors that approved this version: the only ones the router may use for it."""
        key = (tenant_id, template_id, version)
        now = time.monotonic()
        hit = self._approved.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        states = await self._store.reviews_for(tenant_id, template_id, version)
        approved = frozenset(s.vendor for s in states if s.state == "approved")
        self._approved[key] = (approved, now + self._ttl_s)
        return approved

    def forget_reviews(self, tenant_id: str, template_id: str, version: int) -> None:
        self._approved.pop((tenant_id, template_id, version), None)

    async def require_template(self, tenant_id: str, template_id: str) -> LoadedTemplate:
        loaded = await self.template(tenant_id, template_id)
        if loaded is None:
            raise NotFound(f"no template {template_id!r}")
        return loaded

    async def list_templates(self, tenant_id: str) -> list[LoadedTemplate]:
        out = []
        for record in await self._store.list_templates(tenant_id):
            try:
                loaded = self._load(record)
            except InvalidInput:  # a version that fails today's checks is left out (logged)
                continue
            if loaded is not None:
                out.append(loaded)
        return out

    def _load(self, record: TemplateRecord | None) -> LoadedTemplate | None:
        if record is None:
            return None
        key = (record.tenant_id, record.template_id, record.version)
        hit = self._versions.get(key)
        if hit is None:
            refused = self._refused.get(key)
            if refused is None:
                try:
                    compiled = CompiledTemplate.build(TemplateSpec.model_validate(record.body))
                except (TemplateCheckFailed, ValidationError) as exc:
                    # stored before a check it fails was added: refused, never a 500; and
                    # refused once (versions are immutable), not rebuilt and logged per send
                    log.warning(
                        "stored_template_refused", template=record.template_id, error=str(exc)
                    )
                    refused = self._refused[key] = (
                        f"version {record.version} of {record.template_id!r} fails today's"
                        f" checks ({exc}); store a new version"
                    )
            if refused is not None:
                raise InvalidInput.field(["template_id"], refused)
            hit = LoadedTemplate(record, compiled)
            self._versions[key] = hit
        return hit
