"""Tool activities: one activity type per registered tool, named after the tool.

The executor parses and validates the model's arguments (a problem there is the model's,
so it is non-retryable), runs the function (async directly, sync on the worker's tool thread
pool), heartbeats the tool's latest progress while it runs so cancellation reaches it, and
returns the output as text: strings as they are, anything else as JSON, cut at the request's
cap with a marker. A value JSON cannot carry (bytes, a set, an arbitrary object) fails the
call once, naming the tool and the type, instead of reaching the model as its ``str()``.

The tool's retry budget (``max_attempts``) counts its own failures, and the activity keeps
the count: in its heartbeat details, which Temporal hands to the next attempt. An attempt
that raises heartbeats the new count before it fails; an attempt lost with its worker
(SIGKILL, a heartbeat timeout) never does, so it never counts. When the count reaches
``max_attempts`` the activity fails with a non-retryable ``ToolRetriesExhausted``. A workflow
that schedules tools with unlimited Temporal attempts and a ``schedule_to_close`` budget
(``ToolPolicy.time_budget_seconds``) thus retries lost attempts within that time and the
tool's own failures up to ``max_attempts``; one that still passes ``maximum_attempts`` gets
Temporal's own limit, which counts every attempt, as before.

Nothing stands between a tool returning and its activity completing: the progress publisher
is left to flush in the background (``ProgressPublisher(wait_on_exit=False)``).

Why one module of about 490 lines: one tool call's lifecycle as an activity (parse, run,
heartbeat, count failures, render the output, or run inline) shares the failure counting and
the rendering rules; they are read together when a tool misbehaves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import datetime
import decimal
import enum
import functools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import structlog
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from durable_assistants.activities import tracing
from durable_assistants.activities.progress import ProgressPublisher
from durable_assistants.tools import Tool, ToolContext, ToolRegistry
from durable_assistants.tools.registry import type_name
from durable_assistants.workflows import metrics
from durable_assistants.workflows.activity_models import INVALID_ARGUMENTS, TOOL_RETRIES_EXHAUSTED, ToolCallInput, ToolCallOutput
from durable_assistants.workflows.models import InlineToolResult

log = structlog.get_logger("tools")

DEFAULT_HEARTBEAT_SECONDS = 10.0
# A tool's progress reaches followers (the run's stream) at most this often, the newest value
# each time and the last one at the end; its heartbeats, which the Temporal UI shows live on
# the pending activity, go out at once. A progress event costs the run a signal and a workflow
# task: at one report a second, about 4 history events a second became 4 every 5 s.
PROGRESS_EVENT_SECONDS = 5.0
ERROR_CHARS = 1000


OUTPUT_NOT_JSON = "ToolOutputNotJson"
JSON_HINT = "return str, numbers, bool, None, lists, dicts with str keys, or a pydantic model"


class OutputNotJson(TypeError):
    """A tool returned something JSON cannot carry; ``what`` says what, ``path`` where."""

    def __init__(self, tool: str, what: str, path: str) -> None:
        super().__init__(f"{tool} returned {what}, which JSON cannot carry (at {path}); {JSON_HINT}")
        self.what, self.path = what, path


def _rendered(value: Any, cap: int, tool: str) -> tuple[Any, str, bool]:
    """One pass over a tool's return value: its plain JSON value, the model's text (a string
    as it is, anything else as JSON, cut at ``cap`` with a marker) and whether it was cut."""
    if isinstance(value, str):
        plain, text = value, value
    else:
        try:
            plain = _json_value(value, "$")
            text = json.dumps(plain, ensure_ascii=False, allow_nan=False)
        except _NotJson as exc:
            raise OutputNotJson(tool, exc.what, exc.path) from None
        except RecursionError:
            raise OutputNotJson(tool, "a structure nested too deeply (or containing itself)", "$") from None
    if len(text) <= cap:
        return plain, text, False
    marker = f"…[truncated {len(text) - cap} of {len(text)} characters]"
    return plain, text[: max(0, cap - len(marker))] + marker, True


def render_output(value: Any, cap: int, tool: str = "the tool") -> tuple[str, bool]:
    """The model's text for a tool's return value: a string as it is, anything else as JSON,
    cut at ``cap`` with a marker. A value JSON cannot carry raises ``OutputNotJson`` rather
    than reaching the model as some ``str()`` of it (``<socket.socket fd=3 ...>``)."""
    _, text, truncated = _rendered(value, cap, tool)
    return text, truncated


def render_value(value: Any, cap: int, tool: str = "the tool") -> tuple[str | dict[str, Any] | list[Any], bool]:
    """What the activity hands back for a tool's return value: a dict or list as plain JSON
    values when its text fits ``cap`` (``output_text`` gives the very text ``render_output``
    would), else ``render_output``'s text."""
    plain, text, truncated = _rendered(value, cap, tool)
    return _handed_back(plain, text, truncated), truncated


