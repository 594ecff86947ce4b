"""``EnqueuedRun``: the workflow behind the Nexus operation ``enqueue_run``.

A Nexus operation that completes asynchronously is backed by a workflow its handler starts,
and a run on a thread or conversation is started by that thread's queue, when its turn comes,
not by the caller. So the operation starts this small workflow, which enqueues the run exactly
as ``enqueue_run`` does (an activity: request-ID idempotency, the queue, search attributes),
waits for the run's result (an activity that heartbeats while the run goes on) and returns it.
Cancelling it (the caller cancelled its operation) cancels the run, then ends cancelled.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.exceptions import CancelledError as TemporalCancelledError

with workflow.unsafe.imports_passed_through():
    from durable_assistants.workflows.activity_models import NexusRunInput
    from durable_assistants.workflows.models import RunResult

ENQUEUED_RUN_WORKFLOW_NAME = "EnqueuedRun"
ENQUEUE_TIMEOUT = timedelta(minutes=2)
# The run may take as long as runs take; the activity heartbeats, so a lost worker is noticed
# within AWAIT_HEARTBEAT and the next one waits on.
AWAIT_TIMEOUT = timedelta(days=30)
AWAIT_HEARTBEAT = timedelta(seconds=60)
CANCEL_TIMEOUT = timedelta(minutes=2)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn(name=ENQUEUED_RUN_WORKFLOW_NAME)
class EnqueuedRunWorkflow:
    @workflow.run
    async def run(self, input: NexusRunInput) -> RunResult:
        run_workflow_id = await workflow.execute_activity(
            "nexus_enqueue_run", input, start_to_close_timeout=ENQUEUE_TIMEOUT, retry_policy=RETRY, result_type=str,
            summary="enqueue the run",
        )
        workflow.set_current_details(f"waiting for run {run_workflow_id}")
        try:
            return await workflow.execute_activity(
                "nexus_await_run", run_workflow_id, start_to_close_timeout=AWAIT_TIMEOUT, heartbeat_timeout=AWAIT_HEARTBEAT,
                retry_policy=RETRY, result_type=RunResult, summary=f"wait for {run_workflow_id}",
            )
        except (asyncio.CancelledError, ActivityError) as exc:
            # An activity cancelled by the workflow's cancel comes back as an ActivityError
            # whose cause is the cancellation; any other failure fails the workflow.
            if isinstance(exc, ActivityError) and not isinstance(exc.cause, TemporalCancelledError):
                raise
            # The caller cancelled: cancel the run too (shielded: the workflow's own cancel is
            # still pending, and would cancel this activity as it starts), then end cancelled.
            stop = workflow.start_activity(
                "nexus_cancel_run", run_workflow_id, start_to_close_timeout=CANCEL_TIMEOUT, retry_policy=RETRY,
                summary=f"cancel {run_workflow_id}",
            )
            while not stop.done():
                try:
                    await asyncio.shield(stop)
                except asyncio.CancelledError:
                    continue
            raise
