"""The ops console: sign in with a key, a signed session cookie, read-only pages."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.storage.sqlite import SqliteStore
from tests.conftest import Gateway


async def test_sign_in_and_pages(gw: Gateway) -> None:
    """A browser signs in with its key and keeps a cookie; pages show the tenant's data."""
    await gw.send(to="13812345678")
    resp = await gw.client.get("/console")
    assert resp.status == 200 and 'name="key"' in await resp.text()
    bad = await gw.client.post(
        "/console/login", data={"key": "nope"}, headers={"Accept": "text/html"}
    )
    assert bad.status == 401 and "That key is not valid." in await bad.text()  # a browser
    script = await gw.client.post("/console/login", data={"key": "nope"})
    assert script.status == 401 and script.content_type == "application/problem+json"
    ok = await gw.client.post(
        "/console/login", data={"key": gw.keys["bank_a"]["ops_key"]}, allow_redirects=False
    )
    assert ok.status == 303
    cookie = ok.cookies["gw_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await gw.client.get("/console")
    text = await page.text()
    assert page.status == 200 and "bank_a" in text and "cmcc" in text
    logs = await (await gw.client.get("/console/logs")).text()
    assert "+86138****5678" in logs and "13812345678" not in logs  # ops: masked
    templates = await (await gw.client.get("/console/templates")).text()
    assert "fund_due" in templates and "<iframe" in templates
    assert "newest 1 messages" in text  # the overview says what its counts are of
    await gw.client.post("/console/logout")
    assert 'name="key"' in await (await gw.client.get("/console")).text()


async def test_a_signed_out_session_cookie_signs_nobody_in(
    gw: Gateway, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """After sign-out a copy of the session cookie no longer works: the server ends it too,
    not only the browser, and a restart does not bring it back."""
    ok = await gw.client.post(
        "/console/login", data={"key": gw.keys["bank_a"]["ops_key"]}, allow_redirects=False
    )
    copy = ok.cookies["gw_console"].value
    assert (await gw.client.get("/console/logs", allow_redirects=False)).status == 200
    await gw.client.post("/console/logout")
    gw.client.session.cookie_jar.update_cookies({"gw_console": copy})
    resp = await gw.client.get("/console/logs", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console"
    db = gw.services.settings.sqlite_path
    with sqlite3.connect(db) as conn:  # kept hashed, as keys are: never the cookie
        kept = conn.execute("SELECT session_hash FROM console_signouts").fetchall()
    assert kept == [(hashlib.sha256(copy.encode()).hexdigest(),)]
    # a sign-out with a cookie we never signed is not kept (nobody fills the table)
    await gw.client.post("/console/logout", headers={"Cookie": "gw_console=abc:9999999999:00"})
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM console_signouts").fetchone() == (1,)
    await gw.client.close()

    settings = gw.services.settings  # the gateway restarts over the same database
    app = create_app(
        settings, store=SqliteStore(settings.sqlite_path), providers=gw.providers, clock=gw.clock
    )
    client = await aiohttp_client(app)
    client.session.cookie_jar.update_cookies({"gw_console": copy})
    again = await client.get("/console/logs", allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/console"


async def test_the_sign_in_address_reloaded_shows_the_sign_in_page(gw: Gateway) -> None:
    """GET /console/login (a reload after a failed sign-in, a bookmark) leads to the form."""
    resp = await gw.client.get("/console/login")
    assert resp.status == 200 and 'name="key"' in await resp.text()


async def test_scripts_may_send_the_header(gw: Gateway) -> None:
    """A script reads console pages with the Authorization header; a wrong key is 401."""
    resp = await gw.client.get("/console/logs", headers=gw.auth())
    assert resp.status == 200 and "Delivery log" in await resp.text()
    assert (await gw.client.get("/console", headers={"Authorization": "Bearer nope"})).status == 401


async def test_forged_cookie_is_not_a_session(gw: Gateway) -> None:
    """A cookie the gateway did not sign signs nobody in, whatever characters it holds."""
    for forged in ("abc:9999999999:00", "é:9999999999:x", "abc:٩٩٩٩٩٩٩٩٩٩:00"):
        resp = await gw.client.get(
            "/console/logs", headers={"Cookie": f"gw_console={forged}"}, allow_redirects=False
        )
        assert resp.status == 303 and resp.headers["Location"] == "/console", forged


async def test_pages_forbid_framing_scripts_and_referrers(gw: Gateway) -> None:
    """Every console page, signed in or not, refuses to be framed, runs no script, and
    sends its address (whose query can hold a number) to no other site."""
    await gw.client.post("/console/login", data={"key": gw.keys["bank_a"]["ops_key"]})
    for path in ("/console", "/console/logs?to=13812345678", "/console/templates"):
        resp = await gw.client.get(path)
        assert resp.status == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # no script at all, by default-src
        assert "img-src 'self' https: http:" in csp  # the previews' pictures, as the phone shows them
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert '<link rel="icon" href="data:,">' in await resp.text()  # no favicon request
    await gw.client.post("/console/logout")
    signed_out = await gw.client.get("/console")
    assert signed_out.headers["X-Frame-Options"] == "DENY"


async def test_the_log_page_filters_by_time(gw: Gateway) -> None:
    """The log page's form has since and until, and they filter as the API's do."""
    await gw.send(to="13812345678")
    await gw.client.post("/console/login", data={"key": gw.keys["bank_a"]["ops_key"]})
    page = await (await gw.client.get("/console/logs")).text()
    assert 'name="since"' in page and 'name="until"' in page and "+86138****5678" in page
    later = await (await gw.client.get("/console/logs?since=2099-01-01T00:00:00%2B08:00")).text()
    assert "+86138****5678" not in later and 'value="2099-01-01T00:00:00+08:00"' in later
    assert 'class="error"' not in later  # filtered out, not refused
    earlier = await (await gw.client.get("/console/logs?until=2099-01-01T00:00:00%2B08:00")).text()
    assert "+86138****5678" in earlier and 'class="error"' not in earlier
    bad = await (await gw.client.get("/console/logs?until=yesterday")).text()
    assert "query.until" in bad  # the API's own message, naming the field


async def test_sign_in_and_out_refuse_forms_posted_from_another_site(gw: Gateway) -> None:
    """A page elsewhere cannot sign a bank's user into another tenant (or out): a form the
    browser says came from another site is 403; the console's own and scripts' are not
    (nor a browser's that sends ``Origin: null`` with ``Sec-Fetch-Site: same-origin``)."""
    key = {"key": gw.keys["bank_a"]["ops_key"]}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        for path in ("/console/login", "/console/logout"):
            resp = await gw.client.post(path, data=key, headers=headers, allow_redirects=False)
            assert resp.status == 403, (path, headers)
            assert resp.content_type == "application/problem+json"
            assert "gw_console" not in resp.cookies
    host = gw.client.make_url("/").authority
    own = await gw.client.post(
        "/console/login",
        data=key,
        headers={"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    )
    assert own.status == 303 and "gw_console" in own.cookies
    script = await gw.client.post("/console/login", data=key, allow_redirects=False)
    assert script.status == 303
    # what Chromium sends from a page with a strict referrer policy: Origin null, same-origin
    browser = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    for path in ("/console/login", "/console/logout"):
        resp = await gw.client.post(path, data=key, headers=browser, allow_redirects=False)
        assert resp.status == 303, path
    # behind a proxy that forwards another Host, an older browser's Origin is the base URL
    base = gw.services.settings.base_url
    proxied = {"Origin": base, "Host": "127.0.0.1:1"}
    resp = await gw.client.post("/console/login", data=key, headers=proxied, allow_redirects=False)
    assert resp.status == 303
