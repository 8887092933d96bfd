"""Which User-Agents are link-preview fetchers (their requests are no clicks)."""

from __future__ import annotations

import pytest

from gateway.usecases.clicks import is_preview

PHONES = [
    "Mozilla/5.0 (Linux; Android 14; HUAWEI P60) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/120.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML,"
    " like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; 2210132C) AppleWebKit/537.36 MiuiBrowser/17.8",
]
FETCHERS = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "WhatsApp/2.23.20.0",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0",
]


@pytest.mark.parametrize("user_agent", [*PHONES, "", None])
def test_phones_and_no_user_agent_are_clicks(user_agent: str | None) -> None:
    assert not is_preview(user_agent)


@pytest.mark.parametrize("user_agent", FETCHERS)
def test_preview_fetchers_are_not_clicks(user_agent: str) -> None:
    assert is_preview(user_agent)
    assert is_preview(user_agent.upper())  # whatever their case
