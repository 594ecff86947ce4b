"""The run workflow's contract: its input, its output, and the snapshots activities hand
back. Plain pydantic models with explicit fields, so they travel as readable JSON through
Temporal (``pydantic_data_converter``) and other languages can produce and read them.

Why one module of about 860 lines: the run workflow's whole contract, from which schemas/ is
generated and which callers in other languages read beside it; the activities' models are
activity_models.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from temporalio.contrib.workflow_streams import WorkflowStreamState

from durable_assistants.tools.registry import ToolPolicy

RUN_WORKFLOW_NAME = "AssistantRun"
THREAD_QUEUE_WORKFLOW_NAME = "ThreadQueue"
DEFAULT_TASK_QUEUE = "durable-assistants"
PROGRESS_TOPIC = "progress"
# The error type of an enqueue whose request ID was used before for a different request.
IDEMPOTENCY_CONFLICT = "IdempotencyConflict"
# The error type of an enqueue refused because the thread's queue holds as much as it may.
QUEUE_FULL = "QueueFull"
# A run's workflow ID is this prefix and its request ID (unless an ``enqueue`` names another).
RUN_WORKFLOW_ID_PREFIX = "assistant-run/"

Backend = Literal["assistants", "responses"]
BACKENDS: tuple[str, ...] = ("assistants", "responses")

RunStatus = Literal[
    "queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed", "completed", "incomplete", "expired"
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"cancelled", "failed", "completed", "incomplete", "expired"})


# Limits the model APIs enforce, checked when a run is enqueued so that a request that can
# never work fails at once, naming the field, instead of failing (or retrying) in a workflow.
MAX_ID_CHARS = 512  # OpenAI's are short; compatible servers' need not be (one sends 425 characters)
MAX_MESSAGE_CHARS = 256_000  # a message's text, as the Assistants API takes it
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
# The worker adds one pair of its own (its idempotency tag) to every object it creates.
RESERVED_METADATA_PREFIX = "durable_assistants_"
_ID_FORBIDDEN = re.compile(r"[\s/?#%\x00-\x1f\x7f]")


def check_api_id(value: str) -> str:
    """An ID the worker puts in a URL path: non-empty, no whitespace, no '/', '?', '#' or '%'.
    Nothing else is assumed (compatible servers choose their own ID formats)."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"is {len(value)} characters long; an ID has at most {MAX_ID_CHARS}")
    bad = _ID_FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"contains {bad.group()!r}, which no API ID contains")
    return value


ApiId = Annotated[str, AfterValidator(check_api_id)]


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """The APIs' metadata limits, less the one pair the worker adds."""
    if value is None:
        return value
    if len(value) > MAX_METADATA_PAIRS - 1:
        raise ValueError(
            f"has {len(value)} pairs; the API takes {MAX_METADATA_PAIRS} and the worker adds one of its own, so at most {MAX_METADATA_PAIRS - 1}"
        )
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise ValueError(f"key {key[:80]!r} must be 1 to {MAX_METADATA_KEY_CHARS} characters")
        if key.startswith(RESERVED_METADATA_PREFIX):
            raise ValueError(f"key {key!r} is reserved: keys starting with {RESERVED_METADATA_PREFIX!r} are the worker's")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"value of {key!r} is {len(item)} characters; at most {MAX_METADATA_VALUE_CHARS}")
    return value


Metadata = Annotated[dict[str, str] | None, AfterValidator(check_metadata)]


