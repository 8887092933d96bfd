"""Rendered link destinations: the quick check accepts only what the full check accepts."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cards.compiled import RenderError
from cards.links import _PLAIN_URL, _UNSAFE, check_url


def _full_check_accepts(url: str) -> bool:
    if _UNSAFE.search(url):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc


_pieces = st.sampled_from(
    [
        "http://",
        "https://",
        "HTTPS://",
        "ftp://",
        "javascript:",
        "a",
        "bank.example",
        ".",
        "-",
        "@",
        ":",
        ":8080",
        ":x",
        "/",
        "?",
        "#",
        "=",
        "&",
        " ",
        "\t",
        "\x00",
        "\x7f",
        "%20",
        "路径",
        "[",
        "]",
        "::1",
        "evil.example@",
        "\\",
    ]
)


@given(st.lists(_pieces, min_size=1, max_size=8).map("".join))
def test_quick_accept_implies_full_accept(url: str) -> None:
    """No URL passes the quick path that the urlsplit check would refuse."""
    if _PLAIN_URL.fullmatch(url):
        assert _full_check_accepts(url), url


@pytest.mark.parametrize(
    "url",
    ["https://bank.example/fund?id=F001", "http://1.2.3.4:8080/x#y", "HTTPS://bank.example/"],
)
def test_good_urls_pass(url: str) -> None:
    """Plain http(s) destinations, and those only the full check understands, are accepted."""
    check_url(url, "buttons.0.action.url")


@pytest.mark.parametrize(
    "url",
    [
        "https://bank.example/a b",
        "https://user@evil.example/",
        "javascript:alert(1)",
        "https://",
        "ftp://bank.example/",
        "https://bank.example/\r\nSet-Cookie: x",
    ],
)
def test_bad_urls_are_render_errors(url: str) -> None:
    """Spaces, control characters, credentials, other schemes and hostless URLs are refused."""
    with pytest.raises(RenderError):
        check_url(url, "buttons.0.action.url")
