"""Recipients (one, or a streamed import of a million), segments and the tenant's policy."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from gateway.clock import Clock
from gateway.dispatch.policy import DEFAULT_SETTINGS
from gateway.domain.phones import InvalidNumber, to_e164
from gateway.domain.segments import RuleError, lossy, parse_rule, valid_attr_name
from gateway.domain.windows import zone
from gateway.errors import FieldError, InvalidInput, NotFound
from gateway.heap import return_free_memory
from gateway.storage.audience import RecipientBatch, RecipientTooLarge, SqliteAudience
from gateway.storage.base import Store
from gateway.usecases.catalog import invalid_from_pydantic
from gateway.usecases.csvtext import BOM, CsvRecords, cells
from gateway.usecases.fields import Hhmm, WholeNumber

DEFAULT_TZ = "Asia/Shanghai"
# Rows a write takes: the unique index on the number is written in random order, and a
# commit's cost follows the index pages it dirtied, which grow slower than the batch (SQL
# alone, a million rows: 10,000 a write 9.0 µs a row, 25,000 6.7, 50,000 5.1). Rows are
# held packed (``RecipientBatch``, ~110 bytes each), two batches at most; SQLite holds a
# batch unpacked and sorted while it writes it. The import of a million: 25,000 a write
# 106-125k rows/s, peak 131 MB; 40,000 158-164k, 158 MB; 50,000 158-164k, 165 MB. A write
# holds the writer for ~0.2 s, which other writes (sends) wait behind.
IMPORT_BATCH = 40000
MAX_REJECTED_LISTED = 1000
MAX_REASON = 300  # characters of a rejected line's reason


def _check_tz(value: str) -> str:
    zone(value)
    return value


def _check_attrs(value: dict[str, Any]) -> dict[str, Any]:
    for key, v in value.items():
        if not valid_attr_name(key):
            raise ValueError(f"attribute name {key!r}: 1-64 characters, no quotes, $ [ ] or .")
        if isinstance(v, dict):
            raise ValueError(f"attribute {key!r}: a string, number, boolean, null or list")
        if lossy(v) or (type(v) is list and any(map(lossy, v))):
            raise ValueError(
                f"attribute {key!r}: a whole number beyond 64 bits keeps no exact digits"
                " here (an account number, say): send it as a string"
            )
    return value


class RecipientIn(BaseModel):
    """The body of ``PUT /v1/recipients/{phone}``."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=200)
    attrs: dict[str, Any] = Field(default_factory=dict)
    timezone: str = DEFAULT_TZ

    _tz = field_validator("timezone")(classmethod(lambda cls, v: _check_tz(v)))
    _attrs = field_validator("attrs")(classmethod(lambda cls, v: _check_attrs(v)))


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: Hhmm
    end: Hhmm


class FrequencyCap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max: WholeNumber = Field(ge=1, le=1000)
    per_hours: StrictInt | StrictFloat = Field(gt=0, le=24 * 90)  # 24 stays 24, 1.5 stays 1.5


class TenantSettings(BaseModel):
    """``PUT /v1/settings``: a field left out keeps its value; ``null`` turns it off."""

    model_config = ConfigDict(extra="forbid")

    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.rejected_total += 1
        if len(self.rejected) < MAX_REJECTED_LISTED:
            if len(reason) > MAX_REASON:  # a reason may quote what it refuses, at any length
                reason = reason[: MAX_REASON - 1] + "…"
            self.rejected.append({"line": line, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "created": self.created,
            "updated": self.updated,
            "rejected": self.rejected,
        }
        if self.rejected_total > len(self.rejected):
            out["rejected_total"] = self.rejected_total
        return out


def _phone(raw: Any) -> str:
    if type(raw) is str:  # the usual case, without a union isinstance
        return to_e164(raw)
    if not isinstance(raw, str | int):
        raise InvalidNumber("phone is missing")
    return to_e164(str(raw))


_CSV_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,14})")
_CSV_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")


def _cell(text: str) -> Any:
    """A CSV cell as a typed value: plain integers and decimals become numbers; a leading
    zero (a postcode, an account number) or more than 15 digits (more than a double holds
    exactly) keeps the text as it is."""
    t = text.strip()
    if _CSV_INTEGER.fullmatch(t):
        return int(t)
    if _CSV_DECIMAL.fullmatch(t) and sum(c.isdigit() for c in t) <= 15:
        return float(t)
    return t


