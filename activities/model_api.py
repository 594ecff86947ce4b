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

from tools import ToolPolicy, ToolRegistry
from workflows.models import RunRequest, RunSnapshot

from workflows.search_attributes import SEARCH_ATTRIBUTE_TYPES

from .backend import ModelBackend
from .progress import ProgressPublisher


class CreateThreadInput(BaseModel):
    request: RunRequest
    key: str


class StartInput(BaseModel):
    request: RunRequest
    thread_id: str
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


class CancelInput(BaseModel):
    thread_id: str
    run_id: str


log = structlog.get_logger("model_api")


def _heartbeat(details: dict[str, Any]) -> None:
    activity.heartbeat(details)


def _bind(**ids: str | None) -> None:
    info = activity.info()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(workflow_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt, **ids)


def _text_reporter(progress: ProgressPublisher) -> Any:
    return lambda delta: progress.publish("text", text=delta)


def _ended(snapshot: RunSnapshot) -> RunSnapshot:
    log.info("run is waiting for tools" if snapshot.status == "requires_action" else "run ended",
             run_id=snapshot.run_id, status=snapshot.status, tool_calls=len(snapshot.tool_calls))
    return snapshot


class ModelActivities:
    """The model API, behind one backend. Built once by the worker, with its dependencies."""

    def __init__(self, backend: ModelBackend, tools: ToolRegistry) -> None:
        self.backend = backend
        self.tools = tools
        self._namespaces_with_attributes: dict[str, bool] = {}

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
        # Check the assistant first: a bad request must fail before anything is created.
        await self.backend.check_assistant(input.request.assistant_id)
        thread_id = await self.backend.create_conversation(input.request, input.key)
        log.info("thread created", thread_id=thread_id)
        return thread_id

    @activity.defn(name="start_run")
    async def start_run(self, input: StartInput) -> StartResult:
        _bind(assistant_id=input.request.assistant_id, thread_id=input.thread_id)
        if input.add_messages:
            await self.backend.check_assistant(input.request.assistant_id)
        async with ProgressPublisher() as progress:
            snapshot = await self.backend.start(
                input.request, input.thread_id, input.key, input.add_messages, _heartbeat, _text_reporter(progress)
            )
        return StartResult(
            snapshot=_ended(snapshot), tools=self.tools.policies(), search_attributes=await self._has_search_attributes()
        )

    @activity.defn(name="submit_tool_outputs")
    async def submit_tool_outputs(self, input: SubmitInput) -> RunSnapshot:
        _bind(thread_id=input.snapshot.thread_id, run_id=input.snapshot.run_id)
        if not input.outputs:
            return _ended(await self.backend.wait(input.snapshot, _heartbeat))
        outputs = [o.model_dump() for o in input.outputs]
        async with ProgressPublisher() as progress:
            snapshot = await self.backend.submit_and_wait(
                input.snapshot, outputs, input.mode, _heartbeat, _text_reporter(progress)
            )
        return _ended(snapshot)

    @activity.defn(name="cancel_run")
    async def cancel_run(self, input: CancelInput) -> RunSnapshot:
        _bind(thread_id=input.thread_id, run_id=input.run_id)
        return _ended(await self.backend.cancel(input.thread_id, input.run_id, _heartbeat))
