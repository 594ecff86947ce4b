"""Tools for `bench/chaos.py`, loaded by its worker subprocess (``DA_TOOL_MODULES=...,bench.chaos_tools``).

Each execution writes a line when it starts and one when it finishes to the file named by
``CHAOS_TOOL_LOG`` (one ``O_APPEND`` write per line, so lines from concurrent executions and
from a worker killed with SIGKILL never interleave): ``start|done <idempotency key> <label>
<attempt> <pid>``. The chaos run counts executions per call from it. The output names the
call's ``label``, so the final reply shows which outputs reached the model.

Two tools, one async with the default policy (what a user gets without options: 30 s
heartbeat timeout, 3 attempts of its own failures) and one sync (a thread per call) with a
shorter heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from durable_assistants.tools import ToolContext, tool


def _note(event: str, label: str, context: ToolContext) -> None:
    path = os.environ.get("CHAOS_TOOL_LOG")
    if not path:
        return
    line = f"{event} {context.idempotency_key} {label} {context.attempt} {os.getpid()} {time.time():.3f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@tool
async def chaos_async(label: str, seconds: float, context: ToolContext) -> str:
    """Wait ``seconds`` and answer with the label (async; the default tool policy)."""
    _note("start", label, context)
    await asyncio.sleep(seconds)
    _note("done", label, context)
    return f"ok {label}"


@tool(heartbeat_timeout=timedelta(seconds=10))
def chaos_sync(label: str, seconds: float, context: ToolContext) -> str:
    """Wait ``seconds`` and answer with the label (sync: runs in a thread; 10 s heartbeat timeout)."""
    _note("start", label, context)
    time.sleep(seconds)
    _note("done", label, context)
    return f"ok {label}"
