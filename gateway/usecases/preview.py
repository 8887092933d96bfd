"""Previewing a template: every target for a set of variables, without sending anything."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cards.compiled import RenderError
from cards.html import phone_html
from cards.links import PreviewLinks
from cards.targets import all_targets, render_message
from cards.variables import check_variables
from gateway.errors import InvalidInput, NotFound
from gateway.usecases.catalog import Catalog, variable_errors


class PreviewRequest(BaseModel):
    """The body of ``POST /v1/templates/{template_id}/preview``."""

    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1, description="default: the latest")


class PreviewOut(BaseModel):
    template_id: str
    version: int
    card: dict[str, Any] | None
    fallback_text: str
    sms_segments: int
    encoding: str
    html: str
    targets: dict[str, Any]


async def preview(
    catalog: Catalog, tenant_id: str, template_id: str, req: PreviewRequest, link_base_url: str
) -> dict[str, Any]:
    loaded = await catalog.template(tenant_id, template_id, req.version)
    if loaded is None:
        raise NotFound(f"no template {template_id!r}")
    spec = loaded.spec
    context, problems = check_variables(spec.variables, req.variables, only_declared=True)
    if problems:
        raise variable_errors(problems)
    brand = await catalog.brand(tenant_id, spec.brand_id)
    brand_info = brand.model_dump(mode="json") if brand else {"name": "", "signature": ""}
    try:
        rendered = render_message(loaded.compiled, brand_info, context, PreviewLinks(link_base_url))
    except RenderError as exc:
        raise InvalidInput.field(exc.loc, exc.msg) from None
    return {
        "template_id": template_id,
        "version": loaded.record.version,
        "card": rendered.card,
        "fallback_text": rendered.text,
        "sms_segments": rendered.sms.segments,
        "encoding": rendered.sms.encoding,
        "html": phone_html(brand_info, spec.kind, rendered.card, rendered.text, rendered.sms),
        "targets": all_targets(rendered),
    }
