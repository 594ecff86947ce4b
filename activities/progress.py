"""Publishing progress from activities to the run's Workflow Stream (text deltas, tool progress)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import structlog
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from workflows.models import PROGRESS_TOPIC, ProgressEvent

log = structlog.get_logger("progress")
BATCH_INTERVAL = timedelta(milliseconds=250)
# How long a publisher left in the background may still try to deliver what it holds.
FINAL_FLUSH_SECONDS = 5.0
_draining: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones


class ProgressPublisher:
    """An async context manager; outside a worker (``ActivityEnvironment`` without a client)
    it publishes nothing.

    Publishing is best effort: a run's progress must never fail the work it describes.
    With ``wait_on_exit=False`` (tool activities) it must not delay that work either: leaving
    returns at once and the last batch is flushed in the background for at most
    ``final_flush_seconds`` (default ``FINAL_FLUSH_SECONDS``), then dropped with a warning. The activity's result therefore
    usually reaches the workflow before the tool's last progress does, and a worker killed
    meanwhile loses only that progress, never the result. By default (model activities,
    whose streamed text must precede the turn's result) leaving waits for the flush.
    """

    def __init__(self, *, wait_on_exit: bool = True, final_flush_seconds: float | None = None) -> None:
        self._client: WorkflowStreamClient | None = None
        self._topic: Any = None
        self._wait_on_exit = wait_on_exit
        self._final_flush_seconds = final_flush_seconds

    async def __aenter__(self) -> "ProgressPublisher":
        try:
            self._client = WorkflowStreamClient.from_within_activity(batch_interval=BATCH_INTERVAL)
        except RuntimeError:
            return self  # no Temporal client here (a unit test)
        await self._client.__aenter__()
        self._topic = self._client.topic(PROGRESS_TOPIC, type=ProgressEvent)
        return self

    def publish(self, kind: str, **fields: Any) -> None:
        if self._topic is not None:
            self._topic.publish(ProgressEvent(kind=kind, at=time.time(), **fields))  # type: ignore[arg-type]

    async def __aexit__(self, *exc: object) -> None:
        if self._client is None:
            return
        self._topic = None  # nothing more from here
        if self._wait_on_exit:
            await self._close(self._client)
            return
        seconds = FINAL_FLUSH_SECONDS if self._final_flush_seconds is None else self._final_flush_seconds
        task = asyncio.create_task(self._close_within(self._client, seconds))
        _draining.add(task)
        task.add_done_callback(_draining.discard)

    @staticmethod
    async def _close(client: WorkflowStreamClient) -> None:
        try:
            await client.__aexit__(None, None, None)
        except Exception as error:  # the workflow may have ended first
            log.warning("progress not delivered", error=f"{type(error).__name__}: {error}")

    @classmethod
    async def _close_within(cls, client: WorkflowStreamClient, seconds: float) -> None:
        try:
            await asyncio.wait_for(cls._close(client), seconds)
        except asyncio.TimeoutError:
            log.warning("progress not delivered", error=f"its last batch was still not sent after {seconds:g} s; dropped")


def publishers_draining() -> int:
    """How many publishers are still flushing in the background (for tests and shutdown logs)."""
    return len(_draining)
