"""Model-API activities: create the thread, start the run, submit a round's outputs, cancel.

Each waits inside the activity (polling or streaming, heartbeating as it goes) and returns a
compact ``RunSnapshot``, so a run costs one activity per step of the loop, not one per poll.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from temporalio import activity

from tools import ToolPolicy, ToolRegistry
from workflows.models import RunRequest, RunSnapshot

from .backend import ModelBackend


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


def _heartbeat(details: dict[str, Any]) -> None:
    activity.heartbeat(details)


class ModelActivities:
    """The model API, behind one backend. Built once by the worker, with its dependencies."""

    def __init__(self, backend: ModelBackend, tools: ToolRegistry) -> None:
        self.backend = backend
        self.tools = tools

    @activity.defn(name="create_thread")
    async def create_thread(self, input: CreateThreadInput) -> str:
        # Check the assistant first: a bad request must fail before anything is created.
        await self.backend.check_assistant(input.request.assistant_id)
        return await self.backend.create_conversation(input.request, input.key)

    @activity.defn(name="start_run")
    async def start_run(self, input: StartInput) -> StartResult:
        if input.add_messages:
            await self.backend.check_assistant(input.request.assistant_id)
        snapshot = await self.backend.start(input.request, input.thread_id, input.key, input.add_messages, _heartbeat)
        return StartResult(snapshot=snapshot, tools=self.tools.policies())

    @activity.defn(name="submit_tool_outputs")
    async def submit_tool_outputs(self, input: SubmitInput) -> RunSnapshot:
        if not input.outputs:
            return await self.backend.wait(input.snapshot, _heartbeat)
        outputs = [o.model_dump() for o in input.outputs]
        return await self.backend.submit_and_wait(input.snapshot, outputs, input.mode, _heartbeat)

    @activity.defn(name="cancel_run")
    async def cancel_run(self, input: CancelInput) -> RunSnapshot:
        return await self.backend.cancel(input.thread_id, input.run_id, _heartbeat)
