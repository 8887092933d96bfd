"""Recipients, imports, segments and tenant settings through the API."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tests.conftest import Gateway


async def _put(gw: Gateway, phone: str, body: Any) -> Any:
    return await gw.client.put(f"/v1/recipients/{phone}", json=body, headers=gw.auth())


async def _import(gw: Gateway, data: bytes, content_type: str) -> tuple[int, Any]:
    resp = await gw.client.post(
        "/v1/recipients:import", data=data, headers=gw.auth() | {"Content-Type": content_type}
    )
    return resp.status, await resp.json()


async def _csv_import(gw: Gateway, data: bytes) -> tuple[int, Any]:
    resp = await gw.client.post(  # as a stream: aiohttp warns of large bodies given whole
        "/v1/recipients:import",
        data=io.BytesIO(data),
        headers=gw.auth() | {"Content-Type": "text/csv"},
    )
    return resp.status, await resp.json()


async def _attrs(gw: Gateway, phone: str) -> Any:
    resp = await gw.client.get(f"/v1/recipients/{phone}", headers=gw.auth())
    return (await resp.json())["attrs"] if resp.status == 200 else None


async def test_put_and_get_recipient(gw: Gateway) -> None:
    """A recipient is stored under its E.164 number, created then replaced."""
    body = {
        "tags": ["fund_interest"],
        "attrs": {"age": 41, "city": "太原"},
        "timezone": "Asia/Shanghai",
    }
    assert (await _put(gw, "138 1234 5678", body)).status == 201
    assert (await _put(gw, "+8613812345678", body | {"tags": ["vip"]})).status == 200
    got = await (await gw.client.get("/v1/recipients/13812345678", headers=gw.auth())).json()
    assert got == {
        "phone": "+8613812345678",
        "tags": ["vip"],
        "attrs": {"age": 41, "city": "太原"},
        "timezone": "Asia/Shanghai",
    }
    assert (
        await gw.client.get("/v1/recipients/13812345678", headers=gw.auth("bank_b"))
    ).status == 404


@pytest.mark.parametrize(
    ("phone", "body", "loc"),
    [
        ("12", {}, ["path", "phone"]),
        ("13812345678", {"timezone": "Mars/Base"}, ["timezone"]),
        # files of the zone database, not zone names (the first is the host's own zone)
        ("13812345678", {"timezone": "localtime"}, ["timezone"]),
        ("13812345678", {"timezone": "Factory"}, ["timezone"]),
        ("13812345678", {"timezone": "posixrules"}, ["timezone"]),
        ("13812345678", {"timezone": "right/UTC"}, ["timezone"]),
        ("13812345678", {"tags": ["vip", ""]}, ["tags", 1]),  # a rule cannot name it
        ("13812345678", {"attrs": {"note": "长" * 90_000}}, ["body"]),
        ("13812345678", {"tags": ["长" * 500] * 200}, ["body"]),
        ("13812345678", {"attrs": {'a"b': 1}}, ["attrs"]),
        ("13812345678", {"attrs": {"x": {"nested": 1}}}, ["attrs"]),
        ("13812345678", {"tags": "vip"}, ["tags"]),
        ("13812345678", {"tgas": []}, ["tgas"]),
    ],
)
async def test_bad_recipients_are_named(gw: Gateway, phone: str, body: Any, loc: list[Any]) -> None:
    """Bad numbers, zones, attributes and unknown fields are 422 naming the field."""
    resp = await _put(gw, phone, body)
    assert resp.status == 422
    assert loc in [e["loc"] for e in (await resp.json())["errors"]]


async def test_ndjson_import_counts_and_names_rejected_lines(gw: Gateway) -> None:
    """An NDJSON import upserts good lines and names each bad one by line number."""
    lines = [
        {"phone": "13800000001", "tags": ["a"], "attrs": {"age": 30}},
        {"phone": "13800000002", "timezone": "America/New_York"},
        {"phone": "not-a-phone"},
        "{broken json",
        {"phone": "13800000003", "timezone": "Nowhere/City"},
        {"phone": "13800000001", "tags": ["b"]},  # again: an update
    ]
    data = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()
    status, out = await _import(gw, data + b"\n\n", "application/x-ndjson")
    assert status == 200
    assert (out["created"], out["updated"]) == (2, 1)
    assert [r["line"] for r in out["rejected"]] == [3, 4, 5]
    got = await (await gw.client.get("/v1/recipients/13800000001", headers=gw.auth())).json()
    assert got["tags"] == ["b"]


async def test_reimport_updates_known_numbers_and_creates_new_ones(gw: Gateway) -> None:
    """A second import of known numbers updates them (the new values win); new ones are
    created; a number twice in one import counts once created, then updated."""
    first = b'{"phone": "13800000011", "tags": ["a"]}\n{"phone": "13800000012", "tags": ["a"]}\n'
    assert (await _import(gw, first, "application/x-ndjson"))[1]["created"] == 2
    second = (
        b'{"phone": "13800000012", "tags": ["z"]}\n{"phone": "13800000013", "tags": ["n"]}\n'
        b'{"phone": "13800000013", "tags": ["m"]}\n'
    )
    status, out = await _import(gw, second, "application/x-ndjson")
    assert status == 200 and (out["created"], out["updated"]) == (1, 2)
    for phone, tags in (("13800000011", ["a"]), ("13800000012", ["z"]), ("13800000013", ["m"])):
        got = await (await gw.client.get(f"/v1/recipients/{phone}", headers=gw.auth())).json()
        assert got["tags"] == tags, phone


@pytest.mark.parametrize("off_loop", [False, True], ids=["on-loop", "off-loop"])
async def test_an_import_over_many_writes_counts_every_row_once(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, off_loop: bool
) -> None:
    """Writes of a few rows (one written while the next is read), on the event loop or
    off it as a large import's are: every row counted once, line numbers right across
    writes, a number met again in the same or a later write updated (the last row wins),
    and attributes kept with their types."""
    import gateway.storage.audience as store_audience
    import gateway.usecases.audience as audience

    monkeypatch.setattr(audience, "IMPORT_BATCH", 4)
    monkeypatch.setattr(store_audience, "OFF_LOOP_ROWS", 1 if off_loop else 10**9)
    lines = [json.dumps({"phone": f"1380000{i:04d}", "tags": [f"t{i}"]}) for i in range(10)]
    lines[4] = '{"phone": "nope"}'
    lines[8] = json.dumps({"phone": "13800000005", "tags": ["again"]})  # the same write
    lines.append(json.dumps({"phone": "13800000001", "tags": ["last"]}))  # a later write
    lines.append(
        json.dumps(
            {"phone": "13800000002", "attrs": {"n": 1.5, "ok": True, "城市": "太原", "l": [1]}},
            ensure_ascii=False,
        )
    )
    status, out = await _import(gw, "\n".join(lines).encode(), "application/x-ndjson")
    assert status == 200
    assert (out["created"], out["updated"]) == (8, 3)
    assert [r["line"] for r in out["rejected"]] == [5]
    got = await (await gw.client.get("/v1/recipients/13800000001", headers=gw.auth())).json()
    assert got["tags"] == ["last"]
    got = await (await gw.client.get("/v1/recipients/13800000005", headers=gw.auth())).json()
    assert got["tags"] == ["again"]
    got = await (await gw.client.get("/v1/recipients/13800000009", headers=gw.auth())).json()
    assert got["tags"] == ["t9"]
    got = await (await gw.client.get("/v1/recipients/13800000002", headers=gw.auth())).json()
    assert got["attrs"] == {"n": 1.5, "ok": True, "城市": "太原", "l": [1]}
    assert got["tags"] == [] and got["timezone"] == "Asia/Shanghai"


async def test_an_import_writes_with_the_bulk_page_cache_and_gives_it_back(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write of an import runs with the writer's bulk page cache; once it answers,
    the cache is back to its usual size, for a failed import as for a good one."""
    from gateway.storage.audience import SqliteAudience
    from gateway.storage.sqlite import SqliteStore
    from gateway.storage.writer import BULK_CACHE_KIB, CACHE_KIB

    store = gw.services.store
    assert isinstance(store, SqliteStore)

    async def cache_kib() -> int:
        return -int(await store.writer.run(lambda c: c.execute("PRAGMA cache_size").fetchone()[0]))

    seen: list[int] = []
    upsert = SqliteAudience.upsert_recipients

    async def spying(self: SqliteAudience, *args: Any) -> tuple[int, int]:
        seen.append(await cache_kib())
        return await upsert(self, *args)

    monkeypatch.setattr(SqliteAudience, "upsert_recipients", spying)
    assert await cache_kib() == CACHE_KIB
    lines = [json.dumps({"phone": f"1380000{i:04d}"}) for i in range(5)]
    status, _ = await _import(gw, "\n".join(lines).encode(), "application/x-ndjson")
    assert status == 200
    assert seen and set(seen) == {BULK_CACHE_KIB}
    assert await cache_kib() == CACHE_KIB
    status, _ = await _import(gw, b"name\nx\n", "text/csv")  # refused: no phone column
    assert status == 422
    assert await cache_kib() == CACHE_KIB


