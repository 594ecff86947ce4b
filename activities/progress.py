"""Publishing progress from activities to the run's Workflow Stream (text deltas, tool progress)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from durable_assistants.workflows.models import PROGRESS_TOPIC, ProgressEvent

log = structlog.get_logger("progress")
BATCH_INTERVAL = timedelta(milliseconds=250)
# Streamed text is paced (model activities): each batch costs the run a signal and a workflow
# task (about 4 history events), so the pause between batches grows from the first to the cap
# by TEXT_GROWTH, and one activity attempt (a model turn) sends at most TEXT_BATCHES batches
# before its end; what comes after them arrives with the last batch, when the turn ends. A
# turn of 6 s costs 7 batches (24 at a flat 250 ms); the text of the first ~75 s streams live.
TEXT_FIRST_BATCH = 0.25
TEXT_GROWTH = 1.5
TEXT_BATCH_CAP = 5.0
TEXT_BATCHES = 20
# A paced publisher's client never flushes on its own timer: the pacer decides.
_NEVER = timedelta(days=1)
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

    def __init__(
        self,
        *,
        wait_on_exit: bool = True,
        final_flush_seconds: float | None = None,
        paced: bool = False,
        on_delivered: Callable[[str, int], None] | None = None,
    ) -> None:
        """``paced``: batches go out at the pace of ``TEXT_*`` above instead of every
        ``BATCH_INTERVAL``. ``on_delivered(run_id, sequence)`` is called after a paced batch
        reached the workflow, with the highest text ``sequence`` of each response in it."""
        self._client: WorkflowStreamClient | None = None
        self._topic: Any = None
        self._wait_on_exit = wait_on_exit
        self._final_flush_seconds = final_flush_seconds
        self._paced = paced
        self._on_delivered = on_delivered
        self._pacer: asyncio.Task[None] | None = None
        self._waiting = asyncio.Event()  # something is published and not yet sent
        self._sequences: dict[str, int] = {}  # highest text sequence per response, not yet sent
        self._held: list[ProgressEvent] = []  # paced: published, not yet handed to the stream client
        self.batches = 0  # paced batches sent

    async def __aenter__(self) -> ProgressPublisher:
        try:
            self._client = WorkflowStreamClient.from_within_activity(batch_interval=_NEVER if self._paced else BATCH_INTERVAL)
        except RuntimeError:
            return self  # no Temporal client here (a unit test)
        await self._client.__aenter__()
        self._topic = self._client.topic(PROGRESS_TOPIC, type=ProgressEvent)
        if self._paced:
            self._pacer = asyncio.create_task(self._pace(self._client), name="progress-pacer")
        return self

    def publish(self, kind: str, **fields: Any) -> None:
        if self._topic is not None:
            event = ProgressEvent(kind=kind, at=time.time(), **fields)
            if self._paced:
                self._held.append(event)  # the pacer hands it over with its batch
            else:
                self._topic.publish(event)
            run_id, sequence = fields.get("run_id"), fields.get("sequence")
            if isinstance(run_id, str) and isinstance(sequence, int):
                self._sequences[run_id] = max(sequence, self._sequences.get(run_id, -1))
            self._waiting.set()

    async def _pace(self, client: WorkflowStreamClient) -> None:
        pause = TEXT_FIRST_BATCH
        while self.batches < TEXT_BATCHES:
            await self._waiting.wait()
            await asyncio.sleep(pause)
            self._waiting.clear()
            if self._topic is not None:
                held, self._held = self._held, []
                for event in held:
                    self._topic.publish(event)
            sequences, self._sequences = self._sequences, {}
            try:
                await client.flush()
            except Exception as error:  # best effort; the batch is retried with the next one
                log.warning("progress not delivered yet", error=f"{type(error).__name__}: {error}")
                self._sequences = {**sequences, **self._sequences}
                self._waiting.set()
            else:
                self.batches += 1
                if self._on_delivered is not None:
                    for run_id, sequence in sequences.items():
                        self._on_delivered(run_id, sequence)
            pause = min(pause * TEXT_GROWTH, TEXT_BATCH_CAP)

    def take_tail(self) -> list[ProgressEvent]:
        """The paced events not handed to a batch yet, for the activity's result to carry:
        the turn's last text then reaches the workflow with the result, in the same workflow
        task, instead of as a signal of its own just before it. Nothing more is sent after."""
        tail, self._held = self._held, []
        self._sequences = {}
        return tail

    async def __aexit__(self, *exc: object) -> None:
        if self._client is None:
            return
        if self._topic is not None and self._held:  # what take_tail did not take goes out now
            for event in self._held:
                self._topic.publish(event)
            self._held = []
        self._topic = None  # nothing more from here
        if self._pacer is not None:
            self._pacer.cancel()
            # Not `await self._pacer`: that would swallow a cancel of this activity arriving meanwhile.
            await asyncio.wait({self._pacer})
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
        except TimeoutError:
            log.warning("progress not delivered", error=f"its last batch was still not sent after {seconds:g} s; dropped")


def publishers_draining() -> int:
    """How many publishers are still flushing in the background (for tests and shutdown logs)."""
    return len(_draining)
