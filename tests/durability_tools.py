"""Tools for tests/test_tool_durability.py, run by a worker subprocess
(``DA_TOOL_MODULES=tests.durability_tools``) that the test kills with SIGKILL. Importing this
module registers them in the default registry, so only that subprocess imports it: the test
process builds the same policies from the constants below."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from durable_assistants.tools import ToolContext, tool

# A lost attempt is noticed after the heartbeat timeout; a retry starts after the interval.
HEARTBEAT_TIMEOUT = timedelta(seconds=2)
FIRST_RETRY = timedelta(milliseconds=100)
BUDGET = timedelta(seconds=90)


@tool(heartbeat_timeout=HEARTBEAT_TIMEOUT, initial_retry=FIRST_RETRY, budget=BUDGET)
async def durability_sleep(seconds: float, marker: str, context: ToolContext) -> str:
    """Notes its start in ``marker``, then sleeps (the activity heartbeats meanwhile)."""
    _note(marker, context)
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@tool(heartbeat_timeout=HEARTBEAT_TIMEOUT, initial_retry=FIRST_RETRY, budget=BUDGET)
async def durability_fail(hang_on_attempt: int, marker: str, context: ToolContext) -> str:
    """Notes its start in ``marker``; raises, except on Temporal attempt ``hang_on_attempt``,
    where it waits (for the test to kill its worker)."""
    _note(marker, context)
    if context.attempt == hang_on_attempt:
        await asyncio.sleep(3600)
    raise RuntimeError(f"failed on attempt {context.attempt}")


def _note(marker: str, context: ToolContext) -> None:
    path = Path(marker).resolve()
    if not path.is_relative_to(Path(tempfile.gettempdir()).resolve()):
        raise ValueError(f"marker {marker!r} is not in the system temp directory")
    with path.open("a") as f:
        f.write(f"attempt={context.attempt} failures={context.failures}\n")
