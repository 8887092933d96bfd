"""``/console``: the ops web console. A browser signs in with a key and keeps a signed session
cookie (HttpOnly, SameSite=Strict, 8 hours); scripts may send ``Authorization`` instead.
Every page is read-only, and numbers are masked unless the key's role is ``campaign``."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2.environment import Template

from cards.patterns import PatternError, matches
from gateway.api.endpoints import Endpoint
from gateway.api.logs import ROUTES, _cursor, _item, parse_query
from gateway.domain.messages import Status
from gateway.errors import Forbidden, GatewayError, Unauthenticated
from gateway.keys import SERVICES
from gateway.usecases.preview import PreviewRequest, preview
from gateway.usecases.tenants import Principal, hash_key
from providers import signing

COOKIE = "gw_console"
SESSION_S = 8 * 3600


@lru_cache(maxsize=8)
def _page(name: str) -> Template:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "console_pages"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    return env.get_template(name)


# Pages carry no script. Their one style sheet is inline; card previews are sandboxed
# srcdoc frames (which inherit this policy) showing the brands' images (the contract lets
# a logo be http or https) or the gateway's own. Checked in headless Chromium: the pages
# and previews render, with no violation reported. Nobody may frame the console, and its
# addresses (whose queries can hold numbers) go to no other site.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: http: data:;"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _html(name: str, status: int = 200, **context: Any) -> web.Response:
    return web.Response(
        text=_page(name).render(**context),
        status=status,
        content_type="text/html",
        headers=SECURITY_HEADERS,
    )


def _secret(request: web.Request) -> bytes:
    settings = request.app[SERVICES].settings
    master = signing.load_master_secret(settings.var_dir, settings.provider_secret)
    return hmac.new(master, b"console-session", hashlib.sha256).digest()


def _session_value(request: web.Request, key_hash: str, expires: int) -> str:
    body = f"{key_hash}:{expires}"
    sig = hmac.new(_secret(request), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}:{sig}"


def _session(request: web.Request) -> tuple[str, str, int] | None:
    """The request's session cookie, its key hash and its expiry, if it is one we signed
    that has not expired (signed out or not)."""
    cookie = request.cookies.get(COOKIE, "")
    parts = cookie.split(":")
    if not cookie.isascii() or len(parts) != 3 or not parts[1].isdigit():
        return None  # not one we made (compare_digest refuses non-ASCII text: no 500)
    expires = int(parts[1])
    if expires < time.time():
        return None
    if not hmac.compare_digest(_session_value(request, parts[0], expires), cookie):
        return None
    return cookie, parts[0], expires


async def _principal(request: web.Request) -> Principal | None:
    auth = request.app[SERVICES].auth
    header = request.headers.get("Authorization")
    if header:
        return await auth.authenticate(header)  # a wrong key is a 401, as on the API
    session = _session(request)
    store = request.app[SERVICES].store
    if session is None or await store.is_signed_out(_session_hash(session[0])):
        return None
    found = await store.find_key(session[1])
    return Principal(*found) if found else None


async def overview(request: web.Request) -> web.Response:
    principal = await _principal(request)
    if principal is None:
        return _html("login.html", title="Sign in", principal=None)
    services = request.app[SERVICES]
    counts: dict[str, int] = {}
    rows = await services.store.list_messages(principal.tenant_id, parse_query({})[0], None, 1000)
    for r in rows:
        counts[r[2]] = counts.get(r[2], 0) + 1
    return _html(
        "overview.html",
        title="Overview",
        page="overview",
        principal=principal,
        counts=sorted(counts.items()),
        sample=f"{len(rows):,}",
        providers=services.dispatcher.provider_views(),
    )


def _same_site(request: web.Request) -> None:
    """A sign-in or sign-out form posted from another site is refused (403): a page elsewhere
    must not sign a bank's user into its own tenant, or out. Browsers say where a form came
    from (``Sec-Fetch-Site``, ``Origin``); a script that says nothing is let through."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:  # every current browser sends it: it decides
        cross = fetch_site not in ("same-origin", "none")
    else:  # an older browser: its Origin, if it says one ("null" says nothing)
        origin = request.headers.get("Origin")
        own = {request.host, urlsplit(request.app[SERVICES].settings.base_url).netloc}
        cross = origin not in (None, "null") and urlsplit(origin).netloc not in own
    if cross:
        raise Forbidden("a console form must be posted from the console itself")


async def login(request: web.Request) -> web.Response:
    _same_site(request)
    form = await request.post()
    key = str(form.get("key", "")).strip()
    try:
        principal = await request.app[SERVICES].auth.authenticate(f"Bearer {key}")
    except Unauthenticated:
        if "text/html" not in request.headers.get("Accept", ""):
            raise  # not a browser: the API's 401, as problem+json
        return _html(
            "login.html", 401, title="Sign in", principal=None, error="That key is not valid."
        )
    response = web.HTTPSeeOther("/console")
    value = _session_value(request, hash_key(key), int(time.time()) + SESSION_S)
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_S,
        httponly=True,
        samesite="Strict",
        path="/console",
        secure=request.secure,
    )
    del principal
    raise response