async def test_csv_import_utf8_bom_and_types(gw: Gateway) -> None:
    """Excel's UTF-8 CSV (with a BOM): tags split on ';', numbers typed, other columns attributes."""
    csv_text = "phone,tags,timezone,age,city,score\r\n13800000011,fund;vip,,41,太原,7.5\r\n13800000012,,Asia/Tokyo,29,大同,\r\n12,,,,,\r\n"
    status, out = await _import(gw, b"\xef\xbb\xbf" + csv_text.encode(), "text/csv")
    assert status == 200 and (out["created"], out["updated"]) == (2, 0)
    assert [r["line"] for r in out["rejected"]] == [4]
    got = await (await gw.client.get("/v1/recipients/13800000011", headers=gw.auth())).json()
    assert got == {
        "phone": "+8613800000011",
        "tags": ["fund", "vip"],
        "timezone": "Asia/Shanghai",
        "attrs": {"age": 41, "city": "太原", "score": 7.5},
    }


async def test_csv_identifiers_keep_their_digits(gw: Gateway) -> None:
    """A postcode's leading zero and an id longer than a double holds stay text; plain
    numbers become numbers."""
    csv_text = "phone,zip,id,balance,rate\n13800000013,001234,12345678901234567890,1000.50,-0.5\n"
    status, out = await _import(gw, csv_text.encode(), "text/csv")
    assert status == 200 and out["created"] == 1
    got = await (await gw.client.get("/v1/recipients/13800000013", headers=gw.auth())).json()
    assert got["attrs"] == {
        "zip": "001234",
        "id": "12345678901234567890",
        "balance": 1000.5,
        "rate": -0.5,
    }


