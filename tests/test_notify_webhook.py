"""Webhook signature and retries against a real local HTTP receiver."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from alerts.notify import webhook
from tests.alerts_support.receivers import http_receiver

SECRET = b"s3cret-for-tests"


@given(body=st.binary(max_size=512), secret=st.binary(min_size=1, max_size=64))
def test_signature_verifies_and_any_change_breaks_it(body: bytes, secret: bytes) -> None:
    ts = str(int(time.time()))
    sig = webhook.sign(secret, ts, body)
    assert sig.startswith("sha256=") and webhook.verify(secret, ts, body, sig)
    assert not webhook.verify(secret, ts, body + b"x", sig)
    assert not webhook.verify(secret + b"x", ts, body, sig)
    assert not webhook.verify(secret, str(int(ts) - 1), body, sig)


def test_old_timestamps_are_rejected_as_replays() -> None:
    ts = str(int(time.time()) - 3600)
    assert not webhook.verify(SECRET, ts, b"{}", webhook.sign(SECRET, ts, b"{}"))
    assert not webhook.verify(SECRET, "not-a-number", b"{}", "sha256=00")


def test_retries_until_the_receiver_accepts_and_each_attempt_is_signed() -> None:
    attempts: list[tuple[int, bool, str]] = []
    with http_receiver(fail_first=2) as (url, got):
        ok, detail = webhook.deliver(url, b'{"alert": 1}', secret=SECRET, attempts=5, backoff_s=0.01, timeout_s=2,
                                     on_attempt=lambda n, good, d: attempts.append((n, good, d)))
    assert ok and detail == "HTTP 204"
    assert attempts == [(1, False, "HTTP 503"), (2, False, "HTTP 503"), (3, True, "HTTP 204")]
    assert len(got.requests) == 3
    for headers, body in got.requests:
        assert body == b'{"alert": 1}'
        assert webhook.verify(SECRET, headers[webhook.TIMESTAMP_HEADER], body, headers[webhook.SIGNATURE_HEADER])


def test_gives_up_after_the_attempts_and_says_so() -> None:
    with http_receiver(fail_first=100) as (url, got):
        ok, detail = webhook.deliver(url, b"{}", secret=SECRET, attempts=3, backoff_s=0.01, timeout_s=2)
    assert not ok and "gave up after 3 attempts" in detail and len(got.requests) == 3


def test_a_refusal_is_not_retried() -> None:
    with http_receiver(fail_first=100, status_when_failing=400) as (url, got):
        ok, detail = webhook.deliver(url, b"{}", secret=SECRET, attempts=5, backoff_s=0.01, timeout_s=2)
    assert not ok and "HTTP 400" in detail and len(got.requests) == 1


def test_unreachable_receiver_is_retried_then_reported() -> None:
    with http_receiver() as (url, _):
        pass  # the server is closed: nothing listens on that port any more
    ok, detail = webhook.deliver(url, b"{}", secret=None, attempts=2, backoff_s=0.01, timeout_s=1)
    assert not ok and "gave up after 2 attempts" in detail and "refused" in detail
