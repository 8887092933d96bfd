"""Every kind of bad input is a 4xx problem that names the field; never a 500."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tests.conftest import Gateway

GOOD: dict[str, Any] = {
    "to": "13812345678",
    "template_id": "fund_due",
    "variables": {"name": "张三", "amount": "1000.50"},
}


async def _post(gw: Gateway, body: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
    headers = gw.auth() | kw.pop("headers", {})
    if isinstance(body, bytes | str):
        resp = await gw.client.post("/v1/messages", data=body, headers=headers, **kw)
    else:
        resp = await gw.client.post("/v1/messages", json=body, headers=headers, **kw)
    assert resp.content_type == "application/problem+json", await resp.text()
    return resp.status, await resp.json()


def _locs(problem: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in problem.get("errors", [])]


async def test_malformed_json(gw: Gateway) -> None:
    """A body that is not JSON is a 400 naming the body."""
    status, problem = await _post(gw, b'{"to": "138', headers={"Content-Type": "application/json"})
    assert status == 400 and _locs(problem) == [["body"]]


async def test_body_must_be_an_object(gw: Gateway) -> None:
    """A JSON array where an object belongs is a 422 naming the body."""
    status, problem = await _post(gw, [1, 2])
    assert status == 422 and _locs(problem) == [["body"]]


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"tueue": 1}, ["tueue"]),
        ({"ttl_seconds": "soon"}, ["ttl_seconds"]),
        ({"ttl_seconds": 0}, ["ttl_seconds"]),
        ({"send_at": "2026-11-23T09:30:00"}, ["send_at"]),
        ({"send_at": 1795000000}, ["send_at"]),
        ({"send_at": "9999-12-31T23:59:59+08:00"}, ["send_at"]),
        ({"ttl_seconds": "60"}, ["ttl_seconds"]),
        ({"ttl_seconds": True}, ["ttl_seconds"]),
        ({"to": 13812345678}, ["to"]),
        ({"client_ref": 77}, ["client_ref"]),
        ({"route": "pigeon"}, ["route"]),
        ({"route": []}, ["route"]),
        ({"variables": "x"}, ["variables"]),
        ({"client_ref": "x" * 200}, ["client_ref"]),
        ({"to": "12345"}, ["to"]),
        ({"to": "not a number"}, ["to"]),
        ({"template_id": "nope"}, ["template_id"]),
        ({"variables": {"name": "张三"}}, ["variables", "amount"]),
        ({"variables": {"name": "张三", "amount": "lots"}}, ["variables", "amount"]),
        ({"variables": {"name": "张" * 21, "amount": 1}}, ["variables", "name"]),
        ({"variables": {"name": "张三", "amount": 1, "amonut": 2}}, ["variables", "amonut"]),
    ],
)
async def test_field_errors(gw: Gateway, change: dict[str, Any], loc: list[Any]) -> None:
    """Each bad field is a 422 whose errors name exactly that field."""
    status, problem = await _post(gw, GOOD | change)
    assert status == 422, problem
    assert loc in _locs(problem)


async def test_missing_field(gw: Gateway) -> None:
    """A missing required field is named."""
    status, problem = await _post(gw, {"template_id": "fund_due"})
    assert status == 422 and ["to"] in _locs(problem)


async def test_every_bad_variable_is_named(gw: Gateway) -> None:
    """Two bad variables give two errors, one each."""
    status, problem = await _post(gw, GOOD | {"variables": {"amount": "x"}})
    assert status == 422
    assert ["variables", "name"] in _locs(problem) and ["variables", "amount"] in _locs(problem)


async def test_oversized_body_is_413(gw: Gateway) -> None:
    """A body over the limit is a 413 problem."""
    big = GOOD | {"variables": {"name": "x", "amount": "1", "pad": "x" * (2 << 20)}}
    resp = await gw.client.post(
        "/v1/messages",
        data=io.BytesIO(json.dumps(big).encode()),
        headers=gw.auth() | {"Content-Type": "application/json"},
    )
    status, problem = resp.status, await resp.json()
    assert status == 413 and problem["status"] == 413


async def test_wrong_content_type_is_415(gw: Gateway) -> None:
    """A form body is refused with 415."""
    status, _ = await _post(
        gw, "to=138", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415


async def test_idempotency_key_too_long(gw: Gateway) -> None:
    """An over-long Idempotency-Key is named as the header."""
    status, problem = await _post(gw, GOOD, headers={"Idempotency-Key": "k" * 300})
    assert status == 422 and _locs(problem) == [["header", "Idempotency-Key"]]


async def test_unknown_path_and_method(gw: Gateway) -> None:
    """Unknown paths are 404 and wrong methods 405, both as problems."""
    resp = await gw.client.get("/v1/nothing", headers=gw.auth())
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    resp = await gw.client.delete("/v1/messages", headers=gw.auth())
    assert resp.status == 405 and resp.content_type == "application/problem+json"


async def test_bad_path_id(gw: Gateway) -> None:
    """A malformed id in the path is a 422 naming it."""
    resp = await gw.client.put("/v1/brands/bad%20id", json={}, headers=gw.auth())
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["path", "brand_id"]


async def test_nothing_is_stored_for_bad_input(gw: Gateway) -> None:
    """Rejected sends leave nothing to dispatch."""
    await _post(gw, GOOD | {"to": "12"})
    await _post(gw, GOOD | {"variables": {}})
    assert await gw.services.dispatcher.run_once() == 0


async def test_absurd_template_version_is_422(gw: Gateway) -> None:
    """A version number past any integer column is a 422 naming it, not a 500."""
    resp = await gw.client.get(
        "/v1/templates/fund_due?version=99999999999999999999999", headers=gw.auth()
    )
    assert resp.status == 422 and (await resp.json())["errors"][0]["loc"] == ["query", "version"]
