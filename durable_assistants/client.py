"""Enqueue assistant runs from Python and follow them.

    handle = await enqueue_run(client, RunRequest(...), request_id="order-1234")
    async for event in handle.progress():
        ...
    result = await handle.result()

A request on an existing thread goes through that thread's ``ThreadQueue`` workflow, so
callers sharing a thread run one at a time, in arrival order. A request for a new thread
starts its ``AssistantRun`` workflow directly. Either way ``request_id`` makes enqueueing
idempotent: the same ID again returns the first run's handle.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows.models import (
    DEFAULT_TASK_QUEUE,
    PROGRESS_TOPIC,
    RUN_WORKFLOW_NAME,
    THREAD_QUEUE_WORKFLOW_NAME,
    EnqueueReceipt,
    EnqueueRequest,
    LiveSnapshot,
    ProgressEvent,
    RunRequest,
    RunResult,
    ThreadQueueInput,
)
from workflows.thread_queue import queue_workflow_id

WAIT_FOR_START = timedelta(milliseconds=250)


def run_workflow_id(request_id: str) -> str:
    return f"assistant-run/{request_id}"


class RunHandle:
    """A handle on one enqueued run: result, live status, cancellation, progress."""

    def __init__(self, client: Client, workflow_id: str, receipt: EnqueueReceipt | None = None) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.receipt = receipt

    @property
    def _handle(self) -> WorkflowHandle[Any, RunResult]:
        return self.client.get_workflow_handle(self.workflow_id, result_type=RunResult)

    async def started(self) -> None:
        """Wait until the run's workflow exists (a queued run starts when its turn comes)."""
        while True:
            try:
                await self._handle.describe()
                return
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(WAIT_FOR_START.total_seconds())

    async def result(self) -> RunResult:
        await self.started()
        return await self._handle.result()

    async def status(self) -> LiveSnapshot | str:
        """The live snapshot of the run; ``"queued"`` while it waits for its turn on the thread,
        or the workflow's final status (``"completed"``, ``"failed"``, ...) once it has closed."""
        try:
            description = await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return "queued"
            raise
        if description.status != WorkflowExecutionStatus.RUNNING:
            return description.status.name.lower() if description.status else "unknown"
        return await self._handle.query("snapshot", result_type=LiveSnapshot)

    async def cancel(self) -> None:
        """Cancel the run: its tools, its API run; ``result()`` then says ``cancelled``."""
        await self.started()
        await self._handle.cancel()

    async def progress(self, from_offset: int = 0) -> AsyncIterator[ProgressEvent]:
        """The run's story as it happens: status changes, tool calls started and finished,
        tool progress and (in stream mode) text deltas. From the start by default, so a late
        follower, or one that arrives after the run ended, still sees all of it."""
        await self.started()
        stream = WorkflowStreamClient.create(self.client, self.workflow_id)
        seen: dict[str, int] = {}
        async for item in stream.subscribe([PROGRESS_TOPIC], from_offset=from_offset, result_type=ProgressEvent):
            if not is_repeat(item.data, seen):
                yield item.data


def is_repeat(event: ProgressEvent, seen: dict[str, int]) -> bool:
    """Whether ``event`` is a text delta already seen: a retried activity resumes a response's
    stream from the position its last heartbeat recorded, which can be a few deltas behind
    what it had published. ``seen`` holds the highest sequence per response so far."""
    if event.kind != "text" or event.sequence is None or event.run_id is None:
        return False
    if event.sequence <= seen.get(event.run_id, -1):
        return True
    seen[event.run_id] = event.sequence
    return False


async def enqueue_run(
    client: Client,
    request: RunRequest,
    *,
    request_id: str | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
    summary: str | None = None,
) -> RunHandle:
    """Enqueue ``request``; the same ``request_id`` twice yields one run and the first run's handle."""
    request_id = request_id or uuid.uuid4().hex
    workflow_id = run_workflow_id(request_id)
    context = request.context_id  # a thread or a conversation: its runs take turns
    if summary is None:
        implied = request.implied_backend()
        where = context or {"assistants": "a new thread", "responses": "a new response chain"}.get(implied or "", "a new thread or chain")
        summary = f"{request.agent_label} on {where}"
    if context is None:
        try:
            await client.start_workflow(
                RUN_WORKFLOW_NAME,
                request,
                id=workflow_id,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=summary,
            )
        except WorkflowAlreadyStartedError:
            pass  # enqueued before and already finished: that run is the answer
        return RunHandle(client, workflow_id)

    start = WithStartWorkflowOperation(
        THREAD_QUEUE_WORKFLOW_NAME,
        ThreadQueueInput(thread_id=context),
        id=queue_workflow_id(context),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"queue of {'thread' if request.thread_id else 'conversation'} {context}",
    )
    receipt = await client.execute_update_with_start_workflow(
        "enqueue",
        EnqueueRequest(request_id=request_id, run_workflow_id=workflow_id, request=request, task_queue=task_queue, summary=summary),
        start_workflow_operation=start,
        id=request_id,
        result_type=EnqueueReceipt,
    )
    return RunHandle(client, receipt.run_workflow_id, receipt)


def get_run(client: Client, workflow_id: str) -> RunHandle:
    """A handle on a run enqueued earlier, by its workflow ID."""
    return RunHandle(client, workflow_id)
