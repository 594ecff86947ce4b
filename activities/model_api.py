"""Model-API activities: create the thread, start the run, submit a round's outputs, cancel.

Each waits inside the activity (polling or streaming, heartbeating as it goes) and returns a
compact ``RunSnapshot``, so a run costs one activity per step of the loop, not one per poll.
"""

from __future__ import annotations

from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.exceptions import ApplicationError

from tools import ToolPolicy, ToolRegistry
from workflows.models import Backend, RunRequest, RunSnapshot

from workflows.search_attributes import SEARCH_ATTRIBUTE_TYPES

from .backend import ModelBackend, TurnIO
from .progress import ProgressPublisher


class CreateThreadInput(BaseModel):
    request: RunRequest
    key: str


class StartInput(BaseModel):
    request: RunRequest
    thread_id: str | None
    key: str
    add_messages: bool


class StartResult(BaseModel):
    snapshot: RunSnapshot
    tools: dict[str, ToolPolicy]
    search_attributes: bool = Field(
        False, description="Whether the namespace has the project's search attributes, so the workflow may upsert them."
    )


class ToolOutput(BaseModel):
    tool_call_id: str
    output: str


class SubmitInput(BaseModel):
    snapshot: RunSnapshot
    outputs: list[ToolOutput]
    mode: Literal["poll", "stream"] = "poll"
    request: RunRequest | None = Field(
        None, description="Responses: the turn settings (model, instructions, tools) each new response repeats."
    )


class CancelInput(BaseModel):
    thread_id: str | None
    run_id: str
    backend: Backend = "assistants"


log = structlog.get_logger("model_api")


def _heartbeat(details: dict[str, Any]) -> None:
    activity.heartbeat(details)


def _io(progress: ProgressPublisher | None = None) -> TurnIO:
    """Heartbeats, text deltas, and what the previous attempt of this activity recorded."""
    details = activity.info().heartbeat_details
    recalled = details[0] if details and isinstance(details[0], dict) else {}
    return TurnIO(
        key=activity.info().workflow_id,
        attempt=activity.info().attempt,
        heartbeat=_heartbeat,
        on_text=(lambda delta: progress.publish("text", text=delta)) if progress is not None else (lambda delta: None),
        recalled=dict(recalled),
    )


def _bind(**ids: str | None) -> None:
    info = activity.info()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(workflow_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt, **ids)


def _ended(snapshot: RunSnapshot) -> RunSnapshot:
    log.info("run is waiting for tools" if snapshot.status == "requires_action" else "run ended",
             run_id=snapshot.run_id, status=snapshot.status, tool_calls=len(snapshot.tool_calls))
    return snapshot


class ModelActivities:
    """The model APIs, each behind its backend. Built once by the worker, with its dependencies.

    A request names its API (``backend``, or fields only one API has); the others go to the
    worker's ``default_backend``. Snapshots carry their backend, so later steps use the same one.
    """

    def __init__(self, backends: ModelBackend | list[ModelBackend], tools: ToolRegistry, default_backend: str | None = None) -> None:
        listed = backends if isinstance(backends, list) else [backends]
        self.backends: dict[str, ModelBackend] = {b.name: b for b in listed}
        self.default_backend = default_backend or listed[0].name
        if self.default_backend not in self.backends:
            raise ValueError(f"default backend {self.default_backend!r} is not one of {', '.join(self.backends)}")
        self.tools = tools
        self._namespaces_with_attributes: dict[str, bool] = {}

    def backend_for(self, request: RunRequest) -> ModelBackend:
        """The request's backend; a request that cannot run on it fails at once, saying why."""
        name = request.implied_backend() or self.default_backend
        try:
            request.check_backend(name)
        except ValueError as exc:
            raise ApplicationError(f"invalid run request: {exc}", type="InvalidRunRequest", non_retryable=True) from None
        backend = self.backends.get(name)
        if backend is None:
            raise ApplicationError(
                f"this worker has no {name} backend (it has {', '.join(self.backends)})", type="InvalidRunRequest", non_retryable=True
            )
        return backend

    def _backend(self, name: str) -> ModelBackend:
        backend = self.backends.get(name)
        if backend is None:
            raise ApplicationError(f"this worker has no {name} backend", type="InvalidRunRequest", non_retryable=True)
        return backend

    async def _has_search_attributes(self) -> bool:
        """Checked once per namespace: upserting attributes a namespace lacks would fail the workflow."""
        namespace = activity.info().namespace
        if namespace not in self._namespaces_with_attributes:
            try:
                response = await activity.client().operator_service.list_search_attributes(
                    ListSearchAttributesRequest(namespace=namespace)
                )
                present = set(response.custom_attributes)
            except Exception as exc:  # e.g. no permission to list them: run without
                log.warning("cannot list search attributes", error=f"{type(exc).__name__}: {exc}")
                present = set()
            missing = sorted(set(SEARCH_ATTRIBUTE_TYPES) - present)
            if missing:
                log.warning("search attributes missing; runs won't be searchable by them", missing=missing)
            self._namespaces_with_attributes[namespace] = not missing
        return self._namespaces_with_attributes[namespace]

    @activity.defn(name="create_thread")
    async def create_thread(self, input: CreateThreadInput) -> str:
        _bind(assistant_id=input.request.assistant_id)
        backend = self.backend_for(input.request)
        # Check the request first: a bad one must fail before anything is created.
        await backend.check_request(input.request)
        thread_id = await backend.create_conversation(input.request, input.key)
        log.info("thread created", thread_id=thread_id)
        return thread_id

    @activity.defn(name="start_run")
    async def start_run(self, input: StartInput) -> StartResult:
        request = input.request
        _bind(assistant_id=request.assistant_id, thread_id=input.thread_id or request.conversation_id)
        backend = self.backend_for(request)
        if input.add_messages or backend.name != "assistants":
            await backend.check_request(request)
        async with ProgressPublisher() as progress:
            snapshot = await backend.start(request, input.thread_id, input.key, input.add_messages, _io(progress))
        return StartResult(
            snapshot=_ended(snapshot), tools=self.tools.policies(), search_attributes=await self._has_search_attributes()
        )

    @activity.defn(name="submit_tool_outputs")
    async def submit_tool_outputs(self, input: SubmitInput) -> RunSnapshot:
        _bind(thread_id=input.snapshot.thread_id, run_id=input.snapshot.run_id)
        backend = self._backend(input.snapshot.backend)
        if not input.outputs:
            return _ended(await backend.wait(input.snapshot, _io()))
        outputs = [o.model_dump() for o in input.outputs]
        async with ProgressPublisher() as progress:
            snapshot = await backend.submit_and_wait(input.request, input.snapshot, outputs, input.mode, _io(progress))
        return _ended(snapshot)

    @activity.defn(name="cancel_run")
    async def cancel_run(self, input: CancelInput) -> RunSnapshot:
        _bind(thread_id=input.thread_id, run_id=input.run_id)
        snapshot = RunSnapshot(run_id=input.run_id, thread_id=input.thread_id, backend=input.backend, status="cancelling")
        return _ended(await self._backend(input.backend).cancel(snapshot, _io()))