def _unencodable(value: Any, where: str = "") -> str | None:
    """Where the first value is that the request's JSON cannot carry, and why: a string with a
    lone surrogate (UTF-8 cannot encode it) or a float that is NaN or infinite (JSON has
    neither: it would arrive as null, and the run would fail on its own input)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"{where or 'value'} (character {exc.start}: {value[exc.start]!r}) is not valid Unicode text: "
                "a lone surrogate, which UTF-8 cannot carry"
            )
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'value'} is {value!r}, which JSON cannot carry; give a finite number"
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _unencodable(key, where) if isinstance(key, str) else None
        found = found or _unencodable(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


class MessageInput(BaseModel):
    """A message to add to the thread before the run, as ``messages.create`` takes it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"] = "user"
    content: str | list[dict[str, Any]]
    attachments: list[dict[str, Any]] | None = None
    metadata: Metadata = None

    @field_validator("content")
    @classmethod
    def _not_empty(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if not value or (isinstance(value, str) and not value.strip()):
            raise ValueError("message content must not be empty")
        texts = [value] if isinstance(value, str) else [p.get("text") for p in value if isinstance(p.get("text"), str)]
        longest = max((len(t) for t in texts), default=0)  # type: ignore[arg-type]
        if longest > MAX_MESSAGE_CHARS:
            raise ValueError(f"message text is {longest} characters; the API takes at most {MAX_MESSAGE_CHARS}")
        return value


class PromptRef(BaseModel):
    """A stored prompt of the Responses API: the equivalent of an assistant kept on the server."""

    model_config = ConfigDict(extra="forbid")

    id: ApiId
    version: str | None = None
    variables: dict[str, Any] | None = None


# Fields that only one API has. A request that sets one of them says which API it is for.
ASSISTANTS_ONLY = ("assistant_id", "thread_id", "thread_metadata", "additional_instructions", "max_prompt_tokens", "truncation_strategy")
RESPONSES_ONLY = ("conversation_id", "previous_response_id", "prompt", "responses_state")
# Where a Responses run that continues nothing keeps its context (``RunRequest.responses_state``).
RESPONSES_STATES = ("conversation", "chain", "stateless")
ResponsesState = Literal["conversation", "chain", "stateless"]


def _http_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest or any(c.isspace() for c in url):
        raise ValueError(f"must be an http:// or https:// URL, got {url[:100]!r}")
    return url


class Callback(BaseModel):
    """Where to POST the run's result when it ends, signed (docs/callbacks.md)."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, AfterValidator(_http_url)] = Field(max_length=2048, description="An http:// or https:// URL; redirects are not followed.")
    secret: str = Field(
        min_length=16, max_length=256,
        description="The HMAC-SHA256 key of the DA-Signature header. It is part of the run's input, so its history "
        "holds it: encrypt payloads (docs/encryption.md) to keep it out of the UI.",
    )
    max_seconds: float = Field(
        600, ge=1, le=86_400,
        description="How long delivery is retried (backoff from 1 s doubling to 60 s); then the run ends undelivered. "
        "The run's result waits for this, its outcome does not change.",
    )


class CallbackAttempt(BaseModel):
    at: float = Field(description="Unix time the attempt ended.")
    status: int | None = Field(None, description="The HTTP status the receiver answered, if it answered.")
    error: str | None = Field(None, description="Why the attempt failed.")


class CallbackDelivery(BaseModel):
    """What became of a run's callback: in ``RunResult.callback``, shown by ``status``."""

    url: str
    delivery_id: str = Field(description="The DA-Delivery-Id header: the same on every attempt, for the receiver to de-duplicate.")
    delivered: bool
    attempts: int
    delivered_at: float | None = None
    gave_up: str | None = Field(None, description="Why delivery stopped without success.")
    last_attempts: list[CallbackAttempt] = Field(default_factory=list, description="The newest attempts (10 at most).")


class RunRequest(BaseModel):
    """One assistant run: which API and agent, where, what to add, the overrides, and how to orchestrate it.

    Assistants API: ``assistant_id`` (+ ``thread_id``, or a new thread). Responses API: ``model``,
    ``instructions`` and ``tools`` (or a stored ``prompt``), continuing a ``conversation_id``, a
    ``previous_response_id``, or nothing. ``backend`` picks the API; left out, the fields above
    decide, and a request that sets none of them goes to the worker's default (``DA_BACKEND``).
    Such a request (an inline agent: ``model``, ``instructions``, ``tools``) runs on either API:
    the Assistants backend makes an assistant of it once, so switching APIs is configuration.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Backend | None = Field(
        None, description="The model API: assistants or responses. Omitted: implied by the fields, else the worker's default."
    )
    # --- Assistants API: the assistant and the thread.
    assistant_id: ApiId | None = Field(None, description="Assistants API: the assistant that runs.")
    thread_id: ApiId | None = Field(None, description="Assistants API: run on this thread; omit to create a new one.")
    thread_metadata: Metadata = Field(None, description="Assistants API: metadata of a new thread.")
    # --- Responses API: the stored prompt and the conversation.
    prompt: PromptRef | None = Field(None, description="Responses API: a stored prompt (ID, version, variables).")
    conversation_id: ApiId | None = Field(
        None, description="Responses API: continue this conversation (its items are the context)."
    )
    previous_response_id: ApiId | None = Field(
        None, description="Responses API: continue from this response (the chain is the context)."
    )
    responses_state: ResponsesState | None = Field(
        None,
        description="Responses API, a run that continues nothing: where its context lives. 'conversation': a new "
        "conversation, which makes every turn exactly-once (a retry finds its input there). 'chain': responses "
        "chained by previous_response_id, at-least-once (a lost create reply makes an orphan response); for servers "
        "without the Conversations API. 'stateless': store false, nothing kept by the server; the run carries its "
        "items and sends them whole every turn (Zero Data Retention; servers that keep no state). "
        "Omitted: the worker's default (DA_RESPONSES_STATE, else conversation).",
    )
    messages: list[MessageInput] = Field(default_factory=list)

    # Overrides of the assistant (Assistants) or the turn's settings (Responses); None leaves the default.
    instructions: str | None = None
    additional_instructions: str | None = None
    model: str | None = Field(None, min_length=1)
    tools: list[dict[str, Any]] | None = Field(
        None, description="Tool definitions; omitted: the assistant's (Assistants) or the worker's registry (Responses)."
    )
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_prompt_tokens: int | None = Field(None, ge=256)
    max_completion_tokens: int | None = Field(
        None, ge=256, description="Assistants: max_completion_tokens of the run; Responses: max_output_tokens of each turn."
    )
    truncation_strategy: dict[str, Any] | None = None
    response_format: str | dict[str, Any] | None = None
    metadata: Metadata = None

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
    tool_queue_wait_seconds: float = Field(
        600.0, gt=0, le=7 * 86_400,
        description="How long a tool call routed to its own task queue may wait for a worker of that queue to take it; "
        "past it the call fails with 'no worker polled task queue X' (its policy decides: error output or fail the run).",
    )
    model_api_budget_seconds: float = Field(
        3600.0, gt=0, le=7 * 86_400,
        description="How long one step of the run (the start, a round's submit) may keep retrying the model API; "
        "past it the run fails with 'model API unavailable since T: <last error>'. Stopping a run gets at most "
        "min(this, 300 s), then the run ends anyway, saying in what state the API run was left.",
    )
    approval: dict[str, Literal["always", "never"]] = Field(
        default_factory=dict,
        description="Human approval for this run, by tool name ('*': every tool not named): 'always' makes each call "
        "of the tool wait for a person's decision before it runs, 'never' runs it without one; unnamed tools follow "
        "their own @tool(approval=...) policy (docs/approvals.md).",
    )
    approval_timeout_seconds: float | None = Field(
        None, gt=0, le=7 * 86_400,
        description="How long a call waits for its decision (default 24 h); never past the run's expires_at less the "
        "expiry margin and the tool's own timeout (Assistants runs expire).",
    )
    approval_on_timeout: Literal["reject", "fail_run"] = Field(
        "reject",
        description="No decision in time: send the model an output saying the call was not approved (the run goes "
        "on), or fail the run.",
    )
    callback: Callback | None = Field(
        None, description="POST the result, signed, to this URL when the run ends, retried for a bounded time (docs/callbacks.md)."
    )
    resume: SkipJsonSchema[RunProgress | None] = Field(
        None, description="Set by the workflow when it continues as new; callers leave it unset."
    )

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        # A lone surrogate (e.g. from a JSON "\\ud800" escape) passes as a str, and NaN or
        # Infinity (Python's json reads them) as a float, but neither can be sent.
        problem = _unencodable(data)
        if problem:
            raise ValueError(problem)
        return data

    @model_validator(mode="after")
    def _one_api(self) -> RunRequest:
        assistants = [name for name in ASSISTANTS_ONLY if getattr(self, name) is not None]
        responses = [name for name in RESPONSES_ONLY if getattr(self, name) is not None]
        if assistants and responses:
            raise ValueError(
                f"{', '.join(assistants)} belong to the Assistants API and {', '.join(responses)} to the Responses API; "
                "a request speaks one of them"
            )
        if self.conversation_id is not None and self.previous_response_id is not None:
            raise ValueError(
                f"give conversation_id ({self.conversation_id!r}) or previous_response_id ({self.previous_response_id!r}), not both"
            )
        if self.conversation_id is not None and self.responses_state not in (None, "conversation"):
            raise ValueError(
                f"responses_state {self.responses_state!r} does not go with conversation_id ({self.conversation_id!r}), "
                "which continues a conversation"
            )
        if self.previous_response_id is not None and self.responses_state not in (None, "chain"):
            raise ValueError(
                f"responses_state {self.responses_state!r} does not go with previous_response_id "
                f"({self.previous_response_id!r}), which continues a chain"
            )
        if self.backend is not None:
            self.check_backend(self.backend)
        return self

    def implied_backend(self) -> Backend | None:
        """The API this request names, explicitly or through its API-specific fields."""
        if self.backend is not None:
            return self.backend
        if any(getattr(self, name) is not None for name in ASSISTANTS_ONLY):
            return "assistants"
        if any(getattr(self, name) is not None for name in RESPONSES_ONLY):
            return "responses"
        return None

    def check_backend(self, backend: str) -> None:
        """Raise ``ValueError`` saying what this request lacks or has too much of for ``backend``."""
        if backend == "assistants":
            if self.assistant_id is None and self.model is None:
                raise ValueError(
                    "the assistants backend needs an assistant_id, or a model (with instructions and tools, or the "
                    "worker's tools) for the worker to make an assistant of"
                )
            wrong = [name for name in RESPONSES_ONLY if getattr(self, name) is not None]
        elif backend == "responses":
            if self.model is None and self.prompt is None:
                raise ValueError("the responses backend needs a model or a stored prompt; this request has neither")
            wrong = [name for name in ASSISTANTS_ONLY if getattr(self, name) is not None]
            with_files = [i for i, m in enumerate(self.messages) if m.attachments]
            if with_files:
                raise ValueError(
                    f"messages {with_files} have attachments, which the Responses API does not take; "
                    "put files in the content as input_file parts instead"
                )
            if isinstance(self.response_format, str) and self.response_format != "auto":
                raise ValueError(f"response_format {self.response_format!r} has no Responses equivalent; give an object or 'auto'")
        else:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if wrong:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in wrong)
            raise ValueError(f"the {backend} backend has no {', '.join(wrong)} (got {values})")

    @property
    def agent_label(self) -> str:
        """Who answers: the assistant, the stored prompt or the model (for summaries and logs)."""
        if self.assistant_id is not None:
            return self.assistant_id
        if self.prompt is not None:
            return f"prompt {self.prompt.id}" + (f"@{self.prompt.version}" if self.prompt.version else "")
        return self.model or "the default model"

    def first_text(self) -> str:
        """The text of the first message (its text parts joined), whitespace collapsed; '' if none."""
        if not self.messages:
            return ""
        content = self.messages[0].content
        text = content if isinstance(content, str) else " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return " ".join(text.split())

    @property
    def context_id(self) -> str | None:
        """The thread or conversation the run continues, if any: runs on one are queued in order."""
        return self.thread_id or self.conversation_id

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


class TurnTokens(BaseModel):
    """The tokens of one model turn: a response (Responses), or a whole run (Assistants, which
    reports usage once per run)."""

    turn: int = Field(description="1 for the run's first turn that reported usage, and so on.")
    id: str | None = Field(description="The response (Responses) or run (Assistants) the tokens are billed to; None for a response whose ID was lost.")
    model: str | None = None
    input_tokens: int
    output_tokens: int


class ModelTokens(BaseModel):
    model: str | None
    input_tokens: int
    output_tokens: int
    turns: int

    def plus(self, other: ModelTokens) -> ModelTokens:
        """Both counts together (for one model)."""
        return ModelTokens(
            model=self.model, input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens, turns=self.turns + other.turns,
        )


class ActionCount(BaseModel):
    """Temporal actions as Temporal Cloud bills them, counted from a run's event history
    (every run of it, across continue-as-new). Heartbeats and queries are billed too but leave
    no event in the history: they are not counted (None)."""

    workflows_started: int = Field(0, description="The run's workflow and each continue-as-new (each is a workflow start).")
    activities_started: int = Field(0, description="Every attempt of every activity, retries included.")
    activity_retries: int = Field(0, description="Of those, the attempts after an activity's first.")
    signals: int = 0
    updates: int = Field(0, description="Accepted updates: decisions, and followers' polls of the progress stream.")
    timers: int = 0
    child_workflows: int = 0
    search_attribute_upserts: int = 0
    total: int = Field(0, description="The sum of the counts above (activity_retries are in activities_started); derived.")
    continued_as_new: int = Field(0, description="How many times the run continued as new (already in workflows_started).")
    markers: int = Field(0, description="Markers recorded (the workflow's patches); listed, not in the total.")
    heartbeats: int | None = Field(None, description="Not in the history: not counted.")
    queries: int | None = Field(None, description="Not in the history: not counted.")

    @model_validator(mode="after")
    def _total(self) -> ActionCount:
        self.total = (
            self.workflows_started + self.activities_started + self.signals + self.updates + self.timers
            + self.child_workflows + self.search_attribute_upserts
        )
        return self


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, description="Dollars per million input tokens.")
    output: float = Field(ge=0, description="Dollars per million output tokens.")


class PriceTable(BaseModel):
    """What tokens and Temporal actions cost, from configuration (``DA_PRICES`` or
    ``DA_PRICES_FILE``); nothing is priced without it."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="By model name as the API reports it; a dated snapshot (gpt-4o-2024-08-06) falls back on its base name.",
    )
    actions: float | None = Field(None, ge=0, description="Dollars per million Temporal actions.")


