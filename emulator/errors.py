"""OpenAI-shaped API errors: every failure leaves the server as
``{"error": {"message", "type", "param", "code"}}`` with the status OpenAI used."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(kind: str, object_id: str) -> APIError:
    # OpenAI's wording, e.g. "No thread found with id 'thread_abc'."
    return APIError(404, f"No {kind} found with id '{object_id}'.")


def server_error(message: str = "The server had an error while processing your request. Sorry about that!") -> APIError:
    return APIError(500, message, type="server_error")


def rate_limited(retry_after_ms: int | None) -> APIError:
    headers: dict[str, str] = {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
        headers["retry-after"] = str(max(1, -(-retry_after_ms // 1000)))
    return APIError(
        429,
        "Rate limit reached for requests (injected by the emulator).",
        type="requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


class ConnectionDropped(Exception):
    """Raised to make the server close a connection on purpose (a fault: ``drop``, ``cut``)."""


def model_not_found(model: str, param: str = "model") -> APIError:
    # OpenAI's answer to an unknown model on assistants, runs and responses alike.
    return APIError(400, f"The requested model '{model}' does not exist.", param=param, code="model_not_found")
