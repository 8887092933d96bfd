"""Settings of the mock providers, from ``GATEWAY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.eventloop import LoopKind


class MockSettings(BaseSettings):
    """Where the mock providers listen and how they reach the gateway."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    mock_port: int = 9090
    mock_host: str = "127.0.0.1"
    mock_config: Path | None = None
    port: int = 8080  # the gateway's port: where MO goes when no DLR callback was seen
    provider_secret: str | None = None
    var_dir: Path = Path("var")
    event_loop: LoopKind = "uvloop"
