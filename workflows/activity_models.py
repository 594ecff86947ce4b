"""What the workflows hand their activities and get back: the activities' names, their input
and output models, and the error types an activity raises that the workflow acts on.

The contract between the two sides, kept with the workflows (their main users) and read by
both: the activities in ``activities/`` implement it, ``AssistantRun`` calls them by these
names, so the workflows import no activity code. A field added here needs a default that
means "what an earlier workflow did", since histories recorded before it replay with inputs
that lack it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from durable_assistants.tools import ToolPolicy
from durable_assistants.workflows.models import Backend, RunRequest, RunSnapshot

# The model-API activities (activities/model_api.py).
CREATE_THREAD = "create_thread"
START_RUN = "start_run"
SUBMIT_TOOL_OUTPUTS = "submit_tool_outputs"
CANCEL_RUN = "cancel_run"
# One POST of the completion callback (activities/callbacks.py).
DELIVER_CALLBACK = "deliver_callback"
# A tool's activity is named after the tool (activities/tools.py).

# ------------------------------------------------------------------ model-API activities


class CreateThreadInput(BaseModel):
    request: RunRequest
    key: str


INLINE_FIELD = Field(
    False, description="Run the round's inline tools (@tool(inline=True)) here and hand back their outputs; workflows of "
    "earlier versions leave it out (they would not read the outputs).",
)


TAIL_FIELD = Field(
    False, description="Hand back the turn's last streamed text in the result (RunSnapshot.text_tail) instead of "
    "signalling it just before: one workflow task less per streamed turn. Earlier workflows leave it out.",
)


APPROVAL_FIELD = Field(
    None, description="The run's approval overrides by tool name (RunRequest.approval): the activity flags the round's "
    "calls that wait for a decision (RunSnapshot.approvals) and does not run those inline. None: a workflow of an "
    "earlier version, which flags nothing.",
)


class StartInput(BaseModel):
    request: RunRequest
    thread_id: str | None
    key: str
    add_messages: bool
    inline_tools: bool = INLINE_FIELD
    text_tail: bool = TAIL_FIELD
    approval: dict[str, str] | None = APPROVAL_FIELD


class StartResult(BaseModel):
    snapshot: RunSnapshot
    tools: dict[str, ToolPolicy]
    search_attributes: bool = Field(
        False, description="Whether the namespace has the project's search attributes, so the workflow may upsert them."
    )
    private: bool = Field(
        False, description="The worker encrypts payloads: what the workflow shows in plain text (activity summaries) "
        "names tools and sizes, never arguments.",
    )
    approval_attribute: bool = Field(False, description="Whether the namespace has AwaitingApproval, so the workflow may upsert it.")


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
    key: str | None = Field(None, description="The run's tag, as in StartInput; older workflows leave it out.")
    inline_tools: bool = INLINE_FIELD
    text_tail: bool = TAIL_FIELD
    output_cap_chars: int = 16_000
    approval: dict[str, str] | None = APPROVAL_FIELD


class CancelInput(BaseModel):
    thread_id: str | None
    run_id: str | None = Field(description="The run or response to stop; None when its ID was never known.")
    backend: Backend = "assistants"
    snapshot: RunSnapshot | None = Field(None, description="The run as the workflow last saw it, with its unanswered calls.")
    reason: str | None = Field(None, description="Why the run stops: the output its unanswered calls get.")


# ------------------------------------------------------------------ tool activities

# Error types a tool activity fails with that the workflow tells apart.
INVALID_ARGUMENTS = "InvalidToolArguments"
TOOL_RETRIES_EXHAUSTED = "ToolRetriesExhausted"


class ToolCallInput(BaseModel):
    run_id: str | None = Field(description="The run (Assistants) or the response that asked for the call (Responses); None if its ID was lost.")
    thread_id: str | None = Field(description="The thread or conversation; None on a response chain.")
    call_id: str
    name: str
    # A JSON object, so that the Temporal UI shows the activity's input as one readable object;
    # the text the model sent is accepted too (activities scheduled by earlier versions).
    arguments: dict[str, Any] | str
    output_cap_chars: int = 16_000


class ToolCallOutput(BaseModel):
    # A tool's structured return value stays structured (the UI shows it as JSON, not as a
    # string of JSON); the model gets ``output_text(output)``. Text, or anything cut at the
    # cap, is a string.
    output: str | dict[str, Any] | list[Any]
    attempt: int = Field(
        description="The attempt that produced the output, as the tool's retry budget counts: 1 + the earlier attempts "
        "that raised (attempts lost with a worker don't count). Under a retry policy with maximum_attempts set, "
        "Temporal's limit counts every attempt, and so does this (Temporal's attempt number)."
    )
    truncated: bool = False
    executions: int | None = Field(
        None, description="Temporal's attempt number: how many times the call was started, lost attempts included."
    )


def output_text(output: str | dict[str, Any] | list[Any]) -> str:
    """The model's text for a ``ToolCallOutput.output`` (deterministic: the workflow calls it)."""
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False, allow_nan=False)


# ------------------------------------------------------------------ the callback


class CallbackInput(BaseModel):
    url: str
    secret: str
    delivery_id: str
    event: str
    body: str


# ------------------------------------------------------------------ the Nexus operation enqueue_run

# The input of the operation (durable_assistants.nexus re-exports it for callers), of the
# EnqueuedRun workflow it starts, and of that workflow's enqueue activity.
class NexusRunInput(BaseModel):
    request: RunRequest
    request_id: str = Field(
        min_length=1, max_length=200,
        description="The idempotency key of the run (as for enqueue_run): the same ID with the same request is the same run.",
    )
