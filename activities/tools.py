"""Tool activities: one activity type per registered tool, named after the tool.

The executor parses and validates the model's arguments (a problem there is the model's,
so it is non-retryable), runs the function (async directly, sync in a thread), heartbeats
the tool's latest progress while it runs so cancellation reaches it, and returns the output
as text: strings as they are, anything else as JSON, cut at the request's cap with a marker.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pydantic
import structlog
from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from tools import Tool, ToolContext, ToolRegistry

from .progress import ProgressPublisher

log = structlog.get_logger("tools")

INVALID_ARGUMENTS = "InvalidToolArguments"
DEFAULT_HEARTBEAT_SECONDS = 10.0


class ToolCallInput(BaseModel):
    run_id: str = Field(description="The run (Assistants) or the response that asked for the call (Responses).")
    thread_id: str | None = Field(description="The thread or conversation; None on a response chain.")
    call_id: str
    name: str
    arguments: str
    output_cap_chars: int = 16_000


class ToolCallOutput(BaseModel):
    output: str
    attempt: int
    truncated: bool = False


def render_output(value: Any, cap: int) -> tuple[str, bool]:
    text = value if isinstance(value, str) else json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)
    if len(text) <= cap:
        return text, False
    marker = f"…[truncated {len(text) - cap} of {len(text)} characters]"
    return text[: max(0, cap - len(marker))] + marker, True


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def tool_activity(tool: Tool) -> Callable[..., Any]:
    """The activity that runs ``tool``; its activity type is the tool's name."""

    @activity.defn(name=tool.name)
    async def run_tool(call: ToolCallInput) -> ToolCallOutput:
        return await execute(tool, call)

    return run_tool


def tool_activities(registry: ToolRegistry, task_queue: str | None) -> list[Callable[..., Any]]:
    return [tool_activity(t) for t in registry.for_queue(task_queue)]


async def execute(tool: Tool, call: ToolCallInput) -> ToolCallOutput:
    info = activity.info()
    structlog.contextvars.bind_contextvars(
        workflow_id=info.workflow_id, run_id=call.run_id, thread_id=call.thread_id,
        tool=tool.name, call_id=call.call_id, attempt=info.attempt,
    )
    try:
        return await _execute(tool, call, info.attempt)
    finally:
        structlog.contextvars.clear_contextvars()


async def _execute(tool: Tool, call: ToolCallInput, attempt: int) -> ToolCallOutput:
    try:
        raw = json.loads(call.arguments) if call.arguments.strip() else {}
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        parsed = tool.parse_arguments(raw)
    except pydantic.ValidationError as exc:
        log.warning("tool arguments invalid", problems=describe_validation_error(exc))
        raise _invalid(f"invalid arguments for {tool.name}: {describe_validation_error(exc)}") from None
    except ValueError as exc:
        log.warning("tool arguments not a JSON object", error=str(exc))
        raise _invalid(f"arguments for {tool.name} are not a JSON object: {exc}") from None

    context = ToolContext(
        run_id=call.run_id, thread_id=call.thread_id, call_id=call.call_id, tool_name=tool.name, attempt=attempt
    )
    log.info("tool started")
    changed = asyncio.Event()
    context._bind(asyncio.get_running_loop(), changed)
    interval = (tool.policy.heartbeat_timeout_seconds or DEFAULT_HEARTBEAT_SECONDS * 3) / 3
    stop = asyncio.Event()
    heartbeater = asyncio.create_task(_heartbeat_until_done(context, changed, stop, interval))
    kwargs = tool.call_kwargs(parsed, context)
    try:
        if tool.is_async:
            value = await tool.function(**kwargs)
        else:
            value = await asyncio.to_thread(tool.function, **kwargs)
    except asyncio.CancelledError:
        context._mark_cancelled()  # a sync tool in its thread sees this through is_cancelled()
        log.info("tool cancelled")
        raise
    except tool.non_retryable as exc:  # type: ignore[misc]
        log.warning("tool failed, not retryable", error=f"{type(exc).__name__}: {exc}")
        raise ApplicationError(f"{tool.name}: {exc}", type=type(exc).__name__, non_retryable=True) from exc
    except Exception as exc:
        log.warning("tool failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stop.set()
        await asyncio.shield(heartbeater)
    output, truncated = render_output(value, call.output_cap_chars)
    log.info("tool finished", output_chars=len(output), truncated=truncated)
    return ToolCallOutput(output=output, attempt=attempt, truncated=truncated)


def _invalid(message: str) -> ApplicationError:
    # The model's mistake, answered with an error output: expected, so BENIGN (no traceback in the worker log).
    return ApplicationError(message, type=INVALID_ARGUMENTS, non_retryable=True, category=ApplicationErrorCategory.BENIGN)


async def _heartbeat_until_done(context: ToolContext, changed: asyncio.Event, stop: asyncio.Event, interval: float) -> None:
    """Heartbeat at least every ``interval`` and at once when the tool reports progress, until
    ``stop``; new progress also goes to the run's stream. Temporal throttles what it sends; the
    newest details win. (A stop event, not task cancellation: on Python 3.11 ``wait_for`` can
    swallow a cancel that races a wake-up.)"""
    async with ProgressPublisher() as stream:
        published: Any = None
        while not stop.is_set():
            progress = context.progress
            activity.heartbeat({"tool": context.tool_name, "call_id": context.call_id, "progress": progress})
            if progress is not None and progress != published:
                stream.publish(
                    "tool_progress", tool=context.tool_name, call_id=context.call_id, attempt=context.attempt,
                    run_id=context.run_id, thread_id=context.thread_id, progress=progress,
                )
                published = progress
            changed.clear()
            waiters = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
