"""Health, readiness, metrics and the generated OpenAPI document."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.errors import RetryableProviderError
from gateway.keys import SERVICES
from gateway.logging import configure_logging
from gateway.settings import Settings
from gateway.storage.memory import MemoryStore
from tests.conftest import Gateway, GatewayFactory


async def test_healthz(gw: Gateway) -> None:
    """Liveness needs no key."""
    resp = await gw.client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"


async def test_readyz_checks_database_and_dispatcher(make_gateway: GatewayFactory) -> None:
    """Ready when the database answers and the dispatcher runs; 503 when it has stopped."""
    gw = await make_gateway(dispatcher_enabled=True)
    resp = await gw.client.get("/readyz")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["checks"] == {"database": "ok", "dispatcher": "ok"}
    await gw.services.dispatcher.stop()
    resp = await gw.client.get("/readyz")
    assert resp.status == 503 and resp.content_type == "application/problem+json"


async def test_metrics_count_requests_and_messages(gw: Gateway) -> None:
    """Prometheus text shows requests by route and status, and messages by status."""
    await gw.send()
    await gw.services.dispatcher.run_once()
    text = await (await gw.client.get("/metrics")).text()
    assert (
        'gateway_http_requests_total{method="POST",route="/v1/messages",status="202"} 1.0' in text
    )
    assert 'gateway_messages_total{status="submitted"} 1.0' in text
    assert 'gateway_messages_total{status="accepted"} 1.0' in text
    assert "gateway_dispatch_seconds_bucket" in text


async def test_metrics_count_revoked_messages(gw: Gateway) -> None:
    """A message revoked before it went counts as revoked."""
    from gateway.clock import to_rfc3339

    message_id = await gw.send(send_at=to_rfc3339(gw.clock.now() + 3600))
    resp = await gw.client.post(f"/v1/messages/{message_id}/revoke", headers=gw.auth())
    assert (await resp.json())["status"] == "revoked"
    text = await (await gw.client.get("/metrics")).text()
    assert 'gateway_messages_total{status="revoked"} 1.0' in text


async def test_request_id_is_echoed(gw: Gateway) -> None:
    """Every answer carries the request id, the caller's if it sent one."""
    resp = await gw.client.get("/healthz", headers={"X-Request-Id": "abc123"})
    assert resp.headers["X-Request-Id"] == "abc123"
    first = (await gw.client.get("/healthz")).headers["X-Request-Id"]
    second = (await gw.client.get("/healthz")).headers["X-Request-Id"]
    assert first and second and first != second


async def test_openapi_is_generated_from_models(gw: Gateway) -> None:
    """/openapi.json lists the endpoints with the request models' own schemas."""
    doc = await (await gw.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/v1/messages"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "SendRequest"
    )
    props = doc["components"]["schemas"]["SendRequest"]["properties"]
    assert {
        "to",
        "template_id",
        "variables",
        "send_at",
        "ttl_seconds",
        "client_ref",
        "route",
    } <= set(props)
    assert doc["components"]["schemas"]["SendRequest"]["additionalProperties"] is False
    assert "/callbacks/{provider}/dlr" in doc["paths"]
    for path in ("/v1/messages", "/v1/campaigns"):  # both POSTs take an Idempotency-Key
        headers = [p for p in doc["paths"][path]["post"]["parameters"] if p["in"] == "header"]
        assert [h["name"] for h in headers] == ["Idempotency-Key"]
    logs = doc["paths"]["/v1/logs"]["get"]
    query = {p["name"] for p in logs["parameters"] if p["in"] == "query"}
    assert query == {"campaign_id", "status", "provider", "route", "to", "since", "until",
                     "limit", "cursor"}  # fmt: skip
    imports = doc["paths"]["/v1/recipients:import"]["post"]["requestBody"]["content"]
    assert set(imports) == {"application/x-ndjson", "text/csv"}
    click = doc["paths"]["/c/{token}"]["get"]["responses"]
    assert {"302", "404"} <= set(click)
    assert {"200", "201"} <= set(doc["paths"]["/v1/recipients/{phone}"]["put"]["responses"])