def _session_hash(cookie: str) -> str:
    """What the database keeps of a signed-out session: never the cookie itself."""
    return hashlib.sha256(cookie.encode()).hexdigest()


async def logout(request: web.Request) -> web.Response:
    """Ends the session on the server too, not only in the browser: a copy of the cookie no
    longer signs in, across restarts, until it would have expired anyway."""
    _same_site(request)
    session = _session(request)  # only sessions we signed: forged ones cannot fill the table
    if session is not None:
        await request.app[SERVICES].store.sign_out(
            _session_hash(session[0]), float(session[2]), time.time()
        )
    response = web.HTTPSeeOther("/console")
    response.del_cookie(COOKIE, path="/console")
    raise response


async def login_page(request: web.Request) -> web.Response:
    """The sign-in form's own address, reloaded or bookmarked: the console's front page."""
    raise web.HTTPSeeOther("/console")


async def logs_page(request: web.Request) -> web.Response:
    principal = await _principal(request)
    if principal is None:
        raise web.HTTPSeeOther("/console")
    q = {k: v for k, v in request.query.items() if v}
    items: list[dict[str, Any]] = []
    next_cursor, error = None, None
    try:
        where, cursor, limit = parse_query(q)
        page = limit or 100
        rows = await request.app[SERVICES].store.list_messages(
            principal.tenant_id, where, cursor, page + 1
        )
        items = [_item(r, principal.role != "campaign") for r in rows[:page]]
        if len(rows) > page:
            next_cursor = _cursor(rows[page - 1][0])
    except GatewayError as exc:
        error = exc.detail
    next_query = urlencode({**q, "cursor": next_cursor}) if next_cursor else ""
    return _html(
        "logs.html",
        title="Delivery log",
        page="logs",
        principal=principal,
        q=q,
        items=items,
        error=error,
        next_cursor=next_cursor,
        next_query=next_query,
        query=urlencode(q),
        statuses=[s.value for s in Status],
        routes=ROUTES,
    )


def _sample(spec: Any) -> Any:
    """A plausible value for a template variable, for the preview."""
    kind = spec.type
    if kind == "integer":
        return 5
    if kind == "decimal":
        return "1000.00"
    if kind == "date":
        return date.today().isoformat()
    if kind == "datetime":
        return datetime.now().astimezone().isoformat(timespec="seconds")
    if kind == "enum":
        return spec.choices[0]
    for candidate in ("示例", "123456", "1234", "12345678", "A1B2", "F001", "示例客户"):
        if spec.pattern is None or _fits(spec.pattern, candidate):
            if spec.max_length is None or len(candidate) <= spec.max_length:
                return candidate
    return "示例"


def _fits(pattern: str, candidate: str) -> bool:
    try:
        return matches(pattern, candidate)
    except PatternError:  # too slow to match: the preview shows the template's own error
        return False


async def templates_page(request: web.Request) -> web.Response:
    principal = await _principal(request)
    if principal is None:
        raise web.HTTPSeeOther("/console")
    services = request.app[SERVICES]
    out = []
    for loaded in await services.catalog.list_templates(principal.tenant_id):
        spec = loaded.spec
        entry: dict[str, Any] = {
            "template_id": loaded.record.template_id,
            "version": loaded.record.version,
            "kind": spec.kind,
            "category": spec.category,
            "source": json.dumps(loaded.record.body, ensure_ascii=False, indent=2),
            "reviews": {
                r.vendor: {"state": r.state, "reason": r.reason}
                for r in await services.catalog.reviews(loaded)
            },
        }
        variables = {n: _sample(v) for n, v in spec.variables.items()}
        try:
            shown = await preview(
                services.catalog,
                principal.tenant_id,
                loaded.record.template_id,
                PreviewRequest(variables=variables),
                services.settings.links_base_url,
            )
            entry["html"] = shown["html"]
        except GatewayError as exc:
            entry["preview_error"] = f"no preview with sample values: {exc.detail}"
        out.append(entry)
    return _html(
        "templates.html", title="Templates", page="templates", principal=principal, templates=out
    )


ENDPOINTS = [
    Endpoint(
        "GET", "/console", overview, "The ops console (sign in with a key)", None, tag="console"
    ),
    Endpoint("POST", "/console/login", login, "Console sign-in (form: key)", None, tag="console"),
    Endpoint("GET", "/console/login", login_page, "Console sign-in page", None, tag="console"),
    Endpoint("POST", "/console/logout", logout, "Console sign-out", None, tag="console"),
    Endpoint("GET", "/console/logs", logs_page, "The delivery log", None, tag="console"),
    Endpoint(
        "GET",
        "/console/templates",
        templates_page,
        "Templates with phone previews",
        None,
        tag="console",
    ),
]
