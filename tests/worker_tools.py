"""Tools the worker tests call. Importing this module registers them in the default registry
(a worker subprocess loads it with DA_TOOL_MODULES=tests.worker_tools)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from durable_assistants.tools import ToolContext, tool

HEAVY_QUEUE = "durable-assistants-test-heavy"
FAST_RETRY = timedelta(milliseconds=100)
CANCELLED: list[str] = []  # call IDs of `slow` calls that heard their cancellation


class PermanentError(Exception):
    """A failure retrying can't fix."""


@tool(max_attempts=3, initial_retry=FAST_RETRY)
def flaky(succeed_on_attempt: int, context: ToolContext) -> str:
    """Fails until the given attempt."""
    if context.attempt < succeed_on_attempt:
        raise RuntimeError(f"flaky failure on attempt {context.attempt}")
    return f"ok on attempt {context.attempt}"

@tool(inline=True, max_attempts=3, initial_retry=FAST_RETRY)
def inline_lookup(key: str, fail_first: int, context: ToolContext) -> dict[str, object]:
    """A fast, idempotent lookup that runs inline, in the model activity; raises on its first `fail_first` tries."""
    if context.failures < fail_first:
        raise RuntimeError(f"lookup of {key} failed (try {context.failures + 1})")
    return {"key": key, "value": key.upper(), "tries": context.failures + 1}

@tool(max_attempts=2, initial_retry=FAST_RETRY)
def always_fails(reason: str) -> str:
    """Always raises."""
    raise RuntimeError(reason)

@tool(max_attempts=2, initial_retry=FAST_RETRY, on_failure="fail_run")
def critical(reason: str) -> str:
    """Always raises; the run can't go on without it."""
    raise RuntimeError(reason)

@tool(max_attempts=5, initial_retry=FAST_RETRY, non_retryable=(PermanentError,))
def permanent(reason: str) -> str:
    """Raises an error that is never retried."""
    raise PermanentError(reason)

@tool(timeout=timedelta(minutes=2), heartbeat_timeout=timedelta(seconds=2), max_attempts=5, initial_retry=FAST_RETRY)
async def slow(seconds: float, marker: str, context: ToolContext) -> str:
    """Sleeps, heartbeating; appends its attempt to the `marker` file when it starts."""
    marker_file = _marker_file(marker)
    if marker_file is not None:
        with marker_file.open("a") as f:
            f.write(f"{context.idempotency_key} attempt {context.attempt}\n")
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            await asyncio.sleep(0.05)
            context.heartbeat({"elapsed": round(time.monotonic() - started, 2)})
    except asyncio.CancelledError:
        CANCELLED.append(context.call_id)
        raise
    return f"slept {seconds}"

def _marker_file(marker: str) -> Path | None:
    """The file `slow` appends to: only an absolute path inside the system temp directory
    (where pytest's ``tmp_path`` lives). Anything else is ignored: when a test does not script
    the arguments, the emulator's model fills the string ``marker`` with text from the user
    message (such as "hi"), and writing that relative path would create a file in the
    worker's working directory, the repository."""
    if not marker or not Path(marker).is_absolute():
        return None
    path = Path(marker).resolve()
    return path if path.is_relative_to(Path(tempfile.gettempdir()).resolve()) else None


@tool
def big_output(size: int) -> str:
    """A long string."""
    return "x" * size

@tool
def structured(n: int) -> dict[str, object]:
    """A dict, sent to the model as JSON."""
    return {"n": n, "squares": [i * i for i in range(n)]}

@tool(task_queue=HEAVY_QUEUE)
def heavy(n: int) -> int:
    """Runs on its own task queue."""
    return n * 2



REFUND_APPROVAL_OVER = 100.0


@tool(approval=lambda arguments: arguments["amount"] > REFUND_APPROVAL_OVER)
def refund(order_id: str, amount: float) -> str:
    """Refund an order; refunds over 100 wait for a person's approval."""
    return f"refunded {amount:.2f} on {order_id}"
