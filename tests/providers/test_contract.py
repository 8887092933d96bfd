"""One contract for every provider client: the port's shape, and a round trip against the mock.

Each case submits through the real client to the real mock app, gets the
delivery reports back over HTTP, and reads them with the same client.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.dispatch.ports import (
    Provider,
    ReportStatus,
    RouteKind,
    Submission,
)
from gateway.errors import PermanentProviderError
from providers.carriers import HttpCarrier
from providers.vendors import HttpVendor
from tests.providers.phones import other_vendor_phone, rcs_phone, vendor_phone

Client = HttpCarrier | HttpVendor
Factory = Callable[[str, str, bytes, aiohttp.ClientSession], Client]


@dataclass(frozen=True)
class Case:
    provider: str
    factory: Factory
    route: RouteKind
    capable: Callable[[], str]
    incapable: Callable[[], str] | None
    payload: dict[str, Any] | None
    displayed: bool  # rich routes get read receipts

    def submission(self, message_id: str, to: str) -> Submission:
        return Submission(message_id, to, self.route, f"text {message_id}", self.payload)


CASES = [
    Case("cmcc", HttpCarrier, "sms", lambda: "+8613812345678", None, None, False),
    Case(
        "cucc",
        HttpCarrier,
        "carrier_rich",
        lambda: rcs_phone(capable=True),
        lambda: rcs_phone(capable=False),
        {"messageList": [{"contentType": "text/plain", "contentText": "hi"}]},
        True,
    ),
    Case(
        "huawei",
        HttpVendor,
        "vendor_card",
        lambda: vendor_phone("huawei"),
        lambda: other_vendor_phone("huawei"),
        {"title": "hi"},
        True,
    ),
    Case(
        "vivo",
        HttpVendor,
        "vendor_card",
        lambda: vendor_phone("vivo"),
        lambda: other_vendor_phone("vivo"),
        {"title": "hi"},
        True,
    ),
]
RICH = [c for c in CASES if c.incapable is not None]


def case_id(case: Case) -> str:
    return f"{case.factory.__name__}-{case.provider}-{case.route}"


PORT_METHODS = ("submit", "verify", "parse_reports", "parse_inbound", "close")


@pytest.fixture(name="client")
def _client(serve_mock_app, secret_of, session):
    async def start(case: Case, **behaviour: Any) -> Client:
        base_url = await serve_mock_app({case.provider: behaviour})
        return case.factory(case.provider, base_url, secret_of(case.provider), session)

    return start


@pytest.mark.parametrize("case", CASES, ids=case_id)
async def test_client_has_the_port_shape(case: Case, client) -> None:
    """Attributes and method signatures are those of Provider and CapabilityProvider."""
    provider: Provider = await client(case)
    assert provider.name == case.provider
    assert case.route in provider.routes
    assert provider.max_batch == 100
    for name in PORT_METHODS:
        ours, port = getattr(type(provider), name), getattr(Provider, name)
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(port), name
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(port).parameters)
    assert case.factory.max_lookup == 10_000  # CapabilityProvider
    assert callable(case.factory.lookup_capability)
    await provider.close()


@pytest.mark.parametrize("case", CASES, ids=case_id)
async def test_round_trip_through_the_mock(case: Case, client, sink) -> None:
    """Submit, get signed reports back, verify and parse them: delivered (then displayed)."""
    provider = await client(case, display_rate=1.0, capability_share=1.0)
    phone = case.capable()
    (outcome,) = await provider.submit([case.submission("m1", phone)], sink.url("/cb/dlr"))
    assert outcome.message_id == "m1" and outcome.provider_ref and outcome.error is None

    expected: list[ReportStatus] = ["delivered", "displayed"] if case.displayed else ["delivered"]
    reports = []
    while len(reports) < len(expected):
        callback = await sink.next()
        assert callback.path == "/cb/dlr"
        assert provider.verify(callback.body, callback.signature)
        assert not provider.verify(callback.body, "0" * 64)
        reports += provider.parse_reports(callback.body)
    assert [(r.message_id, r.provider_ref, r.status) for r in reports] == [
        ("m1", outcome.provider_ref, s) for s in expected
    ]
    with pytest.raises(ValueError):
        provider.parse_reports(b"not json")


@pytest.mark.parametrize("case", RICH, ids=case_id)
async def test_lookup_agrees_with_submission(case: Case, client, sink) -> None:
    """What lookup_capability says is what submit does: a phone that cannot show the
    rich route fails that message permanently ('not_capable'), not the batch."""
    provider = await client(case)
    assert case.incapable is not None
    phones = [case.capable(), case.incapable()]
    assert await provider.lookup_capability(phones) == {phones[0]: True, phones[1]: False}
    ok, refused = await provider.submit(
        [case.submission("m1", phones[0]), case.submission("m2", phones[1])], sink.url("/cb")
    )
    assert ok.provider_ref and ok.error is None
    assert isinstance(refused.error, PermanentProviderError)
    assert (refused.provider_ref, refused.error.code) == (None, "not_capable")