async def test_csv_import_gbk(gw: Gateway) -> None:
    """Excel's CSV from a Chinese Windows is GBK: it is detected and read right."""
    csv_text = "phone,城市\r\n13800000021,太原\r\n"
    status, out = await _import(gw, csv_text.encode("gbk"), "text/csv; charset=gbk")
    assert status == 200 and out["created"] == 1
    got = await (await gw.client.get("/v1/recipients/13800000021", headers=gw.auth())).json()
    assert got["attrs"] == {"城市": "太原"}


@pytest.mark.parametrize("media", ["text/csv", "text/csv; charset=gbk", "text/csv; charset=GB2312"])
async def test_csv_import_gbk_that_is_also_valid_utf8(gw: Gateway, media: str) -> None:
    """``太原`` in GBK is valid UTF-8 too (two combining marks): declared or not, it is read
    as the Chinese it is, and so is the rest of the file."""
    csv_text = "phone,city\r\n13900000061,太原\r\n13900000062,大同\r\n"
    assert "太原".encode("gbk").decode("utf-8") != "太原"  # the trap: it decodes, wrongly
    status, out = await _import(gw, csv_text.encode("gbk"), media)
    assert status == 200 and out["created"] == 2
    for phone, city in (("13900000061", "太原"), ("13900000062", "大同")):
        got = await (await gw.client.get(f"/v1/recipients/{phone}", headers=gw.auth())).json()
        assert got["attrs"] == {"city": city}


# Each read in the encoding it was written in. Every one of them in UTF-8, and 女 and 太原 in
# GBK, decodes the other way too (女 as Ů); the header is ASCII, so the values decide.
_EITHER_WAY = [
    ["上海"],
    ["北京市朝阳区"],
    ["阿·买"],
    ["Müller"],
    ["Café"],
    ["太原"],
    ["女"],
    ["周婷", "王芳", "李娜"],  # 婷 is one of the characters UTF-8 makes GB2312 symbols of
    ["陆小平"],  # 小 is one of those GBK makes a Cyrillic letter of
    ["谢强"],  # and GBK's 谢强 reads as letters of GB2312's Greek and Cyrillic rows
    ["钱强"],  # GBK: two accented letters side by side (Ǯǿ), not a word
    ["路"],  # GBK: a lone middle dot
    ["馨"],  # GBK: a Syriac letter; only GB2312's second level the other way
    ["赵玥"],  # UTF-8: 玥 is not in GB2312, and the GBK reading has two common characters
    ["张喆"],
    ["QQ群"],  # GBK: 群 reads as a Latin Extended-B letter beside ASCII letters
    ["女", "男"],  # 男 is not UTF-8: held until it comes, 女 is read as it too
]


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
@pytest.mark.parametrize("values", _EITHER_WAY, ids=",".join)
async def test_csv_without_bom_or_charset_is_read_in_its_own_encoding(
    gw: Gateway, encoding: str, values: list[str]
) -> None:
    """A CSV with neither a BOM nor a declared charset, UTF-8 (what scripts write) or GBK
    (Excel on a Chinese Windows), is read as written, even where its bytes also decode the
    other way (UTF-8 ``上海`` is GBK for ``涓婃捣``, GBK ``女`` UTF-8 for ``Ů``)."""
    phones = [f"1390000{i:04d}" for i in range(len(values))]
    lines = [f"{p},{v}\n".encode(encoding) for p, v in zip(phones, values, strict=True)]
    status, out = await _import(gw, b"phone,x\n" + b"".join(lines), "text/csv")
    assert status == 200 and out == {"created": len(values), "updated": 0, "rejected": []}
    for phone, value in zip(phones, values, strict=True):
        assert await _attrs(gw, phone) == {"x": value}


async def test_a_chinese_header_is_read_in_its_encoding(gw: Gateway) -> None:
    for encoding in ("utf-8", "gbk"):
        data = "phone,城市\n13900000305,上海\n".encode(encoding)
        status, out = await _import(gw, data, "text/csv")
        assert status == 200 and out["rejected"] == [], out
        assert await _attrs(gw, "13900000305") == {"城市": "上海"}