class Audience:
    def __init__(self, store: Store, audience: SqliteAudience, clock: Clock) -> None:
        self._store = store
        self._audience = audience
        self.store = audience
        self._clock = clock

    # recipients ----------------------------------------------------------------------------
    async def put_recipient(
        self, tenant_id: str, raw_phone: str, body: RecipientIn
    ) -> dict[str, Any]:
        try:
            phone = to_e164(raw_phone)
        except InvalidNumber as exc:
            raise InvalidInput.field(["path", "phone"], str(exc)) from None
        row = RecipientBatch()
        try:
            row.add(phone, body.tags, body.attrs, body.timezone)
        except RecipientTooLarge as exc:
            raise InvalidInput.field(["body"], str(exc)) from None
        except ValueError as exc:
            raise InvalidInput.field(["body", "attrs"], str(exc)) from None
        created, _ = await self._audience.upsert_recipients(tenant_id, row, self._clock.now())
        return {"phone": phone, **body.model_dump(), "created": bool(created)}

    async def get_recipient(self, tenant_id: str, raw_phone: str) -> dict[str, Any]:
        try:
            phone = to_e164(raw_phone)
        except InvalidNumber as exc:
            raise InvalidInput.field(["path", "phone"], str(exc)) from None
        r = await self._audience.get_recipient(tenant_id, phone)
        if r is None:
            raise NotFound("no such recipient")
        return {"phone": r.phone, "tags": r.tags, "attrs": r.attrs, "timezone": r.timezone}

    async def import_lines(
        self, tenant_id: str, lines: AsyncIterator[bytes], kind: str, charset: str | None = None
    ) -> ImportResult:
        """Upserts every good line in batches, streamed: it holds two batches at most (one
        written while the next is parsed), and a CSV's lines while their encoding is told
        (up to 256 KiB, ``csvtext.HOLD_BYTES``).

        ``charset`` is what the client declared (CSV only; NDJSON is UTF-8). The batches are
        written with the writer's bulk page cache; when they are done, that cache shrinks
        and what the import used goes back to the system."""
        async with self._audience.bulk():
            result, lines_read = await self._import(tenant_id, lines, kind, charset)
        if lines_read >= IMPORT_BATCH:
            return_free_memory()
        return result

    async def _import(
        self, tenant_id: str, lines: AsyncIterator[bytes], kind: str, charset: str | None
    ) -> tuple[ImportResult, int]:
        """The import's result, and how many lines it read."""
        result = ImportResult()
        batch = RecipientBatch()
        flushing: asyncio.Task[None] | None = None  # one batch is written while the next parses
        records = CsvRecords(charset) if kind == "csv" else None
        header: list[str] | None = None
        number = 0
        async for raw in lines:
            number += 1
            if records is not None:
                for first, record in records.feed(number, raw):
                    header = _csv_record(batch, result, header, first, record)
            else:
                if number == 1 and raw.startswith(BOM):  # as some editors save UTF-8
                    raw = raw[len(BOM) :]
                if raw.strip():
                    try:
                        _ndjson_row(batch, raw)
                    except (ValueError, InvalidNumber, ValidationError) as exc:
                        result.reject(number, _reason(exc))
            if len(batch) >= IMPORT_BATCH:
                if flushing is not None:
                    await flushing
                flushing = asyncio.ensure_future(self._flush(tenant_id, batch, result))
                batch = RecipientBatch()
        if records is not None:
            for first, record in records.finish():
                header = _csv_record(batch, result, header, first, record)
        if flushing is not None:
            await flushing
        await self._flush(tenant_id, batch, result)
        return result, number

    async def _flush(self, tenant_id: str, batch: RecipientBatch, result: ImportResult) -> None:
        if batch:
            created, updated = await self._audience.upsert_recipients(
                tenant_id, batch, self._clock.now()
            )
            result.created += created
            result.updated += updated

    # segments ------------------------------------------------------------------------------
    async def put_segment(self, tenant_id: str, segment_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidInput.field(["body"], 'an object: {"rule": …}')
        extra = sorted(set(body) - {"rule"})
        if extra:  # named, as pydantic names them on every other body
            raise InvalidInput(
                "; ".join(f"{k}: Extra inputs are not permitted" for k in extra),
                [FieldError((k,), "Extra inputs are not permitted") for k in extra],
            )
        if "rule" not in body:
            raise InvalidInput.field(["rule"], "Field required")
        try:
            parse_rule(body["rule"])
        except RuleError as exc:
            raise InvalidInput.field(exc.loc, exc.msg) from None
        await self._audience.put_segment(tenant_id, segment_id, body["rule"], self._clock.now())
        return {"segment_id": segment_id, "rule": body["rule"]}

    async def segment_rule(self, tenant_id: str, segment_id: str) -> Any:
        rule = await self._audience.get_segment(tenant_id, segment_id)
        if rule is None:
            raise NotFound(f"no segment {segment_id!r}")
        return parse_rule(rule)

    async def count(self, tenant_id: str, segment_id: str) -> int:
        return await self._audience.count(tenant_id, await self.segment_rule(tenant_id, segment_id))

    # settings ------------------------------------------------------------------------------
    async def settings(self, tenant_id: str) -> dict[str, Any]:
        return DEFAULT_SETTINGS | await self._store.get_settings(tenant_id)

    async def put_settings(self, tenant_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidInput.field(["body"], "must be a JSON object")
        try:
            parsed = TenantSettings.model_validate(body)
        except ValidationError as exc:
            raise invalid_from_pydantic(exc) from None
        stored = await self._store.get_settings(tenant_id)
        stored.update({k: v for k, v in parsed.model_dump().items() if k in body})
        await self._store.put_settings(tenant_id, stored)
        return DEFAULT_SETTINGS | stored

    async def wake_deferred(self, tenant_id: str) -> int:
        """The tenant's deferred messages go back to the send policy now (its quiet hours
        changed: an opening may have moved earlier); answers how many."""
        return await self._store.wake_deferred(tenant_id, self._clock.now())


_FIELDS = frozenset({"tags", "attrs", "timezone"})


def _ndjson_row(batch: RecipientBatch, raw: bytes) -> None:
    data = orjson.loads(raw)
    if type(data) is not dict:
        raise ValueError("a line is a JSON object")
    _add_recipient(batch, data.pop("phone", None), data)


_CSV_FIELDS = frozenset({"phone", "tags", "timezone"})  # the columns that are not attributes


def csv_header(text: str) -> list[str]:
    """The header's column names: a header without ``phone``, with a name twice or one that
    cannot name an attribute, or that cannot be read, is a 422 naming ``body.header``."""
    try:
        header = [h.strip() for h in cells(text)]
    except ValueError as exc:
        raise InvalidInput.field(["body", "header"], str(exc)) from None
    if "phone" not in header:
        raise InvalidInput.field(["body", "header"], "a CSV needs a phone column")
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        raise InvalidInput.field(
            ["body", "header"], f"column(s) named more than once: {', '.join(twice)}"
        )
    bad = [h for h in header if h and h not in _CSV_FIELDS and not valid_attr_name(h)]
    if bad:  # said once here, not in every row's reason
        raise InvalidInput.field(
            ["body", "header"],
            f"{len(bad)} column name(s) cannot be attribute names (1-64 characters, no"
            f" quotes, $ [ ] or .), the first {bad[0][:64]!r}",
        )
    return header


def _csv_record(
    batch: RecipientBatch,
    result: ImportResult,
    header: list[str] | None,
    first: int,
    record: str | ValueError,
) -> list[str]:
    """Takes one CSV record: the header first (a 422 naming ``body.header`` if it cannot be
    one), then a recipient a record, or the record rejected at its first line. Answers the
    header."""
    if header is None:
        if isinstance(record, ValueError):
            raise InvalidInput.field(["body", "header"], str(record))
        return csv_header(record)
    try:
        if isinstance(record, ValueError):
            raise record
        _csv_row(batch, header, cells(record))
    except (ValueError, InvalidNumber, ValidationError) as exc:
        result.reject(first, _reason(exc))
    return header


def _csv_row(batch: RecipientBatch, header: list[str], cells: list[str]) -> None:
    if len(cells) > len(header):
        raise ValueError(f"{len(cells)} cells for {len(header)} columns")
    row = dict(zip(header, cells, strict=False))
    phone = _phone(row.pop("phone", ""))
    tags = [t.strip() for t in row.pop("tags", "").split(";") if t.strip()]
    tz = row.pop("timezone", "").strip() or DEFAULT_TZ
    attrs = {k: _cell(v) for k, v in row.items() if k and v.strip()}
    _add_recipient(batch, phone, {"tags": tags, "attrs": attrs, "timezone": tz})


def _add_recipient(batch: RecipientBatch, raw_phone: Any, data: dict[str, Any]) -> None:
    """One import row, checked as ``RecipientIn`` checks it, without a model per row
    (a million rows make the difference), and added to ``batch``."""
    phone = _phone(raw_phone)
    if not _FIELDS.issuperset(data):
        raise ValueError(f"unknown field {next(k for k in data if k not in _FIELDS)!r}")
    tags = data.get("tags", [])
    if type(tags) is not list or len(tags) > 200:
        raise ValueError("tags: a list of at most 200 strings")
    for tag in tags:
        if type(tag) is not str or not tag:
            raise ValueError("tags: a list of at most 200 strings, none of them empty")
    attrs = data.get("attrs", {})
    if type(attrs) is not dict:
        raise ValueError("attrs: an object")
    for key, value in attrs.items():
        kind = type(value)  # strings and numbers, the usual values, need no more
        plain = kind is str or kind is int or (kind is float and not lossy(value))
        if not plain or not valid_attr_name(key):
            _check_attrs(attrs)  # checks them all, and names the problem if there is one
            break
    tz = data.get("timezone", DEFAULT_TZ)
    if tz != DEFAULT_TZ:  # the default needs no check
        if not isinstance(tz, str):
            raise ValueError("timezone: an IANA time zone name")
        zone(tz)
    batch.add(phone, tags, attrs, tz)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
    if isinstance(exc, InvalidInput):
        return exc.detail
    return str(exc) or type(exc).__name__


async def lines_of(stream: Any, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
    """The lines of a request body, read in chunks as they arrive (never the whole body)."""
    rest = b""
    async for chunk in stream.iter_chunked(chunk_size):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line
        if len(rest) > 1 << 20:
            raise InvalidInput.field(["body"], "a line is over 1 MiB")
    if rest:
        yield rest
