"""The mock providers' HTTP app, their config, signing and bookkeeping."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from providers.mock.config import PROVIDERS, Behaviour, load_behaviours
from providers.mock.state import TokenBucket, normalise_number
from providers.signing import load_master_secret, provider_secret, sign, verify

BATCH = "/cmcc/v1/sms/batch"
PHONE = "+8613812345678"


def batch(sink_url: str, *refs: str, to: str = PHONE) -> dict[str, Any]:
    return {
        "callback_url": sink_url,
        "messages": [{"client_ref": r, "to": to, "text": f"hello {r}"} for r in refs],
    }


# signing


def test_signature_round_trip() -> None:
    """A body signed with a secret verifies with that secret."""
    assert verify(b"k", b"body", sign(b"k", b"body"))


@pytest.mark.parametrize("signature", [None, "", "zz", "ü" * 64, sign(b"other", b"body")])
def test_forged_or_garbage_signature_fails(signature: str | None) -> None:
    """Missing, malformed or other-key signatures do not verify."""
    assert not verify(b"k", b"body", signature)


def test_signature_of_altered_body_fails() -> None:
    """A signature does not carry over to a changed body."""
    assert not verify(b"k", b"body!", sign(b"k", b"body"))


def test_master_secret_is_created_once_privately(tmp_path: Path) -> None:
    """The first call creates a 0600 secret file; later calls read the same secret."""
    first = load_master_secret(tmp_path / "var", None)
    path = tmp_path / "var" / "provider_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_secret(tmp_path / "var", None) == first
    assert len(first) == 64
    assert list((tmp_path / "var").iterdir()) == [path]


def test_master_secret_override_wins(tmp_path: Path) -> None:
    """An explicit secret is used as is and no file is written."""
    assert load_master_secret(tmp_path, "s3cret") == b"s3cret"
    assert not (tmp_path / "provider_secret").exists()


def test_provider_secrets_differ_per_provider() -> None:
    """Each provider gets its own secret derived from the master."""
    assert provider_secret(b"m", "cmcc") != provider_secret(b"m", "cucc")
    assert provider_secret(b"m", "cmcc") == provider_secret(b"m", "cmcc")


# config


def test_config_defaults_cover_every_provider() -> None:
    """Without a file every known provider has the default behaviour."""
    assert load_behaviours(None) == {p: Behaviour() for p in PROVIDERS}


def test_config_tables_override_defaults(tmp_path: Path) -> None:
    """A provider's table sets its behaviour and leaves the others alone."""
    path = tmp_path / "mock.toml"
    path.write_text("[huawei]\nfailure_rate = 1.0\n[cmcc]\nrate_limit_per_s = 5\n")
    behaviours = load_behaviours(path)
    assert behaviours["huawei"].failure_rate == 1.0
    assert behaviours["cmcc"].rate_limit_per_s == 5
    assert behaviours["cucc"] == Behaviour()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[cmcc]\nlatency = 5\n", "latency"),
        ("[nokia]\nlatency_ms = 5\n", "nokia"),
        ("[cmcc]\nfailure_rate = 2\n", "failure_rate"),
        ("cmcc = 1\n", "cmcc"),
        ("[cmcc\n", "TOML"),
    ],
)
def test_config_rejects_what_it_does_not_know(tmp_path: Path, text: str, named: str) -> None:
    """Unknown keys, unknown providers and out-of-range values are errors that name them."""
    path = tmp_path / "mock.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=named):
        load_behaviours(path)


# bookkeeping


def test_token_bucket_limits_and_reports_the_wait() -> None:
    """A bucket of 2/s takes 2 at once, then asks to wait for the next token."""
    now = [0.0]
    bucket = TokenBucket(2, clock=lambda: now[0])
    assert bucket.take(2) == 0
    assert bucket.take(1) == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take(1) == 0


def test_token_bucket_lets_an_oversized_batch_through_into_debt() -> None:
    """A batch larger than the bucket passes when the bucket is full and delays the next."""
    now = [0.0]
    bucket = TokenBucket(10, clock=lambda: now[0])
    assert bucket.take(30) == 0
    assert bucket.take(1) == pytest.approx(2.1)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+8613812345678", "+8613812345678"),
        ("13812345678", "+8613812345678"),
        ("+86 138 1234 5678", "+8613812345678"),
        (" 8613812345678", "+8613812345678"),
        ("hello", None),
        ("", None),
    ],
)
def test_numbers_are_normalised_to_e164(raw: str, e164: str | None) -> None:
    """CN mobiles and E.164 (even with its + lost to URL decoding) become E.164."""
    assert normalise_number(raw) == e164


