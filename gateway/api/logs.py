"""``GET /v1/logs``: the delivery log, newest first, keyset-paginated, as JSON or CSV."""

from __future__ import annotations

import base64
import csv
import io
from typing import Any

from aiohttp import web

from gateway.api.endpoints import READ, Endpoint, Param
from gateway.api.json import respond
from gateway.api.middlewares import PRINCIPAL
from gateway.clock import from_rfc3339, to_rfc3339
from gateway.domain.messages import Status
from gateway.domain.phones import InvalidNumber, mask, to_e164
from gateway.errors import FieldError, InvalidInput
from gateway.keys import SERVICES
from gateway.storage.base import LOG_COLUMNS, LogFilter

MAX_LIMIT = 1000
CSV_PAGE = 1000
ROUTES = ("vendor_card", "carrier_rich", "sms")


def _cursor(message_id: str) -> str:
    return base64.urlsafe_b64encode(message_id.encode()).decode().rstrip("=")


def _uncursor(text: str) -> str:
    try:
        value = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        value = ""
    if not (len(value) == 26 and value.isalnum()):
        raise InvalidInput.field(["query", "cursor"], "not a cursor this API gave out")
    return value


def _time(q: Any, name: str) -> float | None:
    text = q.get(name)
    if text is None:
        return None
    try:
        return from_rfc3339(text)
    except ValueError:
        raise InvalidInput.field(["query", name], "an RFC 3339 time with an offset") from None


def parse_query(q: Any) -> tuple[LogFilter, str | None, int | None]:
    status, route = q.get("status"), q.get("route")
    if status is not None and status not in {s.value for s in Status}:
        raise InvalidInput.field(
            ["query", "status"], f"one of {', '.join(s.value for s in Status)}"
        )
    if route is not None and route not in ROUTES:
        raise InvalidInput.field(["query", "route"], f"one of {', '.join(ROUTES)}")
    to = q.get("to")
    if to is not None:
        try:
            to = to_e164(to)
        except InvalidNumber as exc:
            raise InvalidInput.field(["query", "to"], str(exc)) from None
    limit = q.get("limit")
    if limit is not None and (not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT):
        raise InvalidInput.field(["query", "limit"], f"a whole number from 1 to {MAX_LIMIT}")
    cursor = _uncursor(q["cursor"]) if q.get("cursor") else None
    where = LogFilter(
        q.get("campaign_id"),
        status,
        q.get("provider"),
        route,
        to,
        _time(q, "since"),
        _time(q, "until"),
    )
    return where, cursor, int(limit) if limit else None


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(item: dict[str, Any]) -> dict[str, Any]:
    """A cell a spreadsheet would run as a formula (``=HYPERLINK(…)`` in a client_ref) is
    quoted with a leading ``'``, as OWASP advises; the number column is ours, E.164."""
    for key, value in item.items():
        if key != "to" and isinstance(value, str) and value.startswith(_FORMULA_START):
            item[key] = "'" + value
    return item


def _item(row: tuple[Any, ...], masked: bool) -> dict[str, Any]:
    item = dict(zip(LOG_COLUMNS, row, strict=True))
    if masked:
        item["to"] = mask(item["to"])
    item["created_at"] = to_rfc3339(item["created_at"])
    item["updated_at"] = to_rfc3339(item["updated_at"])
    return item



def wants_csv(accept: str) -> bool:
    """Whether ``Accept`` prefers CSV to JSON (its q-values weighed; JSON wins a tie)."""
    best: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        best[media] = max(best.get(media, 0.0), q)
    csv = best.get("text/csv", 0.0)
    json = max(best.get("application/json", 0.0), best.get("*/*", 0.0) * 0.99)
    return csv > 0 and csv > json


# The log's filters: what /openapi.json documents, and all that the log takes
QUERY = (
    Param("campaign_id", {"type": "string"}),
    Param("status", {"type": "string", "enum": [s.value for s in Status]}),
    Param("provider", {"type": "string"}),
    Param("route", {"type": "string", "enum": list(ROUTES)}),
    Param("to", {"type": "string"}, "a phone number in any common form"),
    Param("since", {"type": "string", "format": "date-time"}, "created at or after"),
    Param("until", {"type": "string", "format": "date-time"}, "created before"),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    Param("cursor", {"type": "string"}, "next_cursor of the page before"),
)
QUERY_PARAMS = frozenset(p.name for p in QUERY)


def refuse_unknown(q: Any) -> None:
    """A misspelt filter (``stauts=failed``) is refused, not ignored: the unfiltered log
    would read as the filtered one, as an unknown body field would change a send. So is a
    filter given twice (``status=failed&status=expired``), of which one would be ignored."""
    problems = [(k, "not a parameter of the log") for k in sorted(set(q) - QUERY_PARAMS)]
    problems += [
        (k, "given more than once (one value a filter)")
        for k in sorted(set(q) & QUERY_PARAMS)
        if len(q.getall(k)) > 1
    ]
    if problems:
        raise InvalidInput(
            "; ".join(f"query.{k}: {msg}" for k, msg in problems),
            [FieldError(("query", k), msg) for k, msg in problems],
        )


async def logs(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = request[PRINCIPAL]
    refuse_unknown(request.query)
    where, cursor, limit = parse_query(request.query)
    masked = principal.role != "campaign"
    if wants_csv(request.headers.get("Accept", "")):
        return await _csv(request, principal.tenant_id, where, cursor, limit, masked)
    page = limit or 100
    rows = await services.store.list_messages(principal.tenant_id, where, cursor, page + 1)
    more = len(rows) > page
    rows = rows[:page]
    return respond(
        {
            "items": [_item(r, masked) for r in rows],
            "next_cursor": _cursor(rows[-1][0]) if more else None,
        }
    )


async def _csv(
    request: web.Request,
    tenant_id: str,
    where: LogFilter,
    cursor: str | None,
    limit: int | None,
    masked: bool,
) -> web.StreamResponse:
    """Streams every matching row (or ``limit`` of them), a page at a time."""
    store = request.app[SERVICES].store
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="logs.csv"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    left = limit
    while True:
        page = CSV_PAGE if left is None else min(CSV_PAGE, left)
        rows = await store.list_messages(tenant_id, where, cursor, page)
        for r in rows:
            writer.writerow(_csv_safe(_item(r, masked)))
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if left is not None:
            left -= len(rows)
        if len(rows) < page or left == 0:
            break
        cursor = rows[-1][0]
    await response.write_eof()
    return response


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/logs",
        logs,
        "Delivery log, newest first; filters campaign_id, status, provider, route, to, since, "
        "until; limit and cursor; Accept: text/csv streams it",
        READ,
        tag="ops",
        query=QUERY,
    ),
]