async def test_import_refuses_other_media_and_csv_without_phone(gw: Gateway) -> None:
    """Only NDJSON and CSV are taken, and a CSV needs a phone column."""
    status, _ = await _import(gw, b"x", "application/json")
    assert status == 415
    status, problem = await _import(gw, b"name,city\r\na,b\r\n", "text/csv")
    assert status == 422 and problem["errors"][0]["loc"] == ["body", "header"]


async def test_segments_validate_and_count(gw: Gateway) -> None:
    """A segment's rule is checked on PUT; its count is the recipients it selects now."""
    for i, (age, city, tags) in enumerate(
        [
            (41, "太原", ["fund"]),
            (25, "太原", ["fund"]),
            (50, "北京", ["fund"]),
            (60, "大同", ["fund", "churned"]),
        ]
    ):
        await _put(gw, f"1380000010{i}", {"tags": tags, "attrs": {"age": age, "city": city}})
    rule = {
        "all": [
            {"tag": "fund"},
            {"attr": "age", "op": "gte", "value": 30},
            {"any": [{"attr": "city", "op": "in", "value": ["太原", "大同"]}]},
            {"not": {"tag": "churned"}},
        ]
    }
    resp = await gw.client.put("/v1/segments/fund_30plus", json={"rule": rule}, headers=gw.auth())
    assert resp.status == 200
    count = await (await gw.client.get("/v1/segments/fund_30plus/count", headers=gw.auth())).json()
    assert count == {"count": 1}
    bad = await gw.client.put(
        "/v1/segments/bad",
        json={"rule": {"all": [{"attr": "age", "op": "older"}]}},
        headers=gw.auth(),
    )
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["loc"] == ["rule", "all", 0, "op"]
    assert (await gw.client.get("/v1/segments/nope/count", headers=gw.auth())).status == 404
    assert (
        await gw.client.get("/v1/segments/fund_30plus/count", headers=gw.auth("bank_b"))
    ).status == 404


async def test_a_segment_body_names_the_field_it_cannot_take(gw: Gateway) -> None:
    """An unknown field is named (as on every other body); a missing rule is named too."""
    cases = [
        ({"rule": {"tag": "vip"}, "rul": 1}, [["rul"]]),
        ({"rul": {"tag": "vip"}}, [["rul"]]),
        ({}, [["rule"]]),
        ([], [["body"]]),
    ]
    for body, locs in cases:
        resp = await gw.client.put("/v1/segments/s1", json=body, headers=gw.auth())
        assert resp.status == 422, body
        assert resp.content_type == "application/problem+json"
        assert [e["loc"] for e in (await resp.json())["errors"]] == locs, body