class RunCost(BaseModel):
    """What a run used: tokens by turn and by model (from the model API's usage), and the
    Temporal actions (read from the history by the client: None where it was not read), and
    what that cost in dollars where a price table is set."""

    input_tokens: int = 0
    output_tokens: int = 0
    turns: list[TurnTokens] = Field(default_factory=list)
    by_model: list[ModelTokens] = Field(default_factory=list)
    actions: ActionCount | None = None
    dollars: float | None = Field(None, description="Tokens and actions priced; None without a price table.")
    unpriced: list[str] = Field(default_factory=list, description="What the price table had no price for (models, actions).")


class RunSnapshot(BaseModel):
    """What an activity saw of the run: compact, never the whole run object."""

    run_id: str | None = Field(
        description="The run ID (Assistants) or the ID of the turn's response (Responses). None when no ID is known: a "
        "Responses turn whose outcome was taken from the conversation's items after an earlier attempt's reply, with "
        "the response's ID, was lost."
    )
    thread_id: str | None = Field(description="The thread (Assistants) or conversation (Responses); None for a response chain.")
    backend: Backend = "assistants"
    status: RunStatus
    tool_calls: list[ToolCall] = Field(default_factory=list)
    expires_at: float | None = None
    usage: Usage | None = Field(None, description="Tokens so far: the run's (Assistants, once it ends), or every turn's summed (Responses).")
    model: str | None = Field(None, description="The model the API says answered this turn.")
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    final_text: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    cancel_requested: bool = Field(
        False, description="The workflow was cancelled while this turn ran; the worker stopped the API run."
    )
    foreground: bool = Field(
        False, description="Responses: the turn's response ran in the foreground (no background mode): nothing to poll or cancel."
    )
    context: list[dict[str, Any]] | None = Field(
        None, description="Responses, a stateless run: every item so far (store false), sent whole with the next turn."
    )
    inline_results: list[InlineToolResult] = Field(
        default_factory=list, description="The round's calls of inline tools, run already by the activity that saw the round."
    )
    text_tail: list[ProgressEvent] = Field(
        default_factory=list,
        description="The turn's last streamed text, not yet sent as a signal: the workflow publishes it with this result.",
    )
    approvals: list[ApprovalAsk] = Field(
        default_factory=list, description="The round's calls that wait for a person's decision before they run."
    )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class InlineToolResult(BaseModel):
    """An inline tool's call, run by the model activity that learned of it (``@tool(inline=True)``)."""

    call_id: str
    output: str = Field(description="The model's text: the output, or 'Error: ...'.")
    attempts: int
    duration_seconds: float
    error: str | None = Field(None, description="Why it failed, when it did (its output then says so too).")
    outcome: Literal["ok", "error", "invalid_arguments"] = "ok"