async def test_logs_mask_numbers(gw: Gateway) -> None:
    """No log line carries a whole phone number."""
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream, cache=False)
    try:
        await gw.client.get("/v1/messages/13812345678", headers=gw.auth())
        gw.providers["cmcc"].fail_next = [RetryableProviderError("unavailable", "+8613812345678")]
        await gw.send()
        await gw.services.dispatcher.run_once()
    finally:
        configure_logging("warning", json=True, cache=False)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line["event"] == "request" for line in lines)
    assert any(line["event"] == "dispatch_attempt" for line in lines)
    assert "13812345678" not in stream.getvalue()
    assert "138****5678" in stream.getvalue()


async def test_logs_mask_numbers_written_with_separators(gw: Gateway) -> None:
    """A path may carry a number as a person writes it: masked too, ids and times left."""
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream, cache=False)
    try:
        for written in ("138-4346-4097", "+86 138 4346 4097", "(138)43464097"):
            await gw.client.get(f"/v1/recipients/{written}", headers=gw.auth())
        await gw.client.get("/v1/messages/01M8T7696360H3GW7HSJHYEC1B", headers=gw.auth())
        await gw.client.get("/v1/campaigns/20261123-001", headers=gw.auth())
        await gw.client.get("/v1/segments/2026-11-23-2026-11-30/count", headers=gw.auth())
    finally:
        configure_logging("warning", json=True, cache=False)
    paths = [
        json.loads(line)["path"]
        for line in stream.getvalue().splitlines()
        if json.loads(line)["event"] == "request"
    ]
    assert paths == [
        "/v1/recipients/***-****-4097",
        "/v1/recipients/+** *** **** 4097",
        "/v1/recipients/(***)****4097",
        "/v1/messages/01M8T7696360H3GW7HSJHYEC1B",
        "/v1/campaigns/20261123-001",  # ids and dates with dashes are no numbers
        "/v1/segments/2026-11-23-2026-11-30/count",
    ]


async def test_request_lines_carry_the_request_id(gw: Gateway) -> None:
    """The request's line carries its id; the next request on the connection gets its own."""
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream, cache=False)
    try:
        await gw.client.get("/healthz", headers={"X-Request-Id": "req-one"})
        await gw.client.get("/v1/messages/nope", headers={**gw.auth(), "X-Request-Id": "req-two"})
    finally:
        configure_logging("warning", json=True, cache=False)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = {line["path"]: line for line in lines if line["event"] == "request"}
    assert requests["/healthz"]["request_id"] == "req-one"
    assert requests["/v1/messages/nope"]["request_id"] == "req-two"
    assert requests["/v1/messages/nope"]["status"] == 404


def test_logged_errors_carry_their_traceback_masked() -> None:
    """An exception logged carries its traceback as text, with numbers in it masked."""
    from gateway.logging import get_logger

    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream, cache=False)
    try:
        try:
            raise ValueError("refused +8613812345678")
        except ValueError:
            get_logger("test").exception("unhandled_error")
    finally:
        configure_logging("warning", json=True, cache=False)
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ValueError: refused +86138****5678" in line["exception"]
    assert "13812345678" not in stream.getvalue()


async def test_a_client_hanging_up_is_not_a_server_error(
    settings: Settings, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """A client gone mid-answer (a CSV download cut short) counts as 499, not as a 500."""

    async def hangs_up(_: web.Request) -> web.StreamResponse:
        raise ConnectionResetError("Cannot write to closing transport")

    app = create_app(settings, store=MemoryStore(), providers={})
    app.router.add_get("/hangs-up", hangs_up)
    client = await aiohttp_client(app)
    assert (await client.get("/hangs-up")).status == 499
    services = app[SERVICES]
    assert services.metrics.http.counts == {("GET", "/hangs-up", 499): 1}
