"""The seam between the worker and a model API.

Workflows and tools never see which API runs: the model activities call a ``ModelBackend``.
The Assistants backend (``assistants.py``) implements it over threads and runs; a Responses
backend would implement it over background responses and ``function_call_output`` items.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from workflows.models import RunRequest, RunSnapshot

Heartbeat = Callable[[dict[str, Any]], None]
OnText = Callable[[str], None]


class ModelBackend(Protocol):
    async def check_assistant(self, assistant_id: str) -> None:
        """Raise a non-retryable error if the assistant doesn't exist."""

    async def create_conversation(self, request: RunRequest, key: str) -> str:
        """Create the thread (with the request's messages) and return its ID."""

    async def start(
        self, request: RunRequest, thread_id: str, key: str, add_messages: bool, heartbeat: Heartbeat, on_text: OnText
    ) -> RunSnapshot:
        """Add messages and create the run, both idempotent under ``key``; wait until it is
        actionable. In stream mode, ``on_text`` gets the assistant's text deltas."""

    async def submit_and_wait(
        self,
        snapshot: RunSnapshot,
        outputs: list[dict[str, str]],
        mode: str,
        heartbeat: Heartbeat,
        on_text: OnText,
    ) -> RunSnapshot:
        """Submit every output of the round in one request (a repeat is success), then wait."""

    async def wait(self, snapshot: RunSnapshot, heartbeat: Heartbeat) -> RunSnapshot:
        """Wait until the run needs action or ends."""

    async def cancel(self, thread_id: str, run_id: str, heartbeat: Heartbeat) -> RunSnapshot:
        """Cancel the run (already ended is fine) and wait until it is terminal."""