async def test_settings(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """Settings start at the defaults; a PUT changes what it names; null turns a policy off."""
    gw = await make_gateway()
    await gw.services.store.put_settings(gw.keys["bank_a"]["tenant_id"], {})
    got = await (await gw.client.get("/v1/settings", headers=gw.auth())).json()
    assert got == {
        "quiet_hours": {"start": "21:00", "end": "08:00"},
        "frequency_cap": {"max": 3, "per_hours": 24},
    }
    resp = await gw.client.put("/v1/settings", json={"quiet_hours": None}, headers=gw.auth())
    assert (await resp.json())["quiet_hours"] is None
    resp = await gw.client.put(
        "/v1/settings", json={"frequency_cap": {"max": 2, "per_hours": 12}}, headers=gw.auth()
    )
    out = await resp.json()
    assert out == {"quiet_hours": None, "frequency_cap": {"max": 2, "per_hours": 12.0}}
    bad = await gw.client.put(
        "/v1/settings", json={"quiet_hours": {"start": "9pm", "end": "08:00"}}, headers=gw.auth()
    )
    assert bad.status == 422 and (await bad.json())["errors"][0]["loc"] == ["quiet_hours", "start"]
    assert (await gw.client.put("/v1/settings", json={}, headers=gw.auth(role="ops"))).status == 403


async def test_csv_quoted_cells_may_span_lines(gw: Gateway) -> None:
    """A quoted cell with a line break (an address from Excel) stays one record."""
    csv_text = (
        'phone,address,city\r\n13800000031,"太原市\r\n迎泽大街 1 号",太原\r\n13800000032,,大同\r\n'
    )
    status, out = await _import(gw, csv_text.encode(), "text/csv")
    assert status == 200 and out["created"] == 2 and out["rejected"] == []
    got = await (await gw.client.get("/v1/recipients/13800000031", headers=gw.auth())).json()
    assert got["attrs"]["address"] == "太原市\n迎泽大街 1 号"


async def test_csv_an_unclosed_quote_is_one_rejected_record_not_the_rest_of_the_body(
    gw: Gateway,
) -> None:
    """A quote never closed would swallow every later line (and, rejoined line by line, cost
    the square of them): past 64 KiB the record is rejected at its first line, and the lines
    after it are records again."""
    rows = "".join(f"1380001{i:04d},迎泽大街 {i} 号,太原\r\n" for i in range(4000))
    csv_text = 'phone,address,city\r\n13800000041,"太原市,太原\r\n' + rows
    status, out = await _import(gw, csv_text.encode(), "text/csv")
    assert status == 200
    [rejected] = out["rejected"]
    assert rejected["line"] == 2 and "not closed" in rejected["reason"]
    assert 0 < out["created"] < 4000  # the lines swallowed before the limit went with it


async def test_csv_a_quote_inside_a_cell_is_a_character(gw: Gateway) -> None:
    """``小"明`` is a plain cell, as the csv module reads it: it opens nothing, and the rows
    after it are rows ("" inside a quoted cell is one quote)."""
    csv_text = (
        'phone,name,city\r\n13800000041,小"明,太原\r\n13800000042,"大""王",大同\r\n'
        "13800000043,老李,太原\r\n"
    )
    status, out = await _import(gw, csv_text.encode(), "text/csv")
    assert status == 200 and out["created"] == 3 and out["rejected"] == []
    got = await (await gw.client.get("/v1/recipients/13800000042", headers=gw.auth())).json()
    assert got["attrs"]["name"] == '大"王'
    got = await (await gw.client.get("/v1/recipients/13800000041", headers=gw.auth())).json()
    assert got["attrs"]["name"] == '小"明'


async def test_ops_sees_recipients_numbers_masked(gw: Gateway) -> None:
    """As in the logs: only the campaign role sees whole numbers."""
    await _put(gw, "13812345678", {"tags": ["x"]})
    ops = await (
        await gw.client.get("/v1/recipients/13812345678", headers=gw.auth(role="ops"))
    ).json()
    assert ops["phone"] == "+86138****5678" and ops["tags"] == ["x"]
    own = await (await gw.client.get("/v1/recipients/13812345678", headers=gw.auth())).json()
    assert own["phone"] == "+8613812345678"


async def test_frequency_cap_hours_keep_their_type(gw: Gateway) -> None:
    """24 stays 24 (not 24.0); a fraction of an hour stays one."""
    for hours in (24, 1.5):
        body = {"frequency_cap": {"max": 2, "per_hours": hours}}
        resp = await gw.client.put("/v1/settings", json=body, headers=gw.auth())
        assert resp.status == 200
        got = await (await gw.client.get("/v1/settings", headers=gw.auth())).json()
        assert got["frequency_cap"]["per_hours"] == hours
        assert type(got["frequency_cap"]["per_hours"]) is type(hours)


async def test_bad_attributes_in_an_import_reject_their_line_only(gw: Gateway) -> None:
    """An object as an attribute's value, a name a rule could not address, or values nested
    deeper than JSON can be written here reject their own line; the others are written. A
    PUT of such attributes is a 422 naming them."""
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    lines = [
        json.dumps({"phone": "13800000041", "attrs": {"city": "太原"}}),
        json.dumps({"phone": "13800000042", "attrs": {"address": {"city": "太原"}}}),
        json.dumps({"phone": "13800000043", "attrs": {"a.b": 1}}),
        json.dumps({"phone": "13800000044", "attrs": {"deep": deep}}),
        json.dumps({"phone": "13800000045", "attrs": {"city": "大同"}}),
    ]
    status, out = await _import(gw, "\n".join(lines).encode(), "application/x-ndjson")
    assert status == 200
    assert (out["created"], out["updated"]) == (2, 0)
    assert [r["line"] for r in out["rejected"]] == [2, 3, 4]
    assert "attrs" in out["rejected"][2]["reason"]
    resp = await gw.client.put(
        "/v1/recipients/13800000044", json={"attrs": {"deep": deep}}, headers=gw.auth()
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "attrs"]


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (b"phone,city\n13900000711,x\n13900000712,\xff\xfe\n13900000713,y\n", 3),
        (b"phone,city\n13900000712,\xff\xfe\n13900000711,x\n13900000713,y\n", 2),
        (b"phone,city\n13900000711,x\n\n13900000712,\xff\xfe\n13900000713,y\n", 4),
        # the second line of a quoted cell cannot be read: the record is rejected at its start
        (b'phone,city\n13900000711,x\n13900000712,"a\n\xff\xfe"\n13900000713,y\n', 3),
    ],
)
async def test_a_line_that_cannot_be_decoded_is_rejected_by_its_own_number(
    gw: Gateway, body: bytes, line: int
) -> None:
    """A line that is neither UTF-8 nor GBK is rejected with its own line number, and the
    lines around it go in."""
    status, out = await _csv_import(gw, body)
    assert status == 200, out
    assert (out["created"], [r["line"] for r in out["rejected"]]) == (2, [line])
    assert await _attrs(gw, "13900000711") == {"city": "x"}
    assert await _attrs(gw, "13900000713") == {"city": "y"}
    assert await _attrs(gw, "13900000712") is None


