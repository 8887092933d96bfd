"""Fixtures for the mock providers and their clients: mock apps, a callback sink, secrets."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from providers.mock.config import Behaviour
from providers.mock.server import create_mock_app
from providers.settings import MockSettings
from providers.signing import load_master_secret, provider_secret, sign


@dataclass
class Callback:
    """One request the sink received."""

    path: str
    body: bytes
    signature: str | None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Sink:
    """A tiny gateway stand-in that records callbacks and answers ``statuses`` in turn."""

    server: TestServer
    received: asyncio.Queue[Callback] = field(default_factory=asyncio.Queue)
    statuses: list[int] = field(default_factory=list)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def next(self, timeout_s: float = 2.0) -> Callback:
        return await asyncio.wait_for(self.received.get(), timeout_s)

    async def items(self, envelope: str, count: int, timeout_s: float = 2.0) -> list[Any]:
        """The first ``count`` items under ``envelope``, over as many callbacks as it takes."""
        found: list[Any] = []
        while len(found) < count:
            found.extend((await self.next(timeout_s)).json()[envelope])
        return found


@pytest.fixture(name="settings")
def _settings(tmp_path: Path) -> MockSettings:
    return MockSettings(var_dir=tmp_path, provider_secret=None, mock_config=None, port=1)


@pytest.fixture(name="master")
def _master(settings: MockSettings) -> bytes:
    return load_master_secret(settings.var_dir, settings.provider_secret)


@pytest.fixture(name="cmcc_secret")
def _cmcc_secret(master: bytes) -> bytes:
    return provider_secret(master, "cmcc")


MockFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture(name="mock")
def _mock(
    settings: MockSettings,
    master: bytes,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> MockFactory:
    """Start the mock app with ``cmcc`` behaving as the keyword arguments say."""

    async def start(**cmcc: Any) -> TestClient[web.Request, web.Application]:
        behaviours = {"cmcc": Behaviour(**{"dlr_delay_ms": 1, **cmcc})}
        return await aiohttp_client(create_mock_app(settings, behaviours, rng=random.Random(7)))

    return start


Behaviours = dict[str, dict[str, Any]]


@pytest.fixture(name="secret_of")
def _secret_of(master: bytes) -> Callable[[str], bytes]:
    """Any provider's secret, as the mock derives it."""
    return lambda name: provider_secret(master, name)


@pytest.fixture(name="mock_app")
def _mock_app(
    settings: MockSettings,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> Callable[[Behaviours], Awaitable[TestClient[web.Request, web.Application]]]:
    """Start the mock app with each named provider behaving as its dict says.

    Delivery and review delays default to 1 ms so tests do not wait.
    """

    async def start(behaviours: Behaviours) -> TestClient[web.Request, web.Application]:
        made = {
            name: Behaviour(**{"dlr_delay_ms": 1, "review_delay_ms": 1, **b})
            for name, b in behaviours.items()
        }
        return await aiohttp_client(create_mock_app(settings, made, rng=random.Random(11)))

    return start


@pytest.fixture(name="serve_mock_app")
def _serve_mock_app(
    settings: MockSettings, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> Callable[[Behaviours], Awaitable[str]]:
    """Serve the real mock app (providers behaving as told, 1 ms delays); returns its base URL."""

    async def start(behaviours: Behaviours) -> str:
        made = {
            name: Behaviour(**{"dlr_delay_ms": 1, "review_delay_ms": 1, **b})
            for name, b in behaviours.items()
        }
        server = await aiohttp_server(create_mock_app(settings, made, rng=random.Random(5)))
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture(name="sink")
async def _sink(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[Sink]:
    app = web.Application()
    sink: Sink | None = None

    async def record(request: web.Request) -> web.Response:
        assert sink is not None
        body = await request.read()
        sink.received.put_nowait(Callback(request.path, body, request.headers.get("X-Signature")))
        status = sink.statuses.pop(0) if sink.statuses else 200
        return web.json_response({}, status=status)

    app.router.add_post("/{tail:.*}", record)
    sink = Sink(await aiohttp_server(app))
    yield sink


@dataclass
class Scripted:
    """A stand-in provider that records each request and answers as scripted per path."""

    server: TestServer
    requests: list[tuple[str, Any]] = field(default_factory=list)
    answers: dict[str, Callable[[Any], tuple[int, Any]]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def bodies(self, path: str) -> list[Any]:
        return [body for p, body in self.requests if p == path]


@pytest.fixture(name="scripted")
async def _scripted(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Scripted:
    app = web.Application()
    scripted: Scripted | None = None

    async def answer(request: web.Request) -> web.Response:
        assert scripted is not None
        body = await request.json()
        scripted.requests.append((request.path, body))
        script = scripted.answers.get(request.path)
        if script is None:
            return web.json_response({"error": "unscripted"}, status=404)
        status, payload = script(body)
        return web.json_response(payload, status=status)

    app.router.add_post("/{tail:.*}", answer)
    scripted = Scripted(await aiohttp_server(app))
    return scripted


@pytest.fixture(name="session")
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


Signer = Callable[[Any], tuple[bytes, dict[str, str]]]


@pytest.fixture(name="signed")
def _signed(cmcc_secret: bytes) -> Signer:
    """Turn a payload into a JSON body and the headers that sign it as cmcc would."""

    def signed(payload: Any, secret: bytes = cmcc_secret) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload).encode()
        return body, {"Content-Type": "application/json", "X-Signature": sign(secret, body)}

    return signed
