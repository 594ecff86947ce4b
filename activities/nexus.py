"""The Nexus service handler of ``durable-assistants`` and the activities of ``EnqueuedRun``.

They use the worker's own Temporal client: ``enqueue_run``, ``RunHandle.result`` and
``RunHandle.cancel``, the same code the Python client runs (docs/nexus.md).
"""

from __future__ import annotations

import asyncio
import contextlib

import nexusrpc
from temporalio import activity, nexus
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from durable_assistants.client import RunFailedError, RunNotFoundError, enqueue_run, get_run, run_workflow_id
from durable_assistants.nexus import DurableAssistantsService, NexusCancelResult, NexusRunInput, NexusRunRef, NexusRunStatus
from durable_assistants.workflows.enqueued_run import EnqueuedRunWorkflow
from durable_assistants.workflows.models import LiveSnapshot, RunResult

HEARTBEAT_SECONDS = 10.0
# Synchronous Nexus operations must answer within 10 s.
SYNC_BUDGET_SECONDS = 8.0


def enqueued_run_workflow_id(request_id: str) -> str:
    return f"nexus-run/{request_id}"


class NexusActivities:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    @activity.defn(name="nexus_enqueue_run")
    async def enqueue(self, input: NexusRunInput) -> str:
        try:
            handle = await enqueue_run(self.client, input.request, request_id=input.request_id, task_queue=self.task_queue)
        except ValueError as exc:  # an idempotency conflict, a request that can never run
            raise ApplicationError(str(exc).removeprefix("enqueue_run: "), type=type(exc).__name__, non_retryable=True) from None
        return handle.workflow_id

    @activity.defn(name="nexus_await_run")
    async def await_run(self, workflow_id: str) -> RunResult:
        async def beat() -> None:
            while True:
                activity.heartbeat()
                await asyncio.sleep(HEARTBEAT_SECONDS)

        beating = asyncio.create_task(beat())
        try:
            return await get_run(self.client, workflow_id).result()
        except RunFailedError as exc:
            raise ApplicationError(f"run {workflow_id} failed: {exc.reason}", type="RunFailed", non_retryable=True) from None
        except RunNotFoundError:
            raise ApplicationError(f"no run {workflow_id}", type="RunNotFound", non_retryable=True) from None
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    @activity.defn(name="nexus_cancel_run")
    async def cancel(self, workflow_id: str) -> None:
        with contextlib.suppress(RunNotFoundError):
            await get_run(self.client, workflow_id).cancel()


@nexusrpc.handler.service_handler(service=DurableAssistantsService)
class DurableAssistantsHandler:
    """Registered on the worker of the run workflow's task queue (``build_workers``)."""

    def __init__(self, task_queue: str) -> None:
        self.task_queue = task_queue

    @nexus.workflow_run_operation
    async def enqueue_run(self, ctx: nexus.WorkflowRunOperationContext, input: NexusRunInput) -> nexus.WorkflowHandle[RunResult]:
        return await ctx.start_workflow(
            EnqueuedRunWorkflow.run, input, id=enqueued_run_workflow_id(input.request_id), task_queue=self.task_queue,
        )

    @nexusrpc.handler.sync_operation
    async def get_status(self, ctx: nexusrpc.handler.StartOperationContext, input: NexusRunRef) -> NexusRunStatus:
        workflow_id = run_workflow_id(input.request_id)
        try:
            status = await asyncio.wait_for(get_run(nexus.client(), workflow_id).status(), SYNC_BUDGET_SECONDS)
        except RunNotFoundError:
            raise nexusrpc.HandlerError(f"no run with request ID {input.request_id!r}", type=nexusrpc.HandlerErrorType.NOT_FOUND) from None
        if isinstance(status, LiveSnapshot):
            return NexusRunStatus(workflow_id=workflow_id, status=status.status or "running", snapshot=status)
        return NexusRunStatus(workflow_id=workflow_id, status=status)

    @nexusrpc.handler.sync_operation
    async def cancel_run(self, ctx: nexusrpc.handler.StartOperationContext, input: NexusRunRef) -> NexusCancelResult:
        workflow_id = run_workflow_id(input.request_id)
        try:
            await asyncio.wait_for(get_run(nexus.client(), workflow_id).cancel(), SYNC_BUDGET_SECONDS)
        except RunNotFoundError:
            raise nexusrpc.HandlerError(f"no run with request ID {input.request_id!r}", type=nexusrpc.HandlerErrorType.NOT_FOUND) from None
        except TimeoutError:
            return NexusCancelResult(workflow_id=workflow_id, cancel_requested=False, detail="it still waits for its turn; cancel it once it has started")
        return NexusCancelResult(workflow_id=workflow_id, cancel_requested=True)
