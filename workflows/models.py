"""The run workflow's contract: its input, its output, and the snapshots activities hand
back. Plain pydantic models with explicit fields, so they travel as readable JSON through
Temporal (``pydantic_data_converter``) and other languages can produce and read them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema
from temporalio.contrib.workflow_streams import WorkflowStreamState

from tools.registry import ToolPolicy

RUN_WORKFLOW_NAME = "AssistantRun"
THREAD_QUEUE_WORKFLOW_NAME = "ThreadQueue"
DEFAULT_TASK_QUEUE = "durable-assistants"
PROGRESS_TOPIC = "progress"

RunStatus = Literal[
    "queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed", "completed", "incomplete", "expired"
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"cancelled", "failed", "completed", "incomplete", "expired"})


class MessageInput(BaseModel):
    """A message to add to the thread before the run, as ``messages.create`` takes it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"] = "user"
    content: str | list[dict[str, Any]]
    attachments: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None

    @field_validator("content")
    @classmethod
    def _not_empty(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if not value:
            raise ValueError("message content must not be empty")
        return value


class RunRequest(BaseModel):
    """One assistant run: where, what to add, the ``runs.create`` overrides, and how to orchestrate it."""

    model_config = ConfigDict(extra="forbid")

    assistant_id: str = Field(min_length=1)
    thread_id: str | None = Field(None, description="Run on this thread; omit to create a new one.")
    thread_metadata: dict[str, str] | None = Field(None, description="Metadata of a new thread.")
    messages: list[MessageInput] = Field(default_factory=list)

    # runs.create overrides; None leaves the assistant's setting.
    instructions: str | None = None
    additional_instructions: str | None = None
    model: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_prompt_tokens: int | None = Field(None, ge=256)
    max_completion_tokens: int | None = Field(None, ge=256)
    truncation_strategy: dict[str, Any] | None = None
    response_format: str | dict[str, Any] | None = None
    metadata: dict[str, str] | None = None

    # Orchestration.
    mode: Literal["poll", "stream"] = Field(
        "poll", description="Learn of requires_action by polling the run, or from the SSE stream."
    )
    tool_failure: Literal["error_output", "fail_run"] | None = Field(
        None, description="When a tool's retries run out: each tool's own policy (None), or this for every tool."
    )
    expiry_policy: Literal["submit_errors", "fail"] = Field(
        "submit_errors",
        description="A tool that would outlast the run: submit an error output for it before the run expires "
        "(the run goes on), or stop the run (status expired).",
    )
    expiry_margin_seconds: float = Field(
        15.0, ge=0, description="Tools must finish this long before the run's expires_at."
    )
    output_cap_chars: int = Field(16_000, ge=64, description="Tool outputs longer than this are cut, with a marker.")
    resume: SkipJsonSchema["RunProgress | None"] = Field(
        None, description="Set by the workflow when it continues as new; callers leave it unset."
    )

    def run_create_params(self) -> dict[str, Any]:
        """The ``runs.create`` keyword arguments this request sets."""
        names = (
            "instructions", "additional_instructions", "model", "tools", "tool_choice", "parallel_tool_calls",
            "temperature", "top_p", "max_prompt_tokens", "max_completion_tokens", "truncation_strategy",
            "response_format",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class RunSnapshot(BaseModel):
    """What an activity saw of the run: compact, never the whole run object."""

    run_id: str
    thread_id: str
    status: RunStatus
    tool_calls: list[ToolCall] = Field(default_factory=list)
    expires_at: float | None = None
    usage: Usage | None = None
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    final_text: str | None = None
    message_ids: list[str] = Field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class ToolCallRecord(BaseModel):
    round: int
    call_id: str
    name: str
    arguments: str
    output_preview: str
    attempts: int
    duration_seconds: float
    error: str | None = None


class RunResult(BaseModel):
    status: RunStatus
    run_id: str
    thread_id: str
    final_text: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    rounds: int = 0
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    failure: str | None = Field(None, description="Why the worker stopped the run, when it did (a tool, expiry, cancel).")


class RunProgress(BaseModel):
    """Where a run that continued as new picks up: the state its history held."""

    thread_id: str
    snapshot: RunSnapshot
    tools: dict[str, ToolPolicy]
    records: list[ToolCallRecord]
    rounds: int
    search_attributes: bool = False
    stream_state: WorkflowStreamState | None = None


ProgressKind = Literal["status", "tool_started", "tool_finished", "tool_progress", "text"]


class ProgressEvent(BaseModel):
    """One step of a run's story, published on the workflow's stream (topic ``progress``)."""

    kind: ProgressKind
    at: float = Field(description="Unix time of the event.")
    round: int = 0
    status: RunStatus | None = None
    run_id: str | None = None
    thread_id: str | None = None
    tool: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    attempt: int | None = None
    duration_seconds: float | None = None
    output_preview: str | None = None
    error: str | None = None
    progress: Any = None
    text: str | None = None


class PendingToolCall(BaseModel):
    call_id: str
    name: str
    arguments: str
    elapsed_seconds: float


class LiveSnapshot(BaseModel):
    """What the ``snapshot`` query returns: the run as it is right now."""

    status: RunStatus | Literal["starting"]
    round: int
    assistant_id: str
    thread_id: str | None
    run_id: str | None
    pending_tool_calls: list[PendingToolCall]
    tool_calls_done: int
    failure: str | None = None


RunRequest.model_rebuild()


class EnqueueRequest(BaseModel):
    """One caller's request on a thread's queue (the ``enqueue`` update of ``ThreadQueue``)."""

    request_id: str = Field(min_length=1, description="The caller's idempotency key.")
    run_workflow_id: str = Field(min_length=1, description="ID the run's AssistantRun child workflow gets.")
    request: RunRequest
    task_queue: str | None = None
    summary: str | None = None
    sequence: int = 0


class EnqueueReceipt(BaseModel):
    run_workflow_id: str
    position: int = Field(description="Place in the queue when accepted (1 = next); 0 if already running or done.")
    sequence: int = Field(0, description="Arrival order on this thread's queue.")
    duplicate: bool = Field(False, description="The request ID was enqueued before; this is that run.")


class ThreadQueueInput(BaseModel):
    thread_id: str
    pending: list[EnqueueRequest] = Field(default_factory=list)
    seen: dict[str, str] = Field(default_factory=dict)
    accepted: int = 0
    finished: int = 0


class ThreadQueueState(BaseModel):
    thread_id: str
    running: str | None
    waiting: list[str]
    finished: int
