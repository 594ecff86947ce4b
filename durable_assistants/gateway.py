"""The HTTP gateway: enqueue and follow runs over HTTP, for services with no Temporal client.

    durable-assistants gateway --port 8080              # tokens from DA_GATEWAY_TOKENS(_FILE)
    durable-assistants gateway-token web --assistant asst_123   # a new token and its entry

Routes (JSON in and out; every error is ``{"error": {"type", "message", "param"}}``):

=========================  =================================================================
``POST /v1/runs``          enqueue a run: the body is a ``RunRequest``; ``Idempotency-Key``
                           is its request ID (the same key and body: the same run; the same
                           key and another body: 409)
``GET /v1/runs``           list runs (``assistant_id``, ``thread_id``, ``status``, ``limit``)
``GET /v1/runs/{id}``      a run's status, and its ``RunResult`` once it has ended
``POST /v1/runs/{id}/cancel``  cancel it
``GET /v1/runs/{id}/events``   its progress as server-sent events, resumable (``Last-Event-ID``)
``GET /openapi.json``      this API's OpenAPI document (also ``schemas/gateway-openapi.json``)
``GET /healthz``           liveness, no token needed
=========================  =================================================================

Authentication: ``Authorization: Bearer <token>``. Tokens are configured by their SHA-256
(never in the clear), each with a name and the assistants it may use (``"*"``: any, also runs
with no assistant, on the Responses API by model). A token scoped to assistants enqueues only
for them and sees only their runs; a run still waiting in its thread's queue does not say
whose it is yet, so such a token sees only that it is queued. See docs/gateway.md.

Why one module of about 490 lines: one HTTP service: its routes, the token check and the
error mapping each route relies on, the event stream and the OpenAPI document built from the
same route table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from durable_assistants.client import (
    IdempotencyConflictError,
    QueueBusyError,
    QueueFullError,
    RunFailedError,
    RunHandle,
    RunNotFoundError,
    check_request_id,
    enqueue_run,
    get_run,
)
from durable_assistants.listing import RunFilter, attribute, list_runs
from durable_assistants.settings import json_setting
from durable_assistants.workflows.models import DEFAULT_TASK_QUEUE, LiveSnapshot, ProgressEvent, RunRequest, RunResult

TOKENS_VARIABLE = "DA_GATEWAY_TOKENS"
TOKENS_FILE_VARIABLE = "DA_GATEWAY_TOKENS_FILE"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_LIST = 100
# An idle event stream gets a comment this often, so proxies keep it open.
KEEPALIVE_SECONDS = 15.0
# A cancel of a run that still waits for its turn would wait for that turn; the gateway waits
# this long at most and then says so (409), so no request hangs.
CANCEL_WAIT_SECONDS = 5.0
ANY = "*"
# Segments pydantic adds to an error's location for the member of a union it tried.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list|dict|none|.*\[.*\]|function-.*|tagged-union.*)$")


class GatewayToken(BaseModel):
    """One bearer token, by the SHA-256 of its text."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Who holds it (logs and errors name it).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token's text")
    assistants: list[str] = Field(min_length=1, description='Assistant IDs it may use; "*" for any.')

    def allows(self, assistant_id: str | None) -> bool:
        return ANY in self.assistants or (assistant_id is not None and assistant_id in self.assistants)

    @property
    def scoped(self) -> bool:
        return ANY not in self.assistants


