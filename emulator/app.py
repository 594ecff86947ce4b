"""The emulator's HTTP surface: the Assistants v2 API, the Responses API and the
Conversations API under ``/v1``, and the admin API under ``/_emulator``. Handlers are thin:
validate with the SDK's parameter types, call the engine, render with the SDK's response types."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_assistants.emulator.config import EmulatorConfig
from durable_assistants.emulator.engine import AssistantsEngine
from durable_assistants.emulator.errors import APIError, ConnectionDropped, bad_request, rate_limited, server_error
from durable_assistants.emulator.faults import FaultInjector, FaultRule
from durable_assistants.emulator.http import (
    Handler,
    error_response,
)
from durable_assistants.emulator.ids import IdFactory
from durable_assistants.emulator.responses import ResponsesEngine
from durable_assistants.emulator.responses_sse import ResponseEventStream
from durable_assistants.emulator.routes_admin import (
    admin_add_fault,
    admin_clear_faults,
    admin_delete_fault,
    admin_delete_prompt,
    admin_delete_scenario,
    admin_get_config,
    admin_health,
    admin_list_faults,
    admin_list_prompts,
    admin_list_scenarios,
    admin_patch_config,
    admin_put_prompt,
    admin_put_scenario,
    admin_reset,
    admin_stats,
)
from durable_assistants.emulator.routes_assistants import (
    cancel_run,
    create_assistant,
    create_message,
    create_run,
    create_thread,
    create_thread_and_run,
    delete_assistant,
    delete_message,
    delete_thread,
    list_assistants,
    list_messages,
    list_runs,
    list_steps,
    retrieve_assistant,
    retrieve_message,
    retrieve_run,
    retrieve_step,
    retrieve_thread,
    submit_tool_outputs,
    update_assistant,
    update_message,
    update_run,
    update_thread,
)
from durable_assistants.emulator.routes_responses import (
    cancel_response,
    create_conversation,
    create_items,
    create_response,
    delete_conversation,
    delete_item,
    delete_response,
    list_input_items,
    list_items,
    retrieve_conversation,
    retrieve_item,
    retrieve_response,
    update_conversation,
)
from durable_assistants.emulator.sse import RunEventStream
from durable_assistants.emulator.stats import Stats

log = logging.getLogger("emulator")


class Emulator:
    """One emulator instance: its state, counters, faults and the ASGI app serving them."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.stats = Stats()
        self.faults = FaultInjector(self.config.seed)
        self.engine = AssistantsEngine(self.config, self.stats, IdFactory(self.config.seed))
        # One ID sequence, one scripted model and one set of scenarios for both API surfaces.
        self.responses = ResponsesEngine(self.config, self.stats, self.engine.ids, self.engine.model, self.engine.scenarios)
        self.operations = OPERATIONS  # what a fault rule may name
        self.app = build_app(self)

    async def reset(self) -> None:
        await self.engine.reset()
        await self.responses.reset()
        self.faults.clear()
        self.stats.reset()



# ---------------------------------------------------------------------------- wiring

