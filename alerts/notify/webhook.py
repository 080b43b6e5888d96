"""Outbound webhook: JSON body signed with HMAC-SHA256, retried with exponential backoff.

Signature scheme (for receivers): headers `X-Quantrac-Timestamp: <unix seconds>` and
`X-Quantrac-Signature: sha256=<hex>`, where hex = HMAC-SHA256(secret, "<timestamp>." + raw body).
Receivers recompute it over the raw bytes, compare in constant time and reject timestamps older
than a few minutes (replay). Each attempt is signed afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Callable

import httpx
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

TIMESTAMP_HEADER = "X-Quantrac-Timestamp"
SIGNATURE_HEADER = "X-Quantrac-Signature"


class RetryableStatus(Exception):
    """The receiver answered 429 or 5xx: worth trying again."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `timestamp.body`, the signature a receiver checks against replays and forgery."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance_s: float = 300.0) -> bool:
    """Receiver side: the signature matches and the timestamp is recent."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def deliver(url: str, body: bytes, *, secret: bytes | None, attempts: int, backoff_s: float, timeout_s: float,
            on_attempt: Callable[[int, bool, str], None] = lambda *_: None) -> tuple[bool, str]:
    """POST `body` until a 2xx answer or `attempts` run out; `on_attempt(n, ok, detail)` logs each try.

    4xx answers other than 429 are not retried: the receiver refuses the request as it is.
    """
    number = 0

    def attempt(client: httpx.Client) -> str:
        nonlocal number
        number += 1
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts}
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, ts, body)
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            on_attempt(number, False, f"{type(exc).__name__}: {exc}")
            raise
        detail = f"HTTP {response.status_code}"
        if response.status_code == 429 or response.status_code >= 500:
            on_attempt(number, False, detail)
            raise RetryableStatus(detail)
        ok = response.is_success
        on_attempt(number, ok, detail)
        return detail if ok else f"{detail}: refused, not retried"

    with httpx.Client(timeout=timeout_s) as client:
        try:
            for tried in Retrying(stop=stop_after_attempt(attempts),
                                  wait=wait_exponential(multiplier=backoff_s, max=60),
                                  retry=retry_if_exception_type((httpx.HTTPError, RetryableStatus))):
                with tried:
                    detail = attempt(client)
        except RetryError as exc:
            return False, f"gave up after {attempts} attempts: {exc.last_attempt.exception()}"
    return detail.startswith("HTTP 2"), detail