# HTTP


async def test_healthz(mock) -> None:
    """The health check answers ok."""
    client = await mock()
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_batch_is_accepted_and_delivered_to_the_phone(mock, signed, sink) -> None:
    """Each valid message gets a carrier id and lands in the recipient's inbox."""
    client = await mock()
    body, headers = signed(batch(sink.url("/callbacks/cmcc/dlr"), "m1", "m2"))
    resp = await client.post(BATCH, data=body, headers=headers)
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [(r["client_ref"], r["status"]) for r in results] == [
        ("m1", "accepted"),
        ("m2", "accepted"),
    ]
    assert all(r["msg_id"] for r in results)
    inbox = await (await client.get("/_mock/inbox", params={"to": PHONE})).json()
    assert [(m["client_ref"], m["text"], m["provider"]) for m in inbox["messages"]] == [
        ("m1", "hello m1", "cmcc"),
        ("m2", "hello m2", "cmcc"),
    ]


async def test_invalid_number_is_rejected_per_message(mock, signed, sink) -> None:
    """A number that is not E.164 is refused without failing the rest of the batch."""
    client = await mock()
    payload = batch(sink.url("/cb"), "m1")
    payload["messages"].append({"client_ref": "bad", "to": "12345", "text": "x"})
    body, headers = signed(payload)
    results = (await (await client.post(BATCH, data=body, headers=headers)).json())["results"]
    assert results[1] == {"client_ref": "bad", "status": "rejected", "code": "invalid_number"}
    stats = await (await client.get("/_mock/stats")).json()
    assert stats["cmcc"] == {"submitted": 1, "distinct": 1}


async def test_same_client_ref_is_never_delivered_twice(mock, signed, sink) -> None:
    """A resubmitted client_ref keeps its id, counts as submitted, and reaches the phone once."""
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    first = await (await client.post(BATCH, data=body, headers=headers)).json()
    second = await (await client.post(BATCH, data=body, headers=headers)).json()
    assert second["results"] == first["results"]
    stats = await (await client.get("/_mock/stats")).json()
    assert stats["cmcc"] == {"submitted": 2, "distinct": 1}
    assert set(stats) == set(PROVIDERS)
    inbox = await (await client.get("/_mock/inbox", params={"to": PHONE})).json()
    assert len(inbox["messages"]) == 1


async def test_a_suffixed_reference_is_a_new_submission_of_the_same_message(
    mock, signed, sink
) -> None:
    """``m1.1`` (the SMS after this carrier's own 5G message m1) reaches the phone, and
    counts as one more submission of one gateway message id, not a second id."""
    client = await mock()
    for ref in ("m1", "m1.1"):
        body, headers = signed(batch(sink.url("/cb"), ref))
        assert (await client.post(BATCH, data=body, headers=headers)).status == 200
    stats = await (await client.get("/_mock/stats")).json()
    assert stats["cmcc"] == {"submitted": 2, "distinct": 1}
    inbox = await (await client.get("/_mock/inbox", params={"to": PHONE})).json()
    assert [m["client_ref"] for m in inbox["messages"]] == ["m1", "m1.1"]


@pytest.mark.parametrize("signature", [None, "forged"])
async def test_unsigned_or_forged_batch_is_refused(mock, sink, signature) -> None:
    """Without the carrier's signature the batch gets 401 and nothing is recorded."""
    client = await mock()
    headers = {"X-Signature": signature} if signature else {}
    body = json.dumps(batch(sink.url("/cb"), "m1")).encode()
    resp = await client.post(BATCH, data=body, headers=headers)
    assert resp.status == 401
    assert (await (await client.get("/_mock/stats")).json())["cmcc"]["submitted"] == 0


async def test_other_carriers_signature_is_refused(mock, signed, sink, master) -> None:
    """cucc's signature does not open cmcc's API."""
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), "m1"), provider_secret(master, "cucc"))
    assert (await client.post(BATCH, data=body, headers=headers)).status == 401


