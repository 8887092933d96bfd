"""How each mock provider behaves, read from a TOML file with a table per provider::

[cmcc]
latency_ms = 20
rate_limit_per_s = 200

[huawei]
failure_rate = 1.0
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CARRIERS: tuple[str, ...] = ("cmcc", "cucc", "ctcc")
VENDORS: tuple[str, ...] = ("huawei", "xiaomi", "oppo", "vivo", "honor")
PROVIDERS: tuple[str, ...] = CARRIERS + VENDORS


class Behaviour(BaseModel):
    """One provider's latency, failures, rate limit, capability, reports and reviews."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0.0, ge=0.0)
    failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_limit_per_s: float | None = Field(default=None, ge=0.0)  # None or 0: unlimited
    capability_share: float = Field(default=0.5, ge=0.0, le=1.0)
    dlr_delay_ms: float = Field(default=50.0, ge=0.0)
    dlr_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    display_rate: float = Field(default=0.8, ge=0.0, le=1.0)  # rich messages: P(DISPLAYED)
    review_delay_ms: float = Field(default=100.0, ge=0.0)  # vendors: template review verdicts
    review_reject_rate: float = Field(default=0.0, ge=0.0, le=1.0)


def load_behaviours(path: Path | None) -> dict[str, Behaviour]:
    """Every known provider's behaviour: defaults, overridden by the file's tables."""
    tables: dict[str, object] = {}
    if path is not None:
        try:
            with path.open("rb") as f:
                tables = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(tables) - set(PROVIDERS))
    if unknown:
        raise ValueError(
            f"{path}: unknown provider {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(PROVIDERS)}"
        )
    behaviours = {name: Behaviour() for name in PROVIDERS}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] must be a table")
        try:
            behaviours[name] = Behaviour.model_validate(table)
        except ValidationError as exc:
            raise ValueError(f"{path}: [{name}] {_describe(exc)}") from exc
    return behaviours


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{key}: {msg}")
    return "; ".join(parts)