API_ROUTES: list[tuple[str, str, str, Handler]] = [
    ("POST", "/v1/assistants", "assistants.create", create_assistant),
    ("GET", "/v1/assistants", "assistants.list", list_assistants),
    ("GET", "/v1/assistants/{assistant_id}", "assistants.retrieve", retrieve_assistant),
    ("POST", "/v1/assistants/{assistant_id}", "assistants.update", update_assistant),
    ("DELETE", "/v1/assistants/{assistant_id}", "assistants.delete", delete_assistant),
    ("POST", "/v1/threads", "threads.create", create_thread),
    ("POST", "/v1/threads/runs", "threads.create_and_run", create_thread_and_run),
    ("GET", "/v1/threads/{thread_id}", "threads.retrieve", retrieve_thread),
    ("POST", "/v1/threads/{thread_id}", "threads.update", update_thread),
    ("DELETE", "/v1/threads/{thread_id}", "threads.delete", delete_thread),
    ("POST", "/v1/threads/{thread_id}/messages", "messages.create", create_message),
    ("GET", "/v1/threads/{thread_id}/messages", "messages.list", list_messages),
    ("GET", "/v1/threads/{thread_id}/messages/{message_id}", "messages.retrieve", retrieve_message),
    ("POST", "/v1/threads/{thread_id}/messages/{message_id}", "messages.update", update_message),
    ("DELETE", "/v1/threads/{thread_id}/messages/{message_id}", "messages.delete", delete_message),
    ("POST", "/v1/threads/{thread_id}/runs", "runs.create", create_run),
    ("GET", "/v1/threads/{thread_id}/runs", "runs.list", list_runs),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}", "runs.retrieve", retrieve_run),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}", "runs.update", update_run),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}/cancel", "runs.cancel", cancel_run),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", "runs.submit_tool_outputs", submit_tool_outputs),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}/steps", "steps.list", list_steps),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}", "steps.retrieve", retrieve_step),
    ("POST", "/v1/responses", "responses.create", create_response),
    ("GET", "/v1/responses/{response_id}", "responses.retrieve", retrieve_response),
    ("DELETE", "/v1/responses/{response_id}", "responses.delete", delete_response),
    ("POST", "/v1/responses/{response_id}/cancel", "responses.cancel", cancel_response),
    ("GET", "/v1/responses/{response_id}/input_items", "responses.input_items.list", list_input_items),
    ("POST", "/v1/conversations", "conversations.create", create_conversation),
    ("GET", "/v1/conversations/{conversation_id}", "conversations.retrieve", retrieve_conversation),
    ("POST", "/v1/conversations/{conversation_id}", "conversations.update", update_conversation),
    ("DELETE", "/v1/conversations/{conversation_id}", "conversations.delete", delete_conversation),
    ("POST", "/v1/conversations/{conversation_id}/items", "conversations.items.create", create_items),
    ("GET", "/v1/conversations/{conversation_id}/items", "conversations.items.list", list_items),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}", "conversations.items.retrieve", retrieve_item),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}", "conversations.items.delete", delete_item),
]
OPERATIONS = frozenset(op for _, _, op, _ in API_ROUTES)

ADMIN_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/_emulator/health", admin_health),
    ("GET", "/_emulator/stats", admin_stats),
    ("POST", "/_emulator/reset", admin_reset),
    ("GET", "/_emulator/config", admin_get_config),
    ("PATCH", "/_emulator/config", admin_patch_config),
    ("GET", "/_emulator/faults", admin_list_faults),
    ("POST", "/_emulator/faults", admin_add_fault),
    ("DELETE", "/_emulator/faults", admin_clear_faults),
    ("DELETE", "/_emulator/faults/{fault_id}", admin_delete_fault),
    ("GET", "/_emulator/scenarios", admin_list_scenarios),
    ("PUT", "/_emulator/scenarios/{name}", admin_put_scenario),
    ("DELETE", "/_emulator/scenarios/{name}", admin_delete_scenario),
    ("GET", "/_emulator/prompts", admin_list_prompts),
    ("PUT", "/_emulator/prompts/{prompt_id}", admin_put_prompt),
    ("DELETE", "/_emulator/prompts/{prompt_id}", admin_delete_prompt),
]