@pytest.mark.parametrize("count", [0, 101])
async def test_batch_size_outside_1_to_100_is_refused(mock, signed, sink, count) -> None:
    """Empty and oversized batches are a 400 with an error message."""
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), *(f"m{i}" for i in range(count))))
    resp = await client.post(BATCH, data=body, headers=headers)
    assert resp.status == 400
    assert "messages" in (await resp.json())["error"]


async def test_malformed_body_is_refused(mock, signed) -> None:
    """A signed body that is not a batch is a 400."""
    client = await mock()
    body, headers = signed({"callback_url": "not a url", "messages": []})
    assert (await client.post(BATCH, data=body, headers=headers)).status == 400


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b""])
async def test_signed_body_that_is_not_a_json_object_is_refused(mock, cmcc_secret, raw) -> None:
    """A correctly signed body that is not JSON, or not an object, is a 400 saying so."""
    client = await mock()
    headers = {"Content-Type": "application/json", "X-Signature": sign(cmcc_secret, raw)}
    resp = await client.post(BATCH, data=raw, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"]


async def test_json_that_only_pydantic_reads_is_still_accepted(mock, signed, sink) -> None:
    """A batch carrying NaN in a field the API ignores: orjson refuses it, pydantic's own
    parser reads it, so the batch is taken as it was before the mock parsed with orjson."""
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), "r1") | {"note": float("nan")})
    assert b"NaN" in body
    resp = await client.post(BATCH, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["results"][0]["status"] == "accepted"


async def test_unknown_carrier_is_404(mock, signed, sink) -> None:
    """Only the three carriers have an SMS API."""
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    assert (await client.post("/nokia/v1/sms/batch", data=body, headers=headers)).status == 404


async def test_failure_rate_one_fails_the_whole_batch(mock, signed, sink) -> None:
    """An always-failing carrier answers 503 and records nothing."""
    client = await mock(failure_rate=1.0)
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    resp = await client.post(BATCH, data=body, headers=headers)
    assert resp.status == 503
    assert await resp.json() == {"error": "unavailable"}
    assert (await (await client.get("/_mock/stats")).json())["cmcc"]["submitted"] == 0


async def test_rate_limit_answers_429_with_retry_after(mock, signed, sink) -> None:
    """Over the rate limit the batch gets 429, a Retry-After of at least 1 s, and no effect."""
    client = await mock(rate_limit_per_s=2)
    body, headers = signed(batch(sink.url("/cb"), "m1", "m2"))
    assert (await client.post(BATCH, data=body, headers=headers)).status == 200
    body, headers = signed(batch(sink.url("/cb"), "m3"))
    resp = await client.post(BATCH, data=body, headers=headers)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await (await client.get("/_mock/stats")).json())["cmcc"]["distinct"] == 2


async def test_delivery_report_is_signed_and_batched(mock, signed, sink, cmcc_secret) -> None:
    """Reports come back to the callback URL, signed, in one batch."""
    client = await mock()
    body, headers = signed(batch(sink.url("/callbacks/cmcc/dlr"), "m1", "m2"))
    await client.post(BATCH, data=body, headers=headers)
    callback = await sink.next()
    assert callback.path == "/callbacks/cmcc/dlr"
    assert verify(cmcc_secret, callback.body, callback.signature)
    reports = callback.json()["reports"]
    assert [(r["client_ref"], r["status"], r["error_code"]) for r in reports] == [
        ("m1", "DELIVRD", None),
        ("m2", "DELIVRD", None),
    ]
    assert reports[0]["done_at"].endswith("+00:00")


async def test_undelivered_reports_carry_an_error_code(mock, signed, sink) -> None:
    """With dlr_failure_rate 1 every report is UNDELIV with its error code."""
    client = await mock(dlr_failure_rate=1.0)
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    await client.post(BATCH, data=body, headers=headers)
    (report,) = (await sink.next()).json()["reports"]
    assert (report["status"], report["error_code"]) == ("UNDELIV", "UNDELIV:001")


