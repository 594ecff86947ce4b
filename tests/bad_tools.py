"""Tools that misbehave, for the worker tests that show what happens then. A worker subprocess
loads them with ``--tools tests.bad_tools``; nothing imports this module in the test process,
so the shared registry (and the assistants other tests build from it) never sees them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from durable_assistants.tools import tool


@tool
def get_blob(size: int) -> dict[str, object]:
    """Returns bytes inside a dict: JSON can't carry them."""
    return {"name": "blob", "data": b"\x00" * size}


@tool(max_attempts=1)
def hang(marker: str) -> str:
    """A sync tool that never returns and never looks at cancellation; writes ``marker`` first."""
    Path(marker).write_text("running")
    time.sleep(3600)
    return "unreachable"


@tool(max_attempts=1)
async def deaf(marker: str) -> str:
    """An async tool that swallows its cancellation and goes on sleeping."""
    Path(marker).write_text("running")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
