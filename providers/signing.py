"""HMAC-SHA256 signatures shared by the gateway and the (mock) providers.

Secrets never live in git: a master secret is read from ``var/provider_secret``
(created on first use) or from ``GATEWAY_PROVIDER_SECRET``, and each provider's
secret is derived from it, so processes started separately from the same
directory agree on every provider's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "provider_secret"


def sign(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body``."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is ``sign(secret, body)``, compared in constant time."""
    if not signature:
        return False
    given = signature.strip().lower().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(sign(secret, body).encode("ascii"), given)


def provider_secret(master: bytes, provider: str) -> bytes:
    """The secret one provider signs with, derived from the master secret."""
    return hmac.new(master, b"provider:" + provider.encode("utf-8"), hashlib.sha256).digest()


def load_master_secret(var_dir: Path, override: str | None) -> bytes:
    """The master secret: ``override`` if given, else ``var_dir/provider_secret``.

    The file is created on first use (mode 0600, 32 random bytes as hex). When
    several processes start at once, exactly one creates it and all read it.
    """
    if override:
        return override.encode("utf-8")
    path = var_dir / SECRET_FILE
    if not path.exists():
        _create_secret_file(path)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"{path} is empty; delete it to have a new secret made")
    return value.encode("utf-8")


def _create_secret_file(path: Path) -> None:
    """Write a new secret to ``path`` unless another process already did.

    The secret is written to a private temporary file first and then linked
    into place, so no reader ever sees a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use theirs
    finally:
        tmp.unlink(missing_ok=True)