async def test_csv_records_the_csv_module_cannot_read_are_rejected_not_a_500(
    gw: Gateway,
) -> None:
    """A lone CR inside a cell that is not quoted, and a record larger than a record may be,
    reject their own lines; the rest of the file goes in."""
    big = b"y" * (1 << 20)
    body = b"phone,a\n13900000601,x\ry\n13900000602,ok\n13900000603," + big + b"\n13900000604,ok\n"
    status, out = await _csv_import(gw, body)
    assert status == 200, out
    assert out["created"] == 2
    reasons = {r["line"]: r["reason"] for r in out["rejected"]}
    assert set(reasons) == {2, 4}
    assert "lone CR" in reasons[2] and "more than 65,536 characters" in reasons[4]
    assert await _attrs(gw, "13900000602") == await _attrs(gw, "13900000604") == {"a": "ok"}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"phone,a\r13900000605,x\r", "lone CR"),  # old Mac Excel's line ends
        (b"phone,city,city\n13900000606,x,y\n", "named more than once: city"),
        (b"phone," + b"a" * 70_000 + b"\n13900000607,x\n", "more than 65,536 characters"),
        (b"phone,\xff\xfe\n13900000608,x\n", "neither UTF-8 nor GBK"),
        (b'phone,a"b\n13900000609,x\n', "cannot be attribute names"),
        (b"phone," + b"n" * 30_000 + b"\n13900000610,x\n", "cannot be attribute names"),
    ],
)
async def test_a_header_that_cannot_be_read_is_a_422_naming_it(
    gw: Gateway, body: bytes, detail: str
) -> None:
    status, problem = await _csv_import(gw, body)
    assert status == 422, problem
    assert problem["errors"][0]["loc"] == ["body", "header"]
    assert detail in problem["errors"][0]["msg"], problem


@pytest.mark.parametrize("big", [6222021234567890123456, 2**64, -(2**63) - 1, [1, 2**64]])
async def test_a_whole_number_beyond_64_bits_is_refused_not_changed(gw: Gateway, big: Any) -> None:
    """An attribute that is a whole number beyond 64 bits (an account number sent as a
    number) is a 422 naming the attributes, and an import line with one is rejected,
    instead of being stored as a float with its digits gone; as a string it is kept."""
    resp = await _put(gw, "13900000801", {"attrs": {"acct": big}})
    assert resp.status == 422
    problem = await resp.json()
    assert problem["errors"][0]["loc"] == ["attrs"] and "as a string" in problem["detail"]
    line = json.dumps({"phone": "13900000802", "attrs": {"acct": big}}).encode()
    status, out = await _import(gw, line + b"\n", "application/x-ndjson")
    assert status == 200 and out["created"] == 0
    (rejected,) = out["rejected"]
    assert rejected["line"] == 1 and "as a string" in rejected["reason"]
    edges = {"acct": str(big), "top": 2**64 - 1, "bottom": -(2**63)}
    ok = await _put(gw, "13900000801", {"attrs": edges})
    assert ok.status == 201
    assert await _attrs(gw, "13900000801") == edges


@pytest.mark.parametrize(
    ("rule", "loc"),
    [
        ({"attr": "age", "op": "gt", "value": 2**63}, ["rule", "value"]),
        ({"attr": "age", "op": "eq", "value": 2**64 - 1}, ["rule", "value"]),
        ({"attr": "age", "op": "eq", "value": 2**64}, ["rule", "value"]),  # read as a float
        ({"attr": "age", "op": "lt", "value": -(2**63) - 1}, ["rule", "value"]),
        ({"attr": "acct", "op": "eq", "value": 6222021234567890123456}, ["rule", "value"]),
        (
            {"all": [{"attr": "age", "op": "in", "value": [1, 2**64 - 1]}]},
            ["rule", "all", 0, "value"],
        ),
    ],
)
async def test_a_rule_number_sqlite_cannot_compare_is_a_422(
    gw: Gateway, rule: Any, loc: list[Any]
) -> None:
    """A rule's whole number beyond 64 bits is refused on PUT, and as a campaign's inline
    rule: counted, it failed every time (500), and such a campaign never fanned out."""
    resp = await gw.client.put("/v1/segments/big", json={"rule": rule}, headers=gw.auth())
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == loc
    campaign = {
        "name": "big",
        "audience": {"rule": rule},
        "variants": [{"template_id": "fund_due"}],
        "variables": {"date": "2026-12-01", "fund_id": "F001"},
    }
    resp = await gw.client.post("/v1/campaigns", json=campaign, headers=gw.auth())
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["audience", *loc]