def api_endpoint(emu: Emulator, operation: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with what every API call gets: counting, faults, OpenAI-shaped errors."""

    async def endpoint(request: Request) -> Response:
        emu.stats.request(operation)
        rule = emu.faults.pick(operation)
        if rule is not None:
            emu.stats.faults_fired[operation] += 1
        if rule is not None and rule.when == "before" and rule.action != "cut":
            spoiled = await _apply_fault(rule, emu.faults)
            if spoiled is not None:
                emu.stats.response(operation, _outcome(spoiled))
                return spoiled
        try:
            response = await handler(request, emu)
        except APIError as exc:
            response = error_response(exc)
        if rule is not None and rule.action == "cut":
            # Let the stream begin, then break its connection after `after_events` events.
            if isinstance(response, (RunEventStream, ResponseEventStream)):
                response.cut_after(rule.after_events)
            else:
                response = DroppedConnection()
        elif rule is not None and rule.when == "after":
            spoiled = await _apply_fault(rule, emu.faults)
            if spoiled is not None:
                if isinstance(response, (RunEventStream, ResponseEventStream)):
                    response.discard()
                response = spoiled
        emu.stats.response(operation, _outcome(response))
        return response

    return endpoint


def _outcome(response: Response) -> str:
    return "dropped" if isinstance(response, DroppedConnection) else str(response.status_code)


def admin_endpoint(emu: Emulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, emu)
        except APIError as exc:
            return error_response(exc)

    return endpoint


async def _apply_fault(rule: FaultRule, faults: FaultInjector) -> Response | None:
    if rule.action == "delay":
        return None if await faults.hold(rule.delay_seconds) else DroppedConnection()
    if rule.action == "drop":
        return DroppedConnection()
    if rule.status == 429:
        return error_response(rate_limited(rule.retry_after_ms))
    error = server_error() if rule.status >= 500 else bad_request("Error injected by the emulator.")
    error.status = rule.status
    if rule.retry_after_ms is not None:
        error.headers["retry-after-ms"] = str(rule.retry_after_ms)
    return error_response(error)


class DroppedConnection(Response):
    """Starts a response and breaks the connection mid-body: the client sees a dropped
    connection (the SDK raises ``APIConnectionError``), not an HTTP status."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
        raise ConnectionDropped


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


# The API version OpenAI sent in `openai-version` on every answer.
OPENAI_VERSION = b"2020-10-01"


class ApiMiddleware:
    """``x-request-id``, ``openai-version`` and ``openai-processing-ms`` (the time to the first
    byte of the answer) on every response, as OpenAI sent them; the API key check; and a
    last-resort 500 that is OpenAI-shaped and logged, never a traceback sent to the client."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.emulator.engine.ids.request_id()
        begun = time.perf_counter()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                elapsed = max(1, round((time.perf_counter() - begun) * 1000))
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"openai-version", OPENAI_VERSION),
                    (b"openai-processing-ms", str(elapsed).encode()),
                ]
            await send(message)

        denial = self._check_key(scope)
        if denial is not None:
            await error_response(denial)(scope, receive, send_with_id)
            return
        try:
            await self.app(scope, receive, send_with_id)
        except ConnectionDropped:
            raise  # uvicorn closes the connection; the filter keeps this out of the log
        except Exception:
            # Starlette has already sent the OpenAI-shaped 500 (see `_internal_error`);
            # log once here instead of letting uvicorn log it again.
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await error_response(server_error())(scope, receive, send_with_id)

    def _check_key(self, scope: Scope) -> APIError | None:
        expected = self.emulator.config.api_key
        if expected is None or not scope["path"].startswith("/v1/"):
            return None
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if not auth:
            return APIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        token = auth.removeprefix("Bearer ").strip()
        if token != expected:
            shown = f"{token[:3]}***{token[-4:]}" if len(token) > 8 else "***"
            return APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
        return None


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(server_error())


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        return error_response(APIError(405, f"Method {request.method} is not allowed for {request.url.path}."))
    return error_response(APIError(404, f"Invalid URL ({request.method} {request.url.path})"))


def build_app(emu: Emulator) -> ASGIApp:
    routes = [
        Route(path, api_endpoint(emu, op, handler), methods=[method], name=op)
        for method, path, op, handler in API_ROUTES
    ]
    routes += [Route(path, admin_endpoint(emu, handler), methods=[method]) for method, path, handler in ADMIN_ROUTES]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        yield
        await emu.engine.shutdown()
        await emu.responses.shutdown()

    app = Starlette(routes=routes, exception_handlers={HTTPException: _not_found, Exception: _internal_error}, lifespan=lifespan)
    return ApiMiddleware(app, emu)