async def test_refused_reports_are_retried(mock, signed, sink) -> None:
    """A callback answering 500 gets the same reports again after a backoff."""
    sink.statuses = [500]
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    await client.post(BATCH, data=body, headers=headers)
    first, second = await sink.next(), await sink.next()
    assert first.body == second.body


async def test_duplicate_gets_no_second_report(mock, signed, sink) -> None:
    """Only the first submission of a client_ref produces a delivery report."""
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    await client.post(BATCH, data=body, headers=headers)
    await sink.next()
    await client.post(BATCH, data=body, headers=headers)
    with pytest.raises(TimeoutError):
        await sink.next(timeout_s=0.2)


async def test_mo_is_posted_signed_to_the_given_callback(mock, sink, cmcc_secret) -> None:
    """A phone's reply reaches the callback signed, with the gateway's answer passed back."""
    client = await mock()
    sink.statuses = [202]
    resp = await client.post(
        "/_mock/mo",
        json={
            "provider": "cmcc",
            "from": "13812345678",
            "text": "TD",
            "callback_url": sink.url("/x"),
        },
    )
    assert (resp.status, await resp.json()) == (200, {"status": 202})
    callback = await sink.next()
    assert verify(cmcc_secret, callback.body, callback.signature)
    (message,) = callback.json()["messages"]
    assert (message["from"], message["text"]) == (PHONE, "TD")
    assert message["mo_id"] and message["received_at"]
    assert message["in_reply_to"] is None  # the phone got nothing to answer


async def test_mo_goes_where_the_last_delivery_reports_went(mock, signed, sink) -> None:
    """Without a callback_url the MO goes to the origin of the carrier's last DLR callback."""
    client = await mock()
    body, headers = signed(batch(sink.url("/callbacks/cmcc/dlr"), "m1"))
    await client.post(BATCH, data=body, headers=headers)
    await sink.next()
    resp = await client.post("/_mock/mo", json={"provider": "cmcc", "from": PHONE, "text": "T"})
    assert resp.status == 200
    callback = await sink.next()
    assert callback.path == "/callbacks/cmcc/mo"
    # the reply answers the last message the phone got: it names it
    assert callback.json()["messages"][0]["in_reply_to"] == "m1"


async def test_mo_to_an_unreachable_gateway_is_502(mock) -> None:
    """When nobody listens at the callback the mock says so."""
    client = await mock()
    resp = await client.post(
        "/_mock/mo",
        json={
            "provider": "cmcc",
            "from": PHONE,
            "text": "T",
            "callback_url": "http://127.0.0.1:1/",
        },
    )
    assert resp.status == 502


@pytest.mark.parametrize(
    "payload",
    [
        {"provider": "nokia", "from": PHONE, "text": "T"},
        {"provider": "cmcc", "from": "abc", "text": "T"},
        {"provider": "cmcc", "text": "T"},
    ],
)
async def test_bad_mo_request_is_400(mock, payload) -> None:
    """Unknown providers, bad numbers and missing fields are refused."""
    client = await mock()
    assert (await client.post("/_mock/mo", json=payload)).status == 400


async def test_reset_forgets_counts_inboxes_and_dedupe(mock, signed, sink) -> None:
    """After a reset a client_ref is new again and the phone's inbox is empty."""
    client = await mock()
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    await client.post(BATCH, data=body, headers=headers)
    assert (await client.post("/_mock/reset")).status == 200
    assert (await (await client.get("/_mock/stats")).json())["cmcc"]["submitted"] == 0
    inbox = await (await client.get("/_mock/inbox", params={"to": PHONE})).json()
    assert inbox == {"messages": []}
    await client.post(BATCH, data=body, headers=headers)
    assert (await (await client.get("/_mock/stats")).json())["cmcc"]["distinct"] == 1


async def test_inbox_needs_a_number(mock) -> None:
    """Asking for an inbox without a phone number is a 400."""
    client = await mock()
    assert (await client.get("/_mock/inbox")).status == 400


async def test_app_shuts_down_with_reports_pending(mock, signed, sink) -> None:
    """Closing the app cancels scheduled reports and deliveries without errors."""
    client = await mock(dlr_delay_ms=10_000)
    body, headers = signed(batch(sink.url("/cb"), "m1"))
    await client.post(BATCH, data=body, headers=headers)
    await client.close()
    await asyncio.sleep(0)