async def test_a_rule_at_the_edges_of_64_bits_counts(gw: Gateway) -> None:
    """-2^63 and 2^63-1 are whole numbers SQLite holds: stored, compared and counted."""
    await _put(gw, "13900000803", {"attrs": {"n": 2**63 - 1}})
    await _put(gw, "13900000804", {"attrs": {"n": -(2**63)}})
    for op, value, count in (
        ("eq", 2**63 - 1, 1),
        ("lte", -(2**63), 1),
        ("in", [2**63 - 1, -(2**63)], 2),
    ):
        rule = {"attr": "n", "op": op, "value": value}
        resp = await gw.client.put("/v1/segments/edge", json={"rule": rule}, headers=gw.auth())
        assert resp.status == 200, await resp.text()
        got = await (await gw.client.get("/v1/segments/edge/count", headers=gw.auth())).json()
        assert got == {"count": count}, (op, value)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"frequency_cap": {"max": "3", "per_hours": 24}}, ["frequency_cap", "max"]),
        ({"frequency_cap": {"max": True, "per_hours": 24}}, ["frequency_cap", "max"]),
        ({"frequency_cap": {"max": 3, "per_hours": "24"}}, ["frequency_cap", "per_hours"]),
        ({"quiet_hours": {"start": "+9:00", "end": "08:00"}}, ["quiet_hours", "start"]),
        ({"quiet_hours": {"start": "21:00", "end": " 8:00"}}, ["quiet_hours", "end"]),
        ({"quiet_hours": {"start": "24:00", "end": "08:00"}}, ["quiet_hours", "start"]),
        ({"quiet_hours": {"start": "21:00", "end": "٠٨:٠٠"}}, ["quiet_hours", "end"]),
        ({"quiet_hours": {"start": "21:00", "end": "0٨:00"}}, ["quiet_hours", "end"]),
        ({"frequency_cap": {"max": 2.5, "per_hours": 24}}, ["frequency_cap", "max"]),
    ],
)
async def test_settings_take_numbers_and_times_only_as_written(
    gw: Gateway, body: Any, loc: list[Any]
) -> None:
    """A number sent as a string or a boolean, and a time of day not written HH:MM in ASCII
    digits, are a 422 naming the field, not converted and stored."""
    before = await (await gw.client.get("/v1/settings", headers=gw.auth())).json()
    resp = await gw.client.put("/v1/settings", json=body, headers=gw.auth())
    assert resp.status == 422
    assert loc in [e["loc"] for e in (await resp.json())["errors"]]
    assert await (await gw.client.get("/v1/settings", headers=gw.auth())).json() == before
    edges = {
        "quiet_hours": {"start": "23:59", "end": "00:00"},
        "frequency_cap": {"max": 2.0, "per_hours": 0.5},  # JSON's 2.0 is the whole number 2
    }
    resp = await gw.client.put("/v1/settings", json=edges, headers=gw.auth())
    assert resp.status == 200
    out = await resp.json()
    assert out == edges and type(out["frequency_cap"]["max"]) is int


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"timezone": "localtime"}, "not an IANA time zone"),
        ({"tags": ["vip", ""]}, "none of them empty"),
        ({"attrs": {"note": "长" * 90_000}}, "at most 262,144 bytes"),
    ],
)
async def test_an_import_line_the_put_would_refuse_is_rejected(
    gw: Gateway, line: Any, reason: str
) -> None:
    body = json.dumps({"phone": "13900000901", **line}, ensure_ascii=False).encode()
    status, out = await _import(
        gw, b'{"phone": "13900000902"}\n' + body + b"\n", "application/x-ndjson"
    )
    assert status == 200 and out["created"] == 1
    (rejected,) = out["rejected"]
    assert rejected["line"] == 2 and reason in rejected["reason"], rejected


