"""``ThreadQueue``: one workflow per thread that runs its callers' requests one at a time.

A thread accepts one active run at a time, so callers that share a thread would collide
("already has an active run"); a Responses conversation likewise takes one response at a
time ("conversation_locked"), so it gets a queue too, keyed by its conversation ID (the
``thread_id`` of the queue's input). Callers enqueue here instead, by update-with-start on the
workflow ID ``thread-queue/<thread_id>``; the queue runs each request as a child
``AssistantRun`` workflow (whose ID the caller got back, so it can follow and await it), in
the order the updates were accepted, and continues as new before its history grows large.
"""

from __future__ import annotations

from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        IDEMPOTENCY_CONFLICT,
        RUN_WORKFLOW_NAME,
        THREAD_QUEUE_WORKFLOW_NAME,
        EnqueueReceipt,
        EnqueueRequest,
        ThreadQueueInput,
        ThreadQueueState,
    )

# The queue ends after this long with nothing to do; the next enqueue starts it again.
IDLE_TIMEOUT = timedelta(minutes=5)
# Continue as new after this many runs even if Temporal has not suggested it yet.
RUNS_PER_HISTORY = 500
# Request IDs remembered for deduplication (carried across continue-as-new).
REMEMBERED_REQUESTS = 5_000
# Runs start as children that never reuse a workflow ID (a request ID is one run, ever) and
# carry their request's fingerprint in the memo, as runs started directly do.
ONE_RUN_PER_REQUEST_ID = "one-run-per-request-id"


def queue_workflow_id(thread_id: str) -> str:
    return f"thread-queue/{thread_id}"


@workflow.defn(name=THREAD_QUEUE_WORKFLOW_NAME)
class ThreadQueueWorkflow:
    @workflow.init
    def __init__(self, input: ThreadQueueInput) -> None:
        self._thread_id = input.thread_id
        self._pending: deque[EnqueueRequest] = deque(input.pending)
        self._seen: dict[str, str] = dict(input.seen)
        self._fingerprints: dict[str, str] = dict(input.fingerprints)
        self._accepted = input.accepted
        self._finished = input.finished
        self._current: EnqueueRequest | None = None

    @workflow.update(name="enqueue")
    def enqueue(self, item: EnqueueRequest) -> EnqueueReceipt:
        existing = self._seen.get(item.request_id)
        if existing is not None:
            return EnqueueReceipt(run_workflow_id=existing, position=self._position(existing), duplicate=True)
        self._accepted += 1
        item = item.model_copy(update={"sequence": self._accepted})
        self._pending.append(item)
        self._seen[item.request_id] = item.run_workflow_id
        if item.fingerprint is not None:
            self._fingerprints[item.request_id] = item.fingerprint
        while len(self._seen) > REMEMBERED_REQUESTS:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
            self._fingerprints.pop(oldest, None)
        return EnqueueReceipt(run_workflow_id=item.run_workflow_id, position=len(self._pending), sequence=item.sequence)

    @enqueue.validator
    def _check(self, item: EnqueueRequest) -> None:
        if item.request.context_id != self._thread_id:
            raise ValueError(f"this queue serves {self._thread_id}, not {item.request.context_id}")
        first = self._fingerprints.get(item.request_id)
        if first is not None and item.fingerprint is not None and first != item.fingerprint:
            raise ApplicationError(
                f"request ID {item.request_id!r} was already used for a different request on {self._thread_id} "
                f"(run {self._seen.get(item.request_id)}); use a new request ID for a new request",
                type=IDEMPOTENCY_CONFLICT,
                non_retryable=True,
            )

    @workflow.query(name="state")
    def state(self) -> ThreadQueueState:
        return ThreadQueueState(
            thread_id=self._thread_id,
            running=self._current.run_workflow_id if self._current else None,
            waiting=[item.run_workflow_id for item in self._pending],
            finished=self._finished,
        )

    @workflow.run
    async def run(self, input: ThreadQueueInput) -> int:
        runs_here = 0
        while True:
            if not await self._next_or_idle():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._pending:
                    return self._finished
                continue
            item = self._pending.popleft()
            self._current = item
            workflow.set_current_details(f"running `{item.run_workflow_id}` · {len(self._pending)} waiting · {self._finished} done")
            once: dict[str, object] = {}
            if workflow.patched(ONE_RUN_PER_REQUEST_ID):
                once = {
                    "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    "memo": {"request_sha256": item.fingerprint, "context_id": self._thread_id} if item.fingerprint else None,
                }
            try:
                await workflow.execute_child_workflow(
                    RUN_WORKFLOW_NAME,
                    item.request,
                    id=item.run_workflow_id,
                    task_queue=item.task_queue or workflow.info().task_queue,
                    static_summary=item.summary,
                    **once,  # type: ignore[arg-type]
                )
            except WorkflowAlreadyStartedError:
                # This request ID has a run already (enqueued before without this queue): that
                # run is the answer, and its caller follows it by the same workflow ID.
                workflow.logger.info("run %s exists already; not starting it again", item.run_workflow_id)
            except ChildWorkflowError as exc:
                # The caller sees the failure on its own handle; the queue goes on.
                workflow.logger.warning("run %s failed: %s", item.run_workflow_id, exc.cause)
            except ApplicationError as exc:
                workflow.logger.warning("run %s could not start: %s", item.run_workflow_id, exc)
            self._current = None
            self._finished += 1
            runs_here += 1
            if runs_here >= RUNS_PER_HISTORY or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    ThreadQueueInput(
                        thread_id=self._thread_id,
                        pending=list(self._pending),
                        seen=self._seen,
                        fingerprints=self._fingerprints,
                        accepted=self._accepted,
                        finished=self._finished,
                    )
                )

    async def _next_or_idle(self) -> bool:
        try:
            await workflow.wait_condition(lambda: bool(self._pending), timeout=IDLE_TIMEOUT)
        except TimeoutError:
            return False
        return True

    def _position(self, run_workflow_id: str) -> int:
        for index, item in enumerate(self._pending, start=1):
            if item.run_workflow_id == run_workflow_id:
                return index
        return 0
