"""One place that decides what a model-API error means to Temporal.

408, 429 (but not ``insufficient_quota``), ≥500, timeouts and connection errors are retryable, with the server's
``retry-after-ms`` / ``retry-after`` as the next retry delay. Every other 4xx (400, 401,
403, 404, 409, 422, ...) is a non-retryable ``ApplicationError`` carrying the API's message
and request ID: retrying a bad request only repeats it. The recoverable 4xx cases (a
conversation busy with another response, a submit the run already moved past) are handled
where they happen, by the backends, before they get here. The SDK retries 409; we don't:
a conflict that a retry could settle is one of those documented cases, anything else would
only be repeated for the whole retry budget.
"""

from __future__ import annotations

import email.utils
import time
from datetime import timedelta

import openai
from temporalio.exceptions import ApplicationError

from durable_assistants.workflows import metrics

RETRYABLE_STATUSES = frozenset({408, 429})
PERMANENT_CODES = frozenset({"insufficient_quota"})
MAX_RETRY_AFTER = timedelta(minutes=5)


def retry_after(headers: object) -> timedelta | None:
    """The delay a response asks for, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    value = get("retry-after-ms")
    try:
        if value is not None:
            return min(timedelta(milliseconds=float(value)), MAX_RETRY_AFTER)
    except ValueError:
        pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return min(timedelta(seconds=float(value)), MAX_RETRY_AFTER)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return min(timedelta(seconds=max(0.0, parsed.timestamp() - time.time())), MAX_RETRY_AFTER)


def api_message(exc: openai.APIStatusError) -> str:
    """The API's own message for an error answer (its body's ``message``, else the SDK's)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    return body["message"] if isinstance(body.get("message"), str) else exc.message


def to_temporal_error(exc: openai.OpenAIError, what: str) -> ApplicationError:
    """``what`` says which call failed, e.g. ``create run on thread_abc``."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        request_id = exc.request_id or "none"
        message = f"{what}: HTTP {status} {api_message(exc)} (request ID {request_id})"
        # A 429 for an exhausted quota is not a rate limit: waiting won't bring the money back.
        retryable = (status in RETRYABLE_STATUSES or status >= 500) and exc.code not in PERMANENT_CODES
        metrics.model_api_error(str(status), retryable)
        return ApplicationError(
            message,
            {"status": status, "request_id": exc.request_id, "code": exc.code, "param": exc.param},
            type=f"ModelApi{status}",
            non_retryable=not retryable,
            next_retry_delay=retry_after(exc.response.headers) if retryable else None,
        )
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
        metrics.model_api_error("connection", True)
        return ApplicationError(f"{what}: {type(exc).__name__}: {exc}", type="ModelApiConnection")
    metrics.model_api_error("other", False)
    return ApplicationError(f"{what}: {type(exc).__name__}: {exc}", type="ModelApiError", non_retryable=True)


def refused_by_sdk(exc: ValueError | TypeError, what: str) -> ApplicationError:
    """The SDK refused the call before sending it (e.g. "Expected a non-empty value for
    `thread_id`"): the same arguments will be refused on every retry."""
    return ApplicationError(f"{what}: {exc}", type="InvalidModelApiCall", non_retryable=True)