async def test_a_path_id_with_a_trailing_newline_is_refused(gw: Gateway) -> None:
    """``$`` matches before a final newline: ``abc\\n`` was taken as an id of its own."""
    resp = await gw.client.put(
        "/v1/segments/abc%0A", json={"rule": {"tag": "x"}}, headers=gw.auth()
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["path", "segment_id"]


async def test_a_bad_line_inside_a_quoted_cell_rejects_its_record_whole(gw: Gateway) -> None:
    """The rest of the quoted cell is not read as records of its own (a line there that
    looks like a recipient is none), and the lines after it are read as the file is."""
    body = (
        'phone,note\n13900000001,上海\n13900000002,"紧急联系人:\n'.encode()
        + b'\xff\xfe\n13900000009,\xe5\xbc\xa0\xe4\xb8\x89"\n13900000003,\xe5\x8c\x97\xe4\xba\xac\n'
    )
    status, out = await _csv_import(gw, body)
    assert status == 200, out
    assert out["created"] == 2 and [r["line"] for r in out["rejected"]] == [3]
    assert "line 4 is neither UTF-8 nor GBK" in out["rejected"][0]["reason"]
    assert await _attrs(gw, "13900000009") is None
    assert await _attrs(gw, "13900000001") == {"note": "上海"}
    assert await _attrs(gw, "13900000003") == {"note": "北京"}


@pytest.mark.parametrize("bad_first", [False, True])
async def test_a_line_that_is_not_text_does_not_change_how_the_rest_is_read(
    gw: Gateway, bad_first: bool
) -> None:
    """A UTF-8 file with one broken line: that line is rejected, the others (before and
    after it) are read as UTF-8, not as GBK from the broken line on."""
    good = ["13900000001,上海\n".encode(), "13900000003,北京\n".encode()]
    bad = b"13900000002,\xff\n"
    lines = [bad, *good] if bad_first else [good[0], bad, good[1]]
    status, out = await _csv_import(gw, b"phone,city\n" + b"".join(lines))
    assert status == 200 and out["created"] == 2, out
    assert await _attrs(gw, "13900000001") == {"city": "上海"}
    assert await _attrs(gw, "13900000003") == {"city": "北京"}


async def test_a_header_with_an_unclosed_quote_is_a_422(gw: Gateway) -> None:
    status, problem = await _csv_import(gw, b'phone,"city\n13900000001,x\n')
    assert status == 422 and problem["errors"][0]["loc"] == ["body", "header"], problem


async def test_a_record_of_exactly_the_limit_is_taken(gw: Gateway) -> None:
    """65,536 characters is the most a record holds: that many go in, one more does not."""
    head = "13900000001,"
    exact = head + "y" * (65_536 - len(head))
    over = "13900000002," + "y" * (65_537 - len(head))
    status, out = await _csv_import(gw, f"phone,a\n{exact}\n{over}\n".encode())
    assert status == 200 and out["created"] == 1, out
    assert [r["line"] for r in out["rejected"]] == [3]


async def test_an_ndjson_body_may_start_with_a_bom(gw: Gateway) -> None:
    line = json.dumps({"phone": "13900000911", "attrs": {"city": "太原"}}, ensure_ascii=False)
    status, out = await _import(gw, b"\xef\xbb\xbf" + line.encode() + b"\n", "application/x-ndjson")
    assert status == 200 and out == {"created": 1, "updated": 0, "rejected": []}
    assert await _attrs(gw, "13900000911") == {"city": "太原"}
    # a BOM on a line of its own is a blank line, as without it
    status, out = await _import(
        gw, b"\xef\xbb\xbf\n" + line.encode() + b"\n", "application/x-ndjson"
    )
    assert status == 200 and out == {"created": 0, "updated": 1, "rejected": []}


async def test_a_file_told_late_is_read_one_way_throughout(gw: Gateway) -> None:
    """GBK 钱强 decodes as UTF-8 too; a thousand rows with no Chinese come before the first
    line that tells (张伟 is not UTF-8): every row is read as GBK, none refused."""
    rows = ["13800000001,钱强"] + [f"138{i:08d}," for i in range(2, 1100)] + ["13800001100,张伟"]
    data = ("phone,name\n" + "\n".join(rows) + "\n").encode("gbk")
    status, out = await _import(gw, data, "text/csv")
    assert status == 200 and out["rejected"] == [] and out["created"] == 1100, out
    assert await _attrs(gw, "13800000001") == {"name": "钱强"}
    assert await _attrs(gw, "13800001100") == {"name": "张伟"}


async def test_a_rejected_lines_reason_is_short_whatever_it_quotes(gw: Gateway) -> None:
    """A reason may quote the value it refuses: it is cut, so that a small body cannot make
    a huge answer."""
    zone = "Asia/" + "x" * 20_000
    rows = "".join(f"139000{i:05d},{zone}\n" for i in range(50))
    status, out = await _csv_import(gw, ("phone,timezone\n" + rows).encode())
    assert status == 200 and len(out["rejected"]) == 50
    assert all(len(r["reason"]) <= 300 for r in out["rejected"])


async def test_amounts_in_yuan_are_read_as_utf8(gw: Gateway) -> None:
    """Excel's currency format writes ¥ (not in GBK); in UTF-8 its bytes are GBK's 楼."""
    data = "phone,balance\n13900000921,¥1200.00\n13900000922,¥56.10\n".encode()
    status, out = await _import(gw, data, "text/csv")
    assert status == 200 and out["rejected"] == [], out
    assert await _attrs(gw, "13900000921") == {"balance": "¥1200.00"}


async def test_a_refused_line_does_not_swallow_the_quote_that_ends_its_record(
    gw: Gateway,
) -> None:
    """A UTF-8 line in a GBK file, its last cell quoted and ending in a character and a
    digit: the line is refused, and the rows after it go in (GB18030's decoder, replacing
    what it cannot read, took the closing quote with it, and the record ran on)."""
    body = (
        "phone,name,note\n13800000001,王芳,已开户\n".encode("gbk")
        + '13800000002,李娜,"客户经理张3"\n'.encode()
        + "13800000003,赵敏,理财客户\n13800000004,孙丽,代发工资\n".encode("gbk")
    )
    status, out = await _import(gw, body, "text/csv; charset=gbk")
    assert status == 200 and out["created"] == 3, out
    assert [r["line"] for r in out["rejected"]] == [3]
    assert await _attrs(gw, "13800000004") == {"name": "孙丽", "note": "代发工资"}