class GatewayConfigError(ValueError):
    """The token configuration cannot be used; the message names the variable and the field."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, assistants: list[str]) -> tuple[str, GatewayToken]:
    """A fresh random token and its configuration entry."""
    text = "dag_" + secrets.token_urlsafe(32)
    return text, GatewayToken(name=name, sha256=hash_token(text), assistants=assistants)


def load_tokens(environ: dict[str, str] | None = None) -> list[GatewayToken]:
    """The tokens of ``DA_GATEWAY_TOKENS`` (a JSON list) or ``DA_GATEWAY_TOKENS_FILE``."""
    text, where = json_setting(environ, TOKENS_VARIABLE, TOKENS_FILE_VARIABLE, GatewayConfigError)
    if not text:
        raise GatewayConfigError(
            f"no tokens: set {TOKENS_VARIABLE} or {TOKENS_FILE_VARIABLE} "
            "(make one with: durable-assistants gateway-token NAME --assistant ID)"
        )
    try:
        tokens = pydantic.TypeAdapter(list[GatewayToken]).validate_json(text)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        at = ".".join(str(p) for p in first["loc"])
        raise GatewayConfigError(f"{where} is not a list of tokens: [{at}] {first['msg']}") from None
    if not tokens:
        raise GatewayConfigError(f"{where} holds no token")
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise GatewayConfigError(f"{where}: token names must differ (found {sorted({n for n in names if names.count(n) > 1})})")
    return tokens


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.param, self.headers = status, kind, message, param, headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"type": self.kind, "message": self.message, "param": self.param}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class RunAccepted(BaseModel):
    id: str = Field(description="The run's workflow ID: the {id} of the other routes.")
    request_id: str | None = Field(description="The Idempotency-Key it was enqueued with, if any.")
    queued_behind: int | None = Field(None, description="Runs ahead of it on its thread or conversation, when it waits for its turn.")
    duplicate: bool = Field(False, description="True when the key was seen before with the same request: this is that run.")


class RunStatusBody(BaseModel):
    id: str
    status: str = Field(
        description="queued while it waits for its turn; then the run's status; at the end completed, incomplete, failed, expired or cancelled."
    )
    done: bool
    assistant_id: str | None = None
    result: RunResult | None = Field(None, description="Once it has ended (failed without a result: null, see error).")
    snapshot: LiveSnapshot | None = Field(None, description="While it runs.")
    error: str | None = Field(None, description="Why it failed, when it failed without a result.")


class RunList(BaseModel):
    data: list[dict[str, Any]]


class Gateway:
    def __init__(self, client: Client, tokens: list[GatewayToken], task_queue: str = DEFAULT_TASK_QUEUE, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.client = client
        self.tokens = tokens
        self.task_queue = task_queue
        self.max_body_bytes = max_body_bytes

    # --------------------------------------------------------------------- plumbing

    def authenticate(self, request: Request) -> GatewayToken:
        header = request.headers.get("authorization", "")
        scheme, _, text = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="durable-assistants"'}
        if scheme.lower() != "bearer" or not text.strip():
            raise ApiError(401, "unauthorized", "missing bearer token: send Authorization: Bearer <token>", headers=challenge)
        digest = hash_token(text.strip())
        for token in self.tokens:
            if hmac.compare_digest(token.sha256, digest):
                return token
        raise ApiError(401, "unauthorized", "the bearer token is not valid", headers=challenge)

    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ApiError(413, "request_too_large", f"the body is {int(declared)} bytes; the limit is {self.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ApiError(413, "request_too_large", f"the body is over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def visible_run(self, token: GatewayToken, workflow_id: str, *, queued: bool = False) -> tuple[RunHandle, Any, str | None]:
        """The run's handle, its server description (None while it waits in its queue) and its
        assistant, if ``token`` may see it. A queued run does not say its assistant yet: a scoped
        token may see it only where ``queued`` allows (that it is queued, no more)."""
        handle = get_run(self.client, workflow_id)
        try:
            description = await handle.describe()
        except RunNotFoundError:
            raise ApiError(404, "not_found", f"no run {workflow_id!r}", param="id") from None
        if description is None:
            if token.scoped and not queued:
                why = f"run {workflow_id!r} waits in its queue and does not say its assistant yet; token {token.name!r} may see only its assistants' runs"
                raise ApiError(403, "forbidden", why, param="id")
            return handle, None, None
        assistant = attribute(description.typed_search_attributes, "AssistantId")
        if token.scoped and not token.allows(assistant):
            raise ApiError(404, "not_found", f"no run {workflow_id!r}", param="id")  # not even that it exists
        return handle, description, assistant

    # --------------------------------------------------------------------- routes

    async def create_run(self, request: Request) -> Response:
        token = self.authenticate(request)
        raw = await self.body(request)
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", f"the body must be a JSON object (a RunRequest), got {type(body).__name__}")
        try:
            run_request = RunRequest.model_validate(body)
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            param = ".".join(str(p) for p in first["loc"] if not _UNION_MEMBER.match(str(p))) or None
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ApiError(400, "invalid_request", f"{param or 'body'}: {first['msg']}{more}", param=param) from None
        if not token.allows(run_request.assistant_id):
            what = f"assistant {run_request.assistant_id!r}" if run_request.assistant_id else "runs without an assistant"
            raise ApiError(403, "forbidden", f"token {token.name!r} may not use {what}", param="assistant_id")
        key = request.headers.get("idempotency-key")
        if key is not None:
            try:
                check_request_id(key)
            except ValueError as exc:
                raise ApiError(400, "invalid_request", f"Idempotency-Key {exc}", param="Idempotency-Key") from None
        try:
            handle = await enqueue_run(self.client, run_request, request_id=key, task_queue=self.task_queue)
        except IdempotencyConflictError as exc:
            raise ApiError(409, "idempotency_conflict", str(exc).removeprefix("enqueue_run: "), param="Idempotency-Key") from None
        except QueueFullError as exc:
            raise ApiError(429, "queue_full", str(exc), param="thread_id") from None
        except QueueBusyError as exc:
            raise ApiError(503, "queue_busy", str(exc), param="thread_id", headers={"Retry-After": "1"}) from None
        except ValueError as exc:
            raise ApiError(400, "invalid_request", str(exc).removeprefix("enqueue_run: ")) from None
        receipt = handle.receipt
        accepted = RunAccepted(
            id=handle.workflow_id,
            request_id=key,
            queued_behind=receipt.position if receipt is not None and receipt.position else None,
            duplicate=bool(receipt and receipt.duplicate),
        )
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/runs/{handle.workflow_id}"})

    async def get_run(self, request: Request) -> Response:
        token = self.authenticate(request)
        workflow_id = request.path_params["id"]
        handle, description, assistant = await self.visible_run(token, workflow_id, queued=True)
        if description is None:
            return JSONResponse(RunStatusBody(id=workflow_id, status="queued", done=False).model_dump(mode="json"))
        body = RunStatusBody(id=workflow_id, status="running", done=False, assistant_id=assistant)
        if description.status == WorkflowExecutionStatus.RUNNING:
            status = await handle.status(description)
            if isinstance(status, LiveSnapshot):
                body.snapshot, body.status = status, status.status or "running"
        else:
            body.done = True
            try:
                body.result = await handle.result()
                body.status = body.result.status
            except RunFailedError as exc:
                body.status, body.error = "failed", exc.reason
        return JSONResponse(body.model_dump(mode="json"))

    async def cancel_run(self, request: Request) -> Response:
        token = self.authenticate(request)
        workflow_id = request.path_params["id"]
        handle, description, _ = await self.visible_run(token, workflow_id)
        if description is not None and description.status != WorkflowExecutionStatus.RUNNING:
            raise ApiError(409, "run_ended", f"run {workflow_id!r} has already ended ({description.status.name.lower()})", param="id")
        try:
            polled = await asyncio.wait_for(handle.cancel(), CANCEL_WAIT_SECONDS)
        except TimeoutError:
            raise ApiError(409, "run_queued", f"run {workflow_id!r} still waits for its turn; cancel it once it has started", param="id") from None
        return JSONResponse({"id": workflow_id, "cancel_requested": True, "worker_polling": polled}, status_code=202)

    async def list_runs(self, request: Request) -> Response:
        token = self.authenticate(request)
        query = request.query_params
        unknown = sorted(set(query) - {"assistant_id", "thread_id", "status", "limit"})
        if unknown:
            raise ApiError(400, "invalid_request", f"unknown query parameter {unknown[0]!r}", param=unknown[0])
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise ApiError(400, "invalid_request", f"limit must be an integer, got {query['limit']!r}", param="limit") from None
        if not 1 <= limit <= MAX_LIST:
            raise ApiError(400, "invalid_request", f"limit must be 1 to {MAX_LIST}, got {limit}", param="limit")
        assistant = query.get("assistant_id")
        if assistant is not None and not token.allows(assistant):
            raise ApiError(403, "forbidden", f"token {token.name!r} may not use assistant {assistant!r}", param="assistant_id")
        found = RunFilter(
            assistant=assistant, thread=query.get("thread_id"), status=query.get("status"),
            assistants=token.assistants if token.scoped and assistant is None else None,
        )
        try:
            rows = await list_runs(self.client, found, limit)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        return JSONResponse(RunList(data=rows).model_dump(mode="json"))

    async def events(self, request: Request) -> Response:
        token = self.authenticate(request)
        workflow_id = request.path_params["id"]
        handle, _, _ = await self.visible_run(token, workflow_id)
        resume = request.headers.get("last-event-id") or request.query_params.get("after")
        start = 0
        if resume is not None:
            if not resume.isdigit():
                raise ApiError(400, "invalid_request", f"Last-Event-ID must be an event's id (a number), got {resume!r}", param="Last-Event-ID")
            start = int(resume) + 1
        # sse-starlette: the framing, a keep-alive comment every KEEPALIVE_SECONDS, the headers
        # proxies need not to buffer the stream, and streams that end when uvicorn shuts down
        # (so a gateway with followers connected still stops within its grace period).
        return EventSourceResponse(
            self._event_stream(handle, start), ping=KEEPALIVE_SECONDS, sep="\n", headers={"Cache-Control": "no-cache"},
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        )

    async def _event_stream(self, handle: Any, start: int) -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(comment=f"stream of run {handle.workflow_id}", sep="\n")
        async with contextlib.aclosing(handle.progress_items(start)) as items:
            async for offset, event in items:
                yield ServerSentEvent(id=str(offset), event=event.kind, data=event.model_dump_json(exclude_none=True), sep="\n")
        yield ServerSentEvent(event="end", data=json.dumps(await self._outcome(handle)), sep="\n")

    async def _outcome(self, handle: Any) -> dict[str, Any]:
        try:
            result = await handle.result(cost=False)
            return {"status": result.status}
        except RunFailedError as exc:
            return {"status": "failed", "error": exc.reason}

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


def build_app(gateway: Gateway) -> Starlette:
    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return exc.response()
            except RPCError as exc:
                return ApiError(503, "temporal_unavailable", f"Temporal did not answer: {exc.message}").response()

        return endpoint

    routes = [
        Route("/v1/runs", guarded(gateway.create_run), methods=["POST"]),
        Route("/v1/runs", guarded(gateway.list_runs), methods=["GET"]),
        Route("/v1/runs/{id:path}/cancel", guarded(gateway.cancel_run), methods=["POST"]),
        Route("/v1/runs/{id:path}/events", guarded(gateway.events), methods=["GET"]),
        Route("/v1/runs/{id:path}", guarded(gateway.get_run), methods=["GET"]),
        Route("/openapi.json", gateway.openapi, methods=["GET"]),
        Route("/healthz", gateway.health, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            kind, message = "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
        else:
            kind, message = "not_found", f"no route {request.method} {request.url.path}"
        return ApiError(status, kind, message).response()

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


# ------------------------------------------------------------------------- OpenAPI


@functools.cache
def openapi_document() -> dict[str, Any]:
    """This API's OpenAPI 3.1 document, its schemas from the same models as ``schemas/``
    (built once per process: /openapi.json serves it as it is)."""
    from pydantic.json_schema import models_json_schema

    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (RunRequest, "validation"), (RunAccepted, "serialization"), (RunStatusBody, "serialization"), (RunList, "serialization"),
        (ProgressEvent, "serialization"),
    ]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = dict(defs.get("$defs", {}))
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["type", "message", "param"], "properties": {
            "type": {"type": "string"}, "message": {"type": "string"}, "param": {"type": ["string", "null"]}}}},
    }

    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(description: str, name: str | None = None, media: str = "application/json") -> dict[str, Any]:
        body: dict[str, Any] = {"description": description}
        if name is not None:
            body["content"] = {media: {"schema": ref(name)}}
        return body

    errors = {str(code): answer(text, "Error") for code, text in (
        (400, "the request is not valid; the message names the field"), (401, "no token, or not a valid one"),
        (403, "the token may not use this assistant"), (404, "no such run (or not one this token may see)"),
        (503, "Temporal did not answer"),
    )}
    run_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "The run's workflow ID."}
    paths = {
        "/v1/runs": {
            "post": {
                "summary": "Enqueue a run",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 200},
                                "description": "The run's request ID: the same key with the same body is the same run; with another body, 409."}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref("RunRequest")}}},
                "responses": {"202": answer("enqueued", "RunAccepted"), **errors,
                              "409": answer("the Idempotency-Key was used for another request", "Error"),
                              "413": answer("the body is over the size limit", "Error"),
                              "429": answer("the thread's queue is full", "Error")},
            },
            "get": {
                "summary": "List runs",
                "parameters": [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (
                    ("assistant_id", {"type": "string"}), ("thread_id", {"type": "string"}), ("status", {"type": "string"}),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 20}))],
                "responses": {"200": answer("runs, queued ones first", "RunList"), **errors},
            },
        },
        "/v1/runs/{id}": {"get": {"summary": "A run's status and, once it has ended, its result", "parameters": [run_id],
                                  "responses": {"200": answer("the run", "RunStatusBody"), **errors}}},
        "/v1/runs/{id}/cancel": {"post": {"summary": "Cancel a run", "parameters": [run_id], "responses": {
            "202": {"description": "cancel requested"}, **errors, "409": answer("the run has ended, or still waits for its turn", "Error")}}},
        "/v1/runs/{id}/events": {"get": {
            "summary": "The run's progress as server-sent events (id: offset; event: the ProgressEvent's kind; a last event 'end')",
            "parameters": [run_id, {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                                    "description": "Resume after this event."}],
            "responses": {
                "200": {"description": "a text/event-stream of ProgressEvent", "content": {"text/event-stream": {"schema": ref("ProgressEvent")}}},
                **errors,
            }}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "durable-assistants gateway", "version": "1"},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


async def serve(client: Client, tokens: list[GatewayToken], host: str, port: int, task_queue: str, max_body_bytes: int) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn stops gracefully on both)."""
    import uvicorn

    app = build_app(Gateway(client, tokens, task_queue, max_body_bytes))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    await uvicorn.Server(config).serve()
