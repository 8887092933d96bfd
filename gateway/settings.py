"""The gateway's settings: one object, read from ``GATEWAY_*`` variables, passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.eventloop import LoopKind


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///var/gateway.db"
    var_dir: Path = Path("var")
    public_url: str | None = Field(
        default=None,
        description="Base URL providers and phones reach us on; default http://host:port",
    )

    link_base_url: str | None = Field(
        default=None, description="Base of tracked links (/c/{token}); default the public URL"
    )

    mock_host: str = "127.0.0.1"
    mock_port: int = 9090
    mock_config: Path | None = None
    provider_secret: str | None = None
    provider_timeout_s: float = 10.0

    event_loop: LoopKind = Field(
        default="uvloop", description="uvloop (where installed) or asyncio's default loop"
    )
    max_body_bytes: int = 1 << 20
    log_level: str = "info"
    log_json: bool = True

    dispatcher_enabled: bool = True
    dispatch_concurrency: int = 64
    # Claims × claims in flight bound the messages the dispatcher holds. When due messages
    # pile up for a moment, the claims fill to the bound, and the memory that moment takes
    # stays with the process. Million-recipient campaigns peaked at 111.9-120.3 MB (median
    # 115.3, 7 runs) with 2,000 × 4 and 105.1-111.8 (median 106.2, 11 runs) with 1,000 × 4;
    # with 500 × 4, at 97.8 MB, and at 94.3 with the fan-out in parts (one run each, the
    # sixteenth session). Drains with 500: 18,903 and 11,726 msg/s at 0 and 50 ms, against
    # 20,690 and 16,309 with 1,000 (at 50 ms the messages in flight bound the rate).
    dispatch_batch: int = 500
    dispatch_inflight_claims: int = Field(
        default=4, description="claimed batches in flight at once (bounds memory)"
    )
    dispatch_lease_s: float = 60.0
    # A campaign's round reads campaign_batch recipients, in parts of campaign_write_batch:
    # each part read while the one before renders, and written while the next ones render
    # (up to two writes queued while a part renders). Parts of 250 instead of whole batches
    # of 1,000: campaigns to 200,000 peaked ~10 MB lower, ~8 % slower (messages arrive in
    # parts, so the dispatcher claims fewer at once; docs/BENCHMARKS.md, sixteenth session).
    campaign_batch: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="recipients a campaign fans out in one round",
    )
    campaign_write_batch: int = Field(
        default=250,
        ge=1,
        le=10_000,
        description="recipients a campaign reads, renders and writes together (at most "
        "campaign_batch)",
    )
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0

    rich_timeout_s: float = Field(
        default=120.0, description="no report from a rich route by then: send the SMS"
    )
    circuit_threshold: int = 5
    circuit_cooldown_s: float = 10.0
    provider_rate_per_s: float = Field(
        default=5000.0, description="messages per second per provider, unless overridden"
    )
    provider_rates: dict[str, float] = Field(
        default_factory=dict, description='per provider, e.g. {"cmcc": 200}'
    )
    capability_ttl_s: float = 86400.0
    capability_cache_entries: int = Field(
        default=131_072,
        ge=1,
        le=1 << 24,
        description="slots for numbers' capability answers (16 bytes each, allocated at start, "
        "rounded up to a power of two); a newer answer takes an older one's slot",
    )

    idempotency_ttl_s: float = 48 * 3600
    checkpoint_interval_s: float = 1.0
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL: every commit is on disk before its 202; NORMAL: survives a crash of "
        "the process, not of the machine",
    )
    drain_timeout_s: float = 20.0

    webhook_allow_private: bool = False

    @property
    def sqlite_path(self) -> Path:
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            raise ValueError(f"database_url: unsupported URL {self.database_url!r}")
        return Path(self.database_url[len(prefix) :])

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def links_base_url(self) -> str:
        return (self.link_base_url or self.base_url).rstrip("/")

    @property
    def mock_base_url(self) -> str:
        return f"http://{self.mock_host}:{self.mock_port}"
