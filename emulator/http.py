"""What every route of the emulator shares: JSON and error responses, reading a request's body
and query (list pagination, flags, integers), the sampling checks, the polling hint."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from durable_assistants.emulator.engine import TERMINAL_STATUSES, RunState, dump
from durable_assistants.emulator.errors import APIError, bad_request
from durable_assistants.emulator.pagination import ListQuery
from durable_assistants.emulator.validation import check_positive, check_range, parse_json_body, validate_params

if TYPE_CHECKING:
    from durable_assistants.emulator.app import Emulator

log = logging.getLogger("emulator")

Handler = Callable[[Request, "Emulator"], Awaitable[Response]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(error: APIError) -> JSONResponse:
    return json_response(error.body(), error.status, error.headers)


# ---------------------------------------------------------------------------- request helpers


async def body_of(request: Request, params_type: Any, **path: str) -> dict[str, Any]:
    return validate_params(params_type, parse_json_body(await request.body()), path=path)


def list_query(request: Request) -> ListQuery:
    try:
        return ListQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = str(error["loc"][0])
        raise bad_request(
            f"Invalid '{name}': {error['msg']}, got {error.get('input')!r}.", param=name, code="invalid_value"
        ) from None


def query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.lower() in ("false", "0"):
        return False
    if raw.lower() in ("true", "1"):
        return True
    raise bad_request(f"Invalid value for '{name}': expected a boolean, got {raw!r}.", param=name, code="invalid_type")


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"Invalid value for '{name}': expected an integer, got {raw!r}.", param=name, code="invalid_type") from None


def check_sampling(params: dict[str, Any], emu: Emulator) -> None:
    check_range(params, "temperature", 0, 2)
    check_range(params, "top_p", 0, 1)
    check_positive(params, "max_prompt_tokens", 256)
    # The spec says at least 256; the service took less (16 ended the run `incomplete`).
    check_positive(params, "max_completion_tokens", 256 if emu.config.strict_spec else 1)


def poll_after_headers(emulator: Emulator) -> dict[str, str]:
    """The pacing hint on reads of an unfinished run or response (none under compat.no_poll_after_header)."""
    if emulator.config.compat.no_poll_after_header:
        return {}
    return {"openai-poll-after-ms": str(emulator.config.poll_after_ms)}


def run_response(emulator: Emulator, run_state: RunState, *, read: bool = False) -> JSONResponse:
    headers = {}
    if read and run_state.run.status not in TERMINAL_STATUSES:
        headers = poll_after_headers(emulator)
    return json_response(dump(run_state.run), headers=headers)


