"""Publishing progress from activities to the run's Workflow Stream (text deltas, tool progress)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import structlog
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from workflows.models import PROGRESS_TOPIC, ProgressEvent

log = structlog.get_logger("progress")
BATCH_INTERVAL = timedelta(milliseconds=250)


class ProgressPublisher:
    """An async context manager; outside a worker (``ActivityEnvironment``) it publishes nothing.

    Publishing is best effort: a run's progress must never fail the work it describes.
    """

    def __init__(self) -> None:
        self._client: WorkflowStreamClient | None = None
        self._topic: Any = None

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
        try:
            await self._client.__aexit__(*exc)
        except Exception as error:  # the workflow may have ended first
            log.warning("progress not delivered", error=f"{type(error).__name__}: {error}")
