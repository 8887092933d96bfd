"""The admin commands: the socket's place (a folder only its owner may enter, never a path
too long), and the tenant ids `tenant create` takes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.api.admin import prepare_socket
from gateway.clock import SystemClock
from gateway.errors import InvalidInput
from gateway.storage.memory import MemoryStore
from gateway.usecases.tenants import create_tenant


def test_the_socket_folder_is_its_owners_only_and_a_stale_socket_goes(tmp_path: Path) -> None:
    """The folder is made (or tightened) to 0700 and a socket left behind is removed, so the
    gateway can listen again."""
    (tmp_path / "admin").mkdir(mode=0o755)
    (tmp_path / "admin" / "admin.sock").write_text("left behind")
    path = prepare_socket(tmp_path)
    assert path == tmp_path / "admin" / "admin.sock"
    assert stat.S_IMODE((tmp_path / "admin").stat().st_mode) == 0o700
    assert not path.exists()


def test_no_socket_where_its_path_would_be_too_long(tmp_path: Path) -> None:
    """Past a Unix socket's path limit the gateway serves without one (and starts), and
    the commands write the database themselves."""
    deep = tmp_path / ("x" * 120)
    assert prepare_socket(deep) is None
    assert not deep.exists()


async def test_a_tenant_id_with_a_trailing_newline_is_refused() -> None:
    """``$`` matches before a final newline: ``bank\\n`` was a tenant id of its own."""
    store = MemoryStore()
    with pytest.raises(InvalidInput):
        await create_tenant(store, SystemClock(), "bank\n")
    assert set(await create_tenant(store, SystemClock(), "bank")) >= {"tenant_id"}