def _handed_back(plain: Any, text: str, truncated: bool) -> str | dict[str, Any] | list[Any]:
    return plain if not truncated and isinstance(plain, (dict, list)) else text


class _NotJson(Exception):
    def __init__(self, what: str, path: str) -> None:
        self.what, self.path = what, path


def _json_value(value: Any, path: str) -> Any:
    """``value`` as plain JSON types, or ``_NotJson`` naming the first part that isn't."""
    if isinstance(value, enum.Enum):
        return _json_value(value.value, path)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _NotJson(f"float {value}", path)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)  # Decimal as text: a JSON number would lose its precision
    if isinstance(value, BaseModel):
        return _model_value(value, path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_value(getattr(value, f.name), _member(path, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_key(key, path): _json_value(item, _member(path, key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise _NotJson(type_name(type(value)), path)


def _model_value(model: BaseModel, path: str) -> Any:
    # The model's own serializers decide (bytes fields, custom types); only what they can't do fails.
    try:
        return model.model_dump(mode="json")
    except PydanticSerializationError as exc:
        raise _NotJson(f"a {type_name(type(model))} that pydantic cannot serialize ({exc})", path) from None


def _key(key: Any, path: str) -> str:
    if isinstance(key, str):
        return key
    raise _NotJson(f"a dict key of type {type_name(type(key))} ({key!r})", path)


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if name.isidentifier() else f"{path}[{json.dumps(name)}]"


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def tool_activity(tool: Tool, executor: concurrent.futures.Executor | None = None) -> Callable[..., Any]:
    """The activity that runs ``tool``; its activity type is the tool's name. A sync tool runs
    on ``executor`` (the worker's tool thread pool; None: the event loop's default one)."""

    @activity.defn(name=tool.name)
    async def run_tool(call: ToolCallInput) -> ToolCallOutput:
        return await execute(tool, call, executor)

    return run_tool


def tool_activities(
    registry: ToolRegistry, task_queue: str | None, executor: concurrent.futures.Executor | None = None
) -> list[Callable[..., Any]]:
    return [tool_activity(t, executor) for t in registry.for_queue(task_queue)]


async def execute(tool: Tool, call: ToolCallInput, executor: concurrent.futures.Executor | None = None) -> ToolCallOutput:
    info = activity.info()
    structlog.contextvars.bind_contextvars(
        workflow_id=info.workflow_id, run_id=call.run_id, thread_id=call.thread_id,
        tool=tool.name, call_id=call.call_id, attempt=info.attempt,
    )
    tracing.annotate({"durable_assistants.run_id": call.run_id, "durable_assistants.thread_id": call.thread_id,
                      "durable_assistants.tool": tool.name, "durable_assistants.call_id": call.call_id})
    started = time.monotonic()
    outcome = "error"
    try:
        result = await _execute(tool, call, info, executor)
        outcome = "ok"
        return result
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except ApplicationError as exc:
        if exc.type == INVALID_ARGUMENTS:
            outcome = "invalid_arguments"
        raise
    finally:
        metrics.tool_call(tool.name, outcome, datetime.timedelta(seconds=time.monotonic() - started))
        structlog.contextvars.clear_contextvars()


class _Beat:
    """What every heartbeat of a tool activity carries: the tool's latest progress, and its
    own failures so far (the count its retry budget keeps across attempts)."""

    def __init__(self, context: ToolContext, failures: int, last_error: str | None) -> None:
        self.context = context
        self.failures = failures
        self.last_error = last_error

    def details(self) -> dict[str, Any]:
        details = {"tool": self.context.tool_name, "call_id": self.context.call_id, "progress": self.context.progress}
        if self.failures:  # absent: none yet
            details.update(failures=self.failures, last_error=self.last_error)
        return details

    def failed(self, exc: BaseException) -> None:
        """Count a failure of the tool's own and record it at once: Temporal sends the last
        heartbeat with the attempt's failure, and the next attempt starts from it."""
        self.failures += 1
        self.last_error = _describe(exc)
        activity.heartbeat(self.details())


def recalled_failures(details: Any) -> tuple[int, str | None]:
    """The tool's own failures recorded by earlier attempts of this call (their heartbeat)."""
    first = details[0] if details else None
    if not isinstance(first, dict):
        return 0, None
    failures = first.get("failures")
    last_error = first.get("last_error")
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        failures = 0
    return failures, last_error if isinstance(last_error, str) else None


def _budget_is_ours(info: activity.Info) -> bool:
    """True when Temporal retries without a limit of attempts (the workflow leaves the
    tool's budget to this activity); False when ``maximum_attempts`` is set, and Temporal's
    limit, which counts every attempt, applies as it always did."""
    policy = info.retry_policy
    return policy is None or policy.maximum_attempts == 0


async def _execute(
    tool: Tool, call: ToolCallInput, info: activity.Info, executor: concurrent.futures.Executor | None
) -> ToolCallOutput:
    parsed = parse_call(tool, call.arguments)

    failures, last_error = recalled_failures(info.heartbeat_details)
    ours = _budget_is_ours(info)
    context = ToolContext(
        run_id=call.run_id, thread_id=call.thread_id, call_id=call.call_id, tool_name=tool.name,
        attempt=info.attempt, failures=failures,
    )
    beat = _Beat(context, failures, last_error)
    log.info("tool started", failures=failures)
    changed = asyncio.Event()
    context._bind(asyncio.get_running_loop(), changed)
    interval = (tool.policy.heartbeat_timeout_seconds or DEFAULT_HEARTBEAT_SECONDS * 3) / 3
    stop = asyncio.Event()
    heartbeater = asyncio.create_task(_heartbeat_until_done(beat, changed, stop, interval))
    kwargs = tool.call_kwargs(parsed, context)
    try:
        if tool.is_async:
            with _running.track(tool.name):
                value = await tool.function(**kwargs)
        else:
            # The context's copy carries the call's log fields into the thread (as asyncio.to_thread does).
            run = functools.partial(contextvars.copy_context().run, _run_sync, tool, kwargs)
            value = await asyncio.get_running_loop().run_in_executor(executor, run)
    except asyncio.CancelledError:
        context._mark_cancelled()  # a sync tool in its thread sees this through is_cancelled()
        log.info("tool cancelled")
        raise
    except tool.non_retryable as exc:
        log.warning("tool failed, not retryable", error=f"{type(exc).__name__}: {exc}")
        raise ApplicationError(f"{tool.name}: {exc}", type=type(exc).__name__, non_retryable=True) from exc
    except Exception as exc:
        beat.failed(exc)
        limit = tool.policy.max_attempts
        if ours and beat.failures >= limit:
            log.warning("tool failed; its retries are used up", error=beat.last_error, failures=beat.failures)
            raise ApplicationError(
                f"{tool.name} failed {beat.failures} of {limit} attempts; last error: {beat.last_error}",
                {
                    "tool": tool.name, "failures": beat.failures, "max_attempts": limit,
                    "error_type": type(exc).__name__, "error": str(exc)[:ERROR_CHARS],
                },
                type=TOOL_RETRIES_EXHAUSTED,
                non_retryable=True,
            ) from exc
        log.warning("tool failed", error=beat.last_error, failures=beat.failures)
        raise
    finally:
        # The heartbeater ends at once; the progress it still holds is flushed in the background.
        stop.set()
        await asyncio.shield(heartbeater)
    try:
        plain, text, truncated = _rendered(value, call.output_cap_chars, tool.name)
    except OutputNotJson as exc:
        # The same value would come back on every retry: a bug in the tool, told once.
        log.warning("tool output not JSON", error=str(exc))
        raise ApplicationError(str(exc), type=OUTPUT_NOT_JSON, non_retryable=True) from None
    log.info("tool finished", output_chars=len(text), truncated=truncated)
    output = _handed_back(plain, text, truncated)
    attempt = failures + 1 if ours else info.attempt
    return ToolCallOutput(output=output, attempt=attempt, truncated=truncated, executions=info.attempt)


def parse_call(tool: Tool, arguments: dict[str, Any] | str) -> pydantic.BaseModel:
    """A call's arguments (the object, or the model's text) checked against the tool's model;
    ``ApplicationError`` of type ``InvalidToolArguments`` (the model's mistake) saying why."""
    try:
        raw: Any = arguments if isinstance(arguments, dict) else json.loads(arguments) if arguments.strip() else {}
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        return tool.parse_arguments(raw)
    except pydantic.ValidationError as exc:
        log.warning("tool arguments invalid", problems=describe_validation_error(exc))
        raise _invalid(f"invalid arguments for {tool.name}: {describe_validation_error(exc)}") from None
    except ValueError as exc:
        log.warning("tool arguments not a JSON object", error=str(exc))
        raise _invalid(f"arguments for {tool.name} are not a JSON object: {exc}") from None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


class RunningTools:
    """The tools running in this process, for a worker that has to say what it leaves behind.

    A sync tool counts until its thread returns, even after its activity was cancelled: a
    thread can't be stopped, and it is what keeps a shutting-down worker from exiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # read from a watchdog thread
        self._names: dict[object, str] = {}

    @contextlib.contextmanager
    def track(self, name: str) -> Iterator[None]:
        token = object()
        with self._lock:
            self._names[token] = name
        try:
            yield
        finally:
            with self._lock:
                del self._names[token]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._names.values())


_running = RunningTools()


def running_tools() -> list[str]:
    """Names of the tools running now (one entry per call), sorted."""
    return _running.names()


def _run_sync(tool: Tool, kwargs: dict[str, Any]) -> Any:
    with _running.track(tool.name):
        return tool.function(**kwargs)


def _invalid(message: str) -> ApplicationError:
    # The model's mistake, answered with an error output: expected, so BENIGN (no traceback in the worker log).
    return ApplicationError(message, type=INVALID_ARGUMENTS, non_retryable=True, category=ApplicationErrorCategory.BENIGN)


async def _heartbeat_until_done(beat: _Beat, changed: asyncio.Event, stop: asyncio.Event, interval: float) -> None:
    """Heartbeat at least every ``interval`` and at once when the tool reports progress, until
    ``stop``; new progress also goes to the run's stream. Temporal throttles what it sends; the
    newest details win. (A stop event, not task cancellation: on Python 3.11 ``wait_for`` can
    swallow a cancel that races a wake-up.) Leaving does not wait for the stream: see
    ``ProgressPublisher``."""
    context = beat.context
    async with ProgressPublisher(wait_on_exit=False) as stream:
        published: Any = None
        published_at = -PROGRESS_EVENT_SECONDS

        def publish(progress: Any) -> None:
            stream.publish(
                "tool_progress", tool=context.tool_name, call_id=context.call_id, attempt=context.attempt,
                run_id=context.run_id, thread_id=context.thread_id, progress=progress,
            )

        first = True
        while not stop.is_set():
            progress = context.progress
            # Not at the start of an attempt with nothing to say: an instant tool then costs no
            # heartbeat (each is a write on the server). Progress goes at once (the UI's pending
            # activity shows it live); otherwise one every interval keeps the timeout away.
            # (Failures recalled from earlier attempts are on the server already.)
            if not first or progress is not None:
                activity.heartbeat(beat.details())
            first = False
            wait = interval
            if progress is not None and progress != published:
                # Followers get the newest progress at most every PROGRESS_EVENT_SECONDS: each
                # event is a signal and a workflow task in the run's history.
                due = published_at + PROGRESS_EVENT_SECONDS - time.monotonic()
                if due <= 0:
                    publish(progress)
                    published, published_at = progress, time.monotonic()
                else:
                    wait = min(wait, due)
            changed.clear()
            waiters = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        if context.progress is not None and context.progress != published:
            publish(context.progress)  # the last progress, whatever the pace


# ---------------------------------------------------------------------------- inline tools


async def run_inline(
    tool: Tool, call_id: str, arguments: str, run_id: str | None, thread_id: str | None, cap: int, attempt: int
) -> InlineToolResult:
    """Run an inline tool (``@tool(inline=True)``) inside the model activity that learned of
    its call: the arguments checked as an activity would, the tool's own retries (its
    ``max_attempts``, backoff and non-retryable errors) in place, each attempt bounded by its
    ``timeout``, a sync tool on a thread. The result is the model's text, or an error output;
    ``attempt`` is the model activity's (more than 1: this call may have run before)."""
    started = time.monotonic()
    structlog.contextvars.bind_contextvars(tool=tool.name, call_id=call_id)
    try:
        try:
            parsed = parse_call(tool, arguments)
        except ApplicationError as exc:  # the model's mistake: an error output, as from an activity
            return _inline_result(tool, call_id, f"Error: {exc.message}", 1, started, exc.message, "invalid_arguments")
        policy = tool.policy
        wait = policy.initial_retry_seconds
        failures = 0
        while True:
            context = ToolContext(run_id=run_id, thread_id=thread_id, call_id=call_id, tool_name=tool.name, attempt=attempt, failures=failures)
            kwargs = tool.call_kwargs(parsed, context)
            try:
                if tool.is_async:
                    value = await asyncio.wait_for(tool.function(**kwargs), policy.timeout_seconds)
                else:
                    run = functools.partial(contextvars.copy_context().run, _run_sync, tool, kwargs)
                    value = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, run), policy.timeout_seconds)
                output, truncated = render_output(value, cap, tool.name)
                log.info("inline tool finished", output_chars=len(output), truncated=truncated, failures=failures)
                return _inline_result(tool, call_id, output, failures + 1, started, None, "ok")
            except OutputNotJson as exc:
                return _inline_result(tool, call_id, f"Error: tool {tool.name} failed: {exc}", failures + 1, started, str(exc), "error")
            except Exception as exc:  # the tool's own failure (a timeout too): its retry budget
                failures += 1
                # As an activity's failure reads: the error's message (a timeout says so).
                timed_out = isinstance(exc, asyncio.TimeoutError)
                message = f"{tool.name} did not finish within {policy.timeout_seconds:g} s" if timed_out else str(exc)[:ERROR_CHARS]
                final = isinstance(exc, tool.non_retryable) or failures >= policy.max_attempts
                log.warning("inline tool failed", error=_describe(exc), failures=failures, retrying=not final)
                if final:
                    return _inline_result(tool, call_id, f"Error: tool {tool.name} failed: {message}", failures, started, message, "error")
                await asyncio.sleep(min(wait, policy.max_retry_seconds))
                wait *= policy.backoff
    finally:
        structlog.contextvars.unbind_contextvars("tool", "call_id")


def _inline_result(tool: Tool, call_id: str, output: str, attempts: int, started: float, error: str | None, outcome: str) -> InlineToolResult:
    duration = time.monotonic() - started
    metrics.tool_call(tool.name, outcome, datetime.timedelta(seconds=duration))
    return InlineToolResult(call_id=call_id, output=output, attempts=attempts, duration_seconds=duration, error=error, outcome=outcome)