class ApprovalAsk(BaseModel):
    """A call of the round that must wait for a person's decision (the model activity asked
    the tool's policy and the request's)."""

    call_id: str
    reason: str = Field(description="Why it waits: the tool's policy or the request's.")
    parameters: dict[str, Any] | None = Field(None, description="The tool's JSON schema: edited arguments must match it.")


class PendingApproval(BaseModel):
    """A tool call waiting for a decision (``decide_tool_call``)."""

    call_id: str
    tool: str
    arguments: str
    round: int
    reason: str
    requested_at: float = Field(description="Unix time the call started to wait.")
    deadline: float = Field(description="Unix time the wait ends; approval_on_timeout then decides.")
    parameters: dict[str, Any] | None = Field(None, description="The tool's JSON schema, for edited arguments.")


Decision = Literal["approve", "reject", "edit"]


class ToolCallDecision(BaseModel):
    """The ``decide_tool_call`` update's input: one person's decision on one waiting call."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1)
    decision: Decision
    note: str | None = Field(None, max_length=4_000, description="Why; required to reject (the model reads it).")
    edited_arguments: dict[str, Any] | None = Field(None, description="edit: the arguments the tool runs with instead.")
    by: str | None = Field(None, max_length=200, description="Who decided (a user name or email); recorded as given.")


class ApprovalRecord(BaseModel):
    """What was decided about a call that needed approval, kept with its tool-call record."""

    decision: Literal["approved", "rejected", "edited", "timed_out"]
    by: str | None = None
    note: str | None = None
    requested_at: float
    decided_at: float
    original_arguments: str | None = Field(None, description="edited: the arguments the model asked for.")


class ToolCallRecord(BaseModel):
    round: int
    call_id: str
    name: str
    arguments: str
    output_preview: str
    attempts: int
    duration_seconds: float
    error: str | None = None
    approval: ApprovalRecord | None = Field(None, description="The decision, for a call that waited for one.")


SUMMARY_EXCERPT_CHARS = 60


def default_summary(request: RunRequest, where: str, excerpt: bool = True) -> str:
    """A run's summary in the Temporal UI when its caller gives none: who answers, where, and
    the start of the first message (``asst_x on thread_y: "Plan my week…"``); without
    ``excerpt`` (payloads are encrypted) its length instead."""
    summary = f"{request.agent_label} on {where}"
    text = request.first_text()
    if text and not excerpt:
        summary += f" ({len(text)} characters of message)"
    elif text:
        shown = text if len(text) <= SUMMARY_EXCERPT_CHARS else text[: SUMMARY_EXCERPT_CHARS - 1].rstrip() + "…"
        summary += f': "{shown}"'
    return summary


# The failure types a run that ended failed or expired fails its workflow with (details[0]: the RunResult).
RUN_FAILED = "RunFailed"
RUN_EXPIRED = "RunExpired"


class RunResult(BaseModel):
    status: RunStatus
    run_id: str | None = Field(
        description="The run (Assistants) or the last response (Responses). None when there is none to name: the run "
        "stopped before its first turn was created, or its last response's ID was lost (RunSnapshot.run_id)."
    )
    thread_id: str | None = Field(description="The thread (Assistants), the conversation or None (Responses).")
    backend: Backend = "assistants"
    response_ids: list[str] = Field(default_factory=list, description="Responses: every turn's response, in order.")
    final_text: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    rounds: int = 0
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    failure: str | None = Field(None, description="Why the worker stopped the run, when it did (a tool, expiry, cancel).")
    tool_calls_total: int | None = Field(
        None, description="Every tool call of the run; tool_calls keeps only the newest (a long run drops the oldest)."
    )
    cost: RunCost | None = Field(None, description="Tokens by turn and model; actions and dollars added by the client (docs/cost.md).")
    callback: CallbackDelivery | None = Field(None, description="What became of the request's callback, when it had one.")


class RunProgress(BaseModel):
    """Where a run that continued as new picks up: the state its history held."""

    thread_id: str | None
    private: bool = False
    snapshot: RunSnapshot
    tools: dict[str, ToolPolicy]
    records: list[ToolCallRecord]
    rounds: int
    response_ids: list[str] = Field(default_factory=list)
    search_attributes: bool = False
    approval_attribute: bool = False
    turns: list[TurnTokens] = Field(default_factory=list, description="Tokens of the newest turns so far.")
    by_model: list[ModelTokens] = Field(default_factory=list, description="Tokens of every turn so far, by model.")
    tokens_seen: tuple[int, int] = Field((0, 0), description="Input and output tokens counted so far.")
    stream_state: WorkflowStreamState | None = None
    records_dropped: int = Field(0, description="Tool-call records no longer carried (the oldest of a long run).")
    dropped_tool_names: list[str] = Field(default_factory=list, description="Names of the tools in the dropped records.")


ProgressKind = Literal[
    "status", "tool_started", "tool_finished", "tool_progress", "text", "approval_requested", "approval_decided"
]


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
    sequence: int | None = Field(
        None, description="A text delta's place in its response's event stream (Responses), so a repeat can be dropped."
    )
    inline: bool | None = Field(None, description="tool_started: an inline tool, run by the model activity (no activity of its own).")
    decision: str | None = Field(None, description="approval_decided: approved, rejected, edited or timed_out.")
    by: str | None = Field(None, description="approval_decided: who decided.")
    note: str | None = Field(None, description="approval_requested: why it waits; approval_decided: the decider's note.")
    deadline: float | None = Field(None, description="approval_requested: Unix time the wait ends.")


class PendingToolCall(BaseModel):
    call_id: str
    name: str
    arguments: str
    elapsed_seconds: float = Field(description="As of the workflow's last task; use started_at for the time now.")
    started_at: float | None = Field(None, description="Unix time the call was scheduled.")


class PendingActivity(BaseModel):
    """An activity under way as the Temporal server records it (from describe, no worker needed)."""

    name: str
    state: str = Field(description="scheduled, started or cancel_requested")
    attempt: int
    started_at: float | None = Field(None, description="Unix time the current attempt started.")
    last_failure: str | None = Field(None, description="Why the previous attempt failed.")


class LiveSnapshot(BaseModel):
    """What the ``snapshot`` query returns: the run as it is right now."""

    status: RunStatus | Literal["starting", "unknown"]
    round: int
    assistant_id: str | None
    agent: str = Field("", description="The assistant, stored prompt or model that answers.")
    backend: Backend | None = None
    thread_id: str | None
    run_id: str | None
    pending_tool_calls: list[PendingToolCall]
    tool_calls_done: int
    failure: str | None = None
    source: Literal["worker", "server"] = Field(
        "worker", description="worker: the run's own query; server: built from describe (no worker answered)."
    )
    note: str | None = Field(None, description="Why the snapshot came from the server, when it did.")
    pending_activities: list[PendingActivity] = Field(
        default_factory=list, description="Activities under way with their attempt and last failure, from the server."
    )
    pending_approvals: list[PendingApproval] = Field(
        default_factory=list, description="Tool calls waiting for a person's decision (decide_tool_call)."
    )
    cost: RunCost | None = Field(None, description="Tokens so far; actions and dollars added by the client.")
    callback: CallbackDelivery | None = Field(
        None, description="The request's callback while the run delivers it (the run has ended; its result waits for this)."
    )


RunRequest.model_rebuild()
RunSnapshot.model_rebuild()


class EnqueueRequest(BaseModel):
    """One caller's request on a thread's queue (the ``enqueue`` update of ``ThreadQueue``)."""

    request_id: str = Field(min_length=1, description="The caller's idempotency key.")
    run_workflow_id: str = Field(min_length=1, description="ID the run's AssistantRun child workflow gets.")
    request: RunRequest
    task_queue: str | None = None
    summary: str | None = None
    sequence: int = 0
    fingerprint: str | None = Field(None, description="The request's fingerprint, to refuse a reused request ID.")


class EnqueueReceipt(BaseModel):
    run_workflow_id: str
    position: int = Field(description="Place in the queue when accepted (1 = next); 0 if already running or done.")
    sequence: int = Field(0, description="Arrival order on this thread's queue.")
    duplicate: bool = Field(False, description="The request ID was enqueued before; this is that run.")


class WaitingRequest(BaseModel):
    """A request waiting in a thread's queue, as the queue carries it into its next run
    (continue-as-new): an ``EnqueueRequest`` without what the queue can restore, and written
    without default values, so that a long queue stays well inside Temporal's 2 MB payload."""

    request_id: str
    request: RunRequest = Field(description="Its thread_id or conversation_id is the queue's.")
    sequence: int = 0
    fingerprint: str | None = None
    run_workflow_id: str | None = Field(None, description="Unset: assistant-run/<request_id>.")
    task_queue: str | None = Field(None, description="Unset: the queue's own task queue.")
    summary: str | None = Field(None, description="Unset: '<agent> on <thread>'; empty: no summary.")


