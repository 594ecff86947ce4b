"""Delivering a run's callback: one signed POST per activity attempt.

The workflow runs one attempt at a time (``maximum_attempts=1``) and keeps the backoff and the
budget itself, so that every attempt, with the status the receiver answered, is in the run's
result. The signature follows the scheme Stripe and GitHub use (docs/callbacks.md):

    DA-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the secret>

signed afresh on each attempt, so a receiver can refuse stale timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_assistants.workflows.activity_models import DELIVER_CALLBACK, CallbackInput
from durable_assistants.workflows.models import CallbackAttempt

SIGNATURE_HEADER = "DA-Signature"
DELIVERY_HEADER = "DA-Delivery-Id"
EVENT_HEADER = "DA-Event"
USER_AGENT = "durable-assistants-callback/1"
# One attempt's HTTP exchange; the activity's start-to-close timeout is a little longer.
REQUEST_TIMEOUT_SECONDS = 10.0
CALLBACK_REFUSED = "CallbackRefused"
CALLBACK_UNREACHABLE = "CallbackUnreachable"


def signature(secret: str, timestamp: int, body: str) -> str:
    """The ``DA-Signature`` header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: str, tolerance_seconds: float = 300, now: float | None = None) -> bool:
    """What a receiver does (Python): the header's HMAC matches and its timestamp is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@activity.defn(name=DELIVER_CALLBACK)
async def deliver_callback(input: CallbackInput) -> CallbackAttempt:
    """POST the body once. A 2xx is delivered; anything else raises a non-retryable
    ``ApplicationError`` whose details hold the attempt (the workflow decides whether to retry)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: input.delivery_id,
        EVENT_HEADER: input.event,
        SIGNATURE_HEADER: signature(input.secret, int(time.time()), input.body),
    }
    try:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS, follow_redirects=False) as http:
            answer = await http.post(input.url, content=input.body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        attempt = CallbackAttempt(at=time.time(), error=error)
        raise ApplicationError(f"callback to {input.url} failed: {error}", attempt.model_dump(), type=CALLBACK_UNREACHABLE, non_retryable=True) from None
    if 200 <= answer.status_code < 300:
        return CallbackAttempt(at=time.time(), status=answer.status_code)
    attempt = CallbackAttempt(at=time.time(), status=answer.status_code, error=f"the receiver answered {answer.status_code}")
    raise ApplicationError(
        f"callback to {input.url}: the receiver answered {answer.status_code}", attempt.model_dump(), type=CALLBACK_REFUSED, non_retryable=True
    )
