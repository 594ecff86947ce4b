"""Registered Python functions the model can call, and what the worker needs to run them.

``@tool`` turns a sync or async function into a tool: its name is the function's name, its
description the docstring, its arguments a pydantic model made from the type hints, and
its schema the OpenAI strict function schema of that model (``openai.pydantic_function_tool``).
Per-tool options say how Temporal runs it: timeout, retries, heartbeats, task queue, and
what happens when retries run out.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, get_type_hints

import openai
import pydantic
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

OnFailure = Literal["error_output", "fail_run"]
# Whether a call waits for a person's decision before it runs: never, always, or as the
# tool's predicate over the parsed arguments says ("conditional"; the model activity that
# learns of the call asks it).
Approval = Literal["never", "always", "conditional"]
ApprovalCheck = Callable[[dict[str, Any]], bool]
MAX_DEFAULT_BUDGET_SECONDS = 24 * 3600.0


class ToolPolicy(BaseModel):
    """How the workflow schedules one tool: the part of a tool that crosses into workflow code.

    Durations are seconds so the model stays plain JSON in Temporal's history and UI.

    Two budgets. ``max_attempts`` counts the tool's own failures (attempts that raised); the
    tool's activity enforces it itself (``activities/tools.py``), so an attempt lost with its
    worker (SIGKILL, OOM, a deploy, a heartbeat timeout while nothing ran the tool) never
    uses it up. ``time_budget_seconds()`` bounds everything, lost attempts included: the
    activity's ``schedule_to_close``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task_queue: str | None = None
    timeout_seconds: float = Field(60.0, gt=0, description="Start-to-close timeout of one attempt.")
    heartbeat_timeout_seconds: float | None = Field(None, gt=0)
    max_attempts: int = Field(3, ge=1)
    initial_retry_seconds: float = Field(1.0, gt=0)
    backoff: float = Field(2.0, ge=1)
    max_retry_seconds: float = Field(30.0, gt=0)
    non_retryable_errors: tuple[str, ...] = ()
    on_failure: OnFailure = "error_output"
    budget_seconds: float | None = Field(
        None, gt=0, description="Total time for the call across all attempts, lost ones included; default: see time_budget_seconds()."
    )
    inline: bool = Field(
        False,
        description="Run inside the model activity that learned of the call, not as an activity of its own: for fast, "
        "idempotent tools (docs/tools.md#inline-tools).",
    )
    approval: Approval = Field(
        "never", description="Whether a call waits for a person's decision before it runs (docs/approvals.md)."
    )

    @model_serializer(mode="wrap")
    def _leave_out_unset_budget(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Unset, the fields are not written at all: a worker of the previous version (extra="forbid")
        # still reads the policies a new worker's start activity returns, during a rolling deploy.
        data: dict[str, Any] = handler(self)
        if data.get("budget_seconds") is None:
            data.pop("budget_seconds", None)
        if not data.get("inline"):
            data.pop("inline", None)
        if data.get("approval") == "never":
            data.pop("approval", None)
        return data

    def retry_waits_seconds(self) -> float:
        """The sum of the waits between ``max_attempts`` attempts (Temporal's backoff)."""
        waits, interval = 0.0, self.initial_retry_seconds
        for _ in range(self.max_attempts - 1):
            waits += min(interval, self.max_retry_seconds)
            interval *= self.backoff
        return waits

    def time_budget_seconds(self) -> float:
        """The call's total time across attempts (``schedule_to_close``): ``budget_seconds`` if
        set, else room for ``max_attempts`` attempts of ``timeout_seconds`` and the waits
        between them, twice over (as many attempts again may be lost with their worker),
        capped at 24 hours. A run's own deadline (``expires_at``) can only shorten it."""
        if self.budget_seconds is not None:
            return self.budget_seconds
        own = self.max_attempts * self.timeout_seconds + self.retry_waits_seconds()
        return min(2 * own, MAX_DEFAULT_BUDGET_SECONDS)


class ToolContext:
    """What a running tool may know and do. Declare a parameter of this type to get it.

    ``run_id`` is the run (Assistants API) or the response that asked for the call (Responses
    API); ``thread_id`` the thread or conversation (None on a response chain).
    ``idempotency_key`` is stable across retries of the same call (run ID + tool call ID),
    so a tool with side effects can deduplicate them. ``attempt`` is Temporal's attempt
    number: every start of this call counts, also one whose worker was lost, so more than 1
    means the call may have run before. ``failures`` is how many earlier attempts raised:
    what counts against ``max_attempts``. ``heartbeat(progress)`` reports progress; it is
    safe from sync tools (which run in a thread) and async tools alike.
    """

    def __init__(
        self, *, run_id: str | None, thread_id: str | None, call_id: str, tool_name: str, attempt: int, failures: int = 0
    ) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.call_id = call_id
        self.tool_name = tool_name
        self.attempt = attempt
        self.failures = failures
        self.progress: Any = None
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    @property
    def idempotency_key(self) -> str:
        # A call ID is unique on its own; the run or response (when known) makes the key say whose it is.
        return f"{self.run_id}:{self.call_id}" if self.run_id else self.call_id

    def heartbeat(self, progress: Any = None) -> None:
        with self._lock:
            self.progress = progress
        if self._loop is not None and self._changed is not None:
            self._loop.call_soon_threadsafe(self._changed.set)

    def is_cancelled(self) -> bool:
        """True once the run or workflow was cancelled; long sync tools should check it."""
        return self._cancelled.is_set()

    def _bind(self, loop: asyncio.AbstractEventLoop, changed: asyncio.Event) -> None:
        self._loop, self._changed = loop, changed

    def _mark_cancelled(self) -> None:
        self._cancelled.set()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    function: Callable[..., Any]
    arguments_model: type[BaseModel]
    policy: ToolPolicy
    context_parameter: str | None
    non_retryable: tuple[type[BaseException], ...] = field(default=())
    approval_check: ApprovalCheck | None = None

    def needs_approval(self, arguments: dict[str, Any]) -> str | None:
        """Why this call waits for a person's decision, or None when it need not: the tool's
        own policy (``@tool(approval=...)``); a predicate that raises asks for a decision."""
        if self.policy.approval == "always":
            return f"{self.name} always needs approval"
        if self.policy.approval == "conditional" and self.approval_check is not None:
            try:
                flagged = bool(self.approval_check(arguments))
            except Exception as exc:  # the check itself failed: a person decides
                return f"{self.name}'s approval check failed ({type(exc).__name__}: {exc})"
            if flagged:
                return f"{self.name}'s approval check flagged these arguments"
        return None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def schema(self) -> dict[str, Any]:
        """The Assistants API function tool: ``{"type": "function", "function": {...}}``."""
        param = openai.pydantic_function_tool(self.arguments_model, name=self.name, description=self.description)
        return {"type": "function", "function": dict(param["function"])}

    def parse_arguments(self, arguments: dict[str, Any]) -> BaseModel:
        return self.arguments_model.model_validate(arguments)

    def call_kwargs(self, parsed: BaseModel, context: ToolContext | None) -> dict[str, Any]:
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.context_parameter is not None:
            kwargs[self.context_parameter] = context
        return kwargs


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def tool(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        task_queue: str | None = None,
        timeout: timedelta = timedelta(seconds=60),
        heartbeat_timeout: timedelta | None = None,
        max_attempts: int = 3,
        initial_retry: timedelta = timedelta(seconds=1),
        backoff: float = 2.0,
        max_retry_interval: timedelta = timedelta(seconds=30),
        non_retryable: tuple[type[BaseException], ...] = (),
        on_failure: OnFailure = "error_output",
        budget: timedelta | None = None,
        inline: bool = False,
        approval: Literal["never", "always"] | ApprovalCheck = "never",
    ) -> Any:
        """Register a function as a tool; usable bare (``@tool``) or with options.

        ``max_attempts`` counts the tool's own failures (it raised); ``budget`` is the call's
        total time across attempts, attempts lost with a worker included (default: see
        ``ToolPolicy.time_budget_seconds``). ``inline``: the tool is fast (well under its
        ``timeout``) and idempotent (running it again does no harm), and runs inside the model
        activity that learned of the call: a round of inline tools costs no activity of its own
        (docs/tools.md#inline-tools). ``approval``: ``"always"``, ``"never"``, or a predicate
        over the call's parsed arguments (a dict) that says whether this call must wait for a
        person's decision before it runs (docs/approvals.md)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or fn.__name__
            if tool_name in self._tools:
                raise ValueError(f"a tool named {tool_name!r} is already registered")
            if inline and task_queue is not None:
                raise ValueError(
                    f"tool {tool_name!r}: an inline tool runs in the model activity on the run's own task queue; "
                    f"it cannot have task_queue={task_queue!r}"
                )
            if callable(approval):
                approval_mode: Approval = "conditional"
            elif approval in ("never", "always"):
                approval_mode = approval
            else:
                raise ValueError(
                    f"tool {tool_name!r}: approval must be 'always', 'never' or a function of the arguments, got {approval!r}"
                )
            if inline and approval_mode != "never":
                raise ValueError(
                    f"tool {tool_name!r}: an inline tool runs as soon as the model asks for it; "
                    "a tool that needs approval cannot be inline"
                )
            arguments_model, context_parameter = _arguments_model(fn, tool_name)
            policy = ToolPolicy(
                name=tool_name,
                task_queue=task_queue,
                timeout_seconds=timeout.total_seconds(),
                heartbeat_timeout_seconds=heartbeat_timeout.total_seconds() if heartbeat_timeout else None,
                max_attempts=max_attempts,
                initial_retry_seconds=initial_retry.total_seconds(),
                backoff=backoff,
                max_retry_seconds=max_retry_interval.total_seconds(),
                non_retryable_errors=tuple(e.__name__ for e in non_retryable),
                on_failure=on_failure,
                budget_seconds=budget.total_seconds() if budget is not None else None,
                inline=inline,
                approval=approval_mode,
            )
            self._tools[tool_name] = Tool(
                name=tool_name,
                description=description or inspect.getdoc(fn),
                function=fn,
                arguments_model=arguments_model,
                policy=policy,
                context_parameter=context_parameter,
                non_retryable=non_retryable,
                approval_check=approval if callable(approval) else None,
            )
            return fn

        return register(function) if function is not None else register

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self]

    def policies(self) -> dict[str, ToolPolicy]:
        return {t.name: t.policy for t in self}

    def for_queue(self, task_queue: str | None) -> list[Tool]:
        """Tools a worker on ``task_queue`` runs; ``None`` means the run workflow's own queue."""
        return [t for t in self if t.policy.task_queue == task_queue]


def _arguments_model(fn: Callable[..., Any], tool_name: str) -> tuple[type[BaseModel], str | None]:
    try:
        hints = get_type_hints(fn)
    except Exception as exc:  # a hint naming something undefined, or not a type at all
        raise TypeError(f"tool {tool_name!r}: cannot resolve its type hints: {type(exc).__name__}: {exc}") from None
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(fn).parameters.values():
        annotation = hints.get(parameter.name, Any)
        if annotation is ToolContext:
            context_parameter = parameter.name
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args and **kwargs can't be described to the model")
        if parameter.name not in hints:
            raise TypeError(f"tool {tool_name!r}: parameter {parameter.name!r} needs a type hint")
        _check_describable(tool_name, parameter.name, annotation)
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model = pydantic.create_model(
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    try:
        # Built now, not when the worker first sends it: a tool the model can't be told about
        # fails where it is defined.
        openai.pydantic_function_tool(model, name=tool_name)
    except Exception as exc:
        raise TypeError(f"tool {tool_name!r}: its arguments have no strict JSON schema: {_first_line(exc)}") from None
    return model, context_parameter


def _check_describable(tool_name: str, parameter: str, annotation: Any) -> None:
    """The model passes arguments as JSON, so each parameter's type needs a JSON schema."""
    try:
        pydantic.TypeAdapter(annotation).json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticInvalidForJsonSchema) as exc:
        # pydantic's own advice (arbitrary_types_allowed) would not give the model a schema either.
        unknown = re.match(r"Unable to generate pydantic-core schema for (.+?)\. ", str(exc))
        why = f"pydantic cannot validate {unknown.group(1)}" if unknown else _first_line(exc)
        raise TypeError(
            f"tool {tool_name!r}: parameter {parameter!r} has type {type_name(annotation)}, which has no JSON schema "
            f"({why}); use str, int, float, bool, a Literal, an Enum, lists, dicts or a pydantic model"
        ) from None


def type_name(annotation: Any) -> str:
    """``socket.socket``, ``bytes``, ``typing.Callable[[int], int]``: how a type reads in an error."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        module = annotation.__module__
        return annotation.__qualname__ if module == "builtins" else f"{module}.{annotation.__qualname__}"
    return repr(annotation)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


registry = ToolRegistry()
tool = registry.tool