class ThreadQueueInput(BaseModel):
    """The queue's state, as the client starts it (only ``thread_id``) and as it continues as new."""

    thread_id: str
    waiting: list[WaitingRequest] = Field(default_factory=list, description="Requests waiting for their turn, oldest first.")
    remembered: dict[str, str] = Field(
        default_factory=dict,
        description="Request IDs accepted earlier and no longer waiting, oldest first -> the first 16 hex digits of "
        "their fingerprint ('' when none), to answer a repeated request and refuse a reused ID.",
    )
    run_workflow_ids: dict[str, str] = Field(
        default_factory=dict, description="Remembered request IDs whose run is not assistant-run/<request ID> -> its workflow ID."
    )
    accepted: int = 0
    finished: int = 0
    search_attributes: bool = Field(
        False,
        description="The namespace has ThreadId and QueuedRuns (the client that started the queue checked): only then "
        "does the queue upsert them. Callers in other languages may set it after registering them.",
    )
    run_search_attributes: bool = Field(
        False,
        description="The namespace has the run's attributes (AssistantId, ThreadId, ApiRunId, RunStatus, ToolNames): "
        "the queue starts each run with AssistantId, ThreadId and RunStatus 'starting' set, so that it is findable "
        "from its first event, also when it fails before its API run exists.",
    )
    # The form earlier versions carried (every field of every waiting request, full fingerprints):
    # read, no longer written. ``pending`` is written as null so that an earlier version, which
    # requires a list, fails on this input (and retries) instead of dropping the waiting requests.
    pending: list[EnqueueRequest] | None = Field(default_factory=list)
    seen: dict[str, str] = Field(default_factory=dict)
    fingerprints: dict[str, str] = Field(default_factory=dict, description="Request ID -> fingerprint, for conflicts.")

    @field_serializer("waiting")
    def _without_defaults(self, waiting: list[WaitingRequest]) -> list[dict[str, Any]]:
        return [w.model_dump(mode="json", exclude_defaults=True) for w in waiting]


class ThreadQueueState(BaseModel):
    thread_id: str
    running: str | None
    waiting: list[str]
    finished: int
    waiting_bytes: int = Field(0, description="What the waiting requests take as the queue carries them (see MAX_WAITING_BYTES).")


class CallbackEvent(BaseModel):
    """The body a callback POSTs (its JSON, signed)."""

    id: str = Field(description="The delivery ID, as in DA-Delivery-Id.")
    type: str = Field(description="run.completed, run.incomplete, run.failed, run.expired or run.cancelled.")
    created: int = Field(description="Unix time the run ended.")
    workflow_id: str
    result: RunResult | None = Field(description="The run's result; null when it failed without one (see error).")
    error: str | None = None
