"""Enqueue assistant runs from Python and follow them.

    handle = await enqueue_run(client, RunRequest(...), request_id="order-1234")
    async for event in handle.progress():
        ...
    result = await handle.result()

A request on an existing thread goes through that thread's ``ThreadQueue`` workflow, so
callers sharing a thread run one at a time, in arrival order. A request for a new thread
starts its ``AssistantRun`` workflow directly. Either way ``request_id`` is an idempotency
key for the namespace: the same ID with the same request returns the first run's handle,
with another request it raises ``IdempotencyConflictError`` (docs/idempotency.md).

Why one module of about 790 lines: the caller's whole API (enqueue_run, RunHandle, get_run,
their errors), which a user reads in one place; the CLI, the gateway and Nexus use it as it
is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, timedelta
from typing import Any, Literal

from temporalio.api.enums.v1 import DescribeTaskQueueMode, PendingActivityState, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.exceptions import CancelledError as TemporalCancelledError
from temporalio.service import RPCError, RPCStatusCode

from durable_assistants.cost import full_cost, load_prices
from durable_assistants.workflows import search_attributes as sa
from durable_assistants.workflows.models import (
    DEFAULT_TASK_QUEUE,
    IDEMPOTENCY_CONFLICT,
    PROGRESS_TOPIC,
    QUEUE_FULL,
    RUN_EXPIRED,
    RUN_FAILED,
    RUN_WORKFLOW_NAME,
    THREAD_QUEUE_WORKFLOW_NAME,
    ApprovalRecord,
    EnqueueReceipt,
    EnqueueRequest,
    LiveSnapshot,
    PendingActivity,
    PendingApproval,
    PriceTable,
    ProgressEvent,
    RunCost,
    RunRequest,
    RunResult,
    ThreadQueueInput,
    ThreadQueueState,
    ToolCallDecision,
    default_summary,
)
from durable_assistants.workflows.search_attributes import QUEUE_ATTRIBUTES, RUN_ATTRIBUTES
from durable_assistants.workflows.thread_queue import queue_workflow_id

WAIT_FOR_START = timedelta(milliseconds=250)
MAX_WAIT_FOR_START = timedelta(seconds=2)
# A query needs a worker to answer it; past this the server's own view is shown instead.
QUERY_TIMEOUT = timedelta(seconds=2)
# A decision is an update: the worker takes it in its next workflow task.
APPROVAL_TIMEOUT = timedelta(seconds=30)
# How many running thread queues ``get_run`` looks through for a run that has not started yet.
QUEUES_SEARCHED = 200
QUERIES_AT_ONCE = 20
MAX_REQUEST_ID_CHARS = 200
# A run request travels as one Temporal payload (limit 2 MB, warnings from 512 KB).
MAX_REQUEST_BYTES = 1_000_000
MEMO_FINGERPRINT = "request_sha256"
MEMO_CONTEXT = "context_id"
# A thread's queue takes 10 enqueues at a time (Temporal's in-flight updates per workflow) and
# 2,000 per run of its workflow. An enqueue refused for that, or aborted by the server, is tried
# again (the same update ID, so it is never taken twice) with backoff and jitter, and no new
# try starts after this many seconds: then ``QueueBusyError``.
ENQUEUE_RETRY_SECONDS = 60.0
ENQUEUE_BACKOFF_FIRST = 0.1
ENQUEUE_BACKOFF_MAX = 3.0
# Enqueues one process sends to one thread's queue at a time; the others wait their turn here.
# A refused update is not free: the server then drops the queue's cached state, aborting the
# updates it held ("workflow update was aborted"). 50 callers of one process at once kept a
# queue whose run was under way from taking any after the first hundred; 5 at a time, it took
# 1,800 in 10 s. Two processes at full tilt stay within Temporal's 10.
ENQUEUES_AT_ONCE = 5


class RunNotFoundError(LookupError):
    """No run has this workflow ID: no such workflow, and no thread queue has it waiting."""

    def __init__(self, workflow_id: str, namespace: str) -> None:
        super().__init__(f"no run with workflow ID {workflow_id!r} in namespace {namespace!r}")
        self.workflow_id = workflow_id


class RunFailedError(WorkflowFailureError):
    """The run's workflow failed; the message is the root cause (the API's error, a tool's, ...)."""

    def __init__(self, workflow_id: str, failure: WorkflowFailureError) -> None:
        super().__init__(cause=failure.cause)
        self.workflow_id = workflow_id
        self.reason = root_cause(failure)
        self.args = (f"run {workflow_id} failed: {self.reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


class ApprovalError(ValueError):
    """A decision on a tool call that could not be taken (no such call waits, it was decided
    already, a rejection without a note, edited arguments that don't match the tool's schema);
    the run is unchanged. The message says which."""


class IdempotencyConflictError(ValueError):
    """A request ID already used for a different request."""


class QueueFullError(RuntimeError):
    """The thread's queue holds as many waiting requests as it may (workflows/thread_queue.py:
    MAX_WAITING, MAX_WAITING_BYTES); nothing was enqueued. Try again once some have run."""

    def __init__(self, message: str, thread_id: str) -> None:
        super().__init__(message)
        self.thread_id = thread_id


class QueueBusyError(TimeoutError):
    """The thread's queue did not take the request within ``ENQUEUE_RETRY_SECONDS``: Temporal
    kept refusing the update for the moment (too many enqueues in flight at once, or aborted).
    Enqueueing again with the same request ID is safe: it never makes a second run."""

    def __init__(self, thread_id: str, request_id: str, tries: int, seconds: float, last: RPCError) -> None:
        reason = " ".join(last.message.split())
        super().__init__(
            f"the queue of {thread_id} did not take request {request_id!r}: tried {tries} times over {seconds:.0f} s, "
            f"backing off, and Temporal's last answer was {last.status.name if last.status else 'an error'}: {reason}; "
            "enqueue it again with the same request ID (it cannot run twice)"
        )
        self.thread_id = thread_id
        self.request_id = request_id
        self.tries = tries


def root_cause(exc: BaseException) -> str:
    """One line saying why a run failed: the workflow's own message (which names the step and
    the API's error), and the innermost cause where that adds something."""
    generic = ("Workflow execution failed", "Activity task failed", "Child Workflow execution failed", "")
    messages: list[str] = []
    cause: BaseException | None = exc
    while cause is not None:
        message = getattr(cause, "message", None)
        if message is None:
            message = "" if isinstance(cause, WorkflowFailureError) else str(cause)
        message = " ".join(str(message).split())  # one line, whatever the failure held
        if message not in generic and not any(message in m for m in messages):
            messages.append(message)
        cause = cause.__cause__
    return "; ".join(messages[:2]) or type(exc).__name__


def run_workflow_id(request_id: str) -> str:
    return f"assistant-run/{request_id}"


def readable_request_id(request: RunRequest, private: bool = False) -> str:
    """A request ID for a caller that gave none, readable in the Temporal UI's list: the agent,
    the first words of the first message, and a unique suffix, e.g.
    ``asst_abc123-plan-my-week-5f0c2a9e``. ``private`` (payloads are encrypted: no codec
    encrypts a workflow ID) leaves the message's words out."""
    agent = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.prompt.id if request.prompt else request.agent_label)[:40].strip("-")
    words = [] if private else re.findall(r"[a-z0-9]+", request.first_text().lower())[:4]
    slug = "-".join(words)[:32].strip("-")
    return "-".join(part for part in (agent or "run", slug, uuid.uuid4().hex[:8]) if part)


def request_fingerprint(request: RunRequest) -> str:
    """What makes two requests with one request ID the same request: everything but where it
    runs (a caller may name the thread the first enqueue created) and the workflow's own state."""
    # Fields left at their default are not part of it: a field a later version adds (with a
    # default) must not make a retried request a different one.
    body = request.model_dump_json(exclude={"thread_id", "conversation_id", "resume"}, exclude_defaults=True)
    return hashlib.sha256(body.encode()).hexdigest()


class RunHandle:
    """A handle on one enqueued run: result, live status, cancellation, progress."""

    def __init__(self, client: Client, workflow_id: str, receipt: EnqueueReceipt | None = None, queue_id: str | None = None) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.receipt = receipt
        self.queue_id = queue_id  # the thread queue it waits in, when known

    @property
    def _handle(self) -> WorkflowHandle[Any, RunResult]:
        return self.client.get_workflow_handle(self.workflow_id, result_type=RunResult)

    async def describe(self) -> WorkflowExecutionDescription | None:
        """The run's workflow as the server knows it; None while it waits in its thread's queue.
        Raises ``RunNotFoundError`` if it neither exists nor waits in a queue."""
        try:
            return await self._handle.describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        if await self._waiting_in_queue():
            return None
        try:  # it may have started between the two looks
            return await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(self.workflow_id, self.client.namespace) from None
            raise

    async def _waiting_in_queue(self) -> bool:
        known = self.queue_id is not None  # the queue that accepted it (a handle from enqueue_run)
        queues = [self.queue_id] if self.queue_id else await self._running_queues()
        limit = asyncio.Semaphore(QUERIES_AT_ONCE)

        async def holds(queue_id: str) -> bool:
            async with limit:
                try:
                    state = await self.client.get_workflow_handle(queue_id).query(
                        "state", result_type=ThreadQueueState, rpc_timeout=QUERY_TIMEOUT
                    )
                except RPCError:
                    # No answer (no worker, or one too busy to answer in time). The queue that
                    # accepted the run still holds it while it runs; any other holds nothing we can see.
                    return known and await self._running(queue_id)
            return self.workflow_id in state.waiting or state.running == self.workflow_id

        # At once, not one by one: a query no worker answers takes QUERY_TIMEOUT.
        for queue_id, found in zip(queues, await asyncio.gather(*(holds(q) for q in queues)), strict=True):
            if found:
                self.queue_id = queue_id
                return True
        return False

    async def _running(self, workflow_id: str) -> bool:
        try:
            description = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return False
        return description.status == WorkflowExecutionStatus.RUNNING

    async def _running_queues(self) -> list[str]:
        """Running thread queues whose task queue a worker polls (no other can answer a query)."""
        query = f"WorkflowType = '{THREAD_QUEUE_WORKFLOW_NAME}' AND ExecutionStatus = 'Running'"
        try:
            found = [(e.id, e.task_queue) async for e in self.client.list_workflows(query, limit=QUEUES_SEARCHED)]
        except RPCError:
            return []
        task_queues = sorted({tq for _, tq in found})
        answers = await asyncio.gather(*(has_pollers(self.client, tq) for tq in task_queues), return_exceptions=True)
        # An error is no answer: ask the queue itself.
        polled = {tq: answer is not False for tq, answer in zip(task_queues, answers, strict=True)}
        return [queue_id for queue_id, task_queue in found if polled[task_queue]]

    async def started(self) -> WorkflowExecutionDescription:
        """Wait until the run's workflow exists (a queued run starts when its turn comes).
        Raises ``RunNotFoundError`` if there is no such run, queued or not."""
        pause = WAIT_FOR_START.total_seconds()
        while True:
            description = await self.describe()
            if description is not None:
                return description
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, MAX_WAIT_FOR_START.total_seconds())  # a long queue: fewer looks

    async def result(self, *, cost: bool = True) -> RunResult:
        """The run's result once it ends: completed, incomplete, failed, expired or cancelled
        alike (the workflow's own status says the same: Failed for a failed or expired run,
        Canceled for a cancelled one, Completed otherwise). Raises ``RunFailedError`` (its
        message the root cause) if the workflow failed without a result (an invalid request,
        a model API that refused the run), ``RunNotFoundError`` if there is no such run.

        With ``cost`` (the default) its ``cost`` also has the Temporal actions the run used,
        read from its history, and dollars where a price table is set (``DA_PRICES``)."""
        await self.started()
        result = await self._outcome()
        if cost:
            result.cost = await full_cost(self.client, self.workflow_id, result.cost, load_prices())
        return result

    async def _outcome(self) -> RunResult:
        """The result of a run whose workflow exists (``result()`` without the wait to start)."""
        try:
            return await self._handle.result()
        except WorkflowFailureError as exc:
            found = await run_result_of(self._handle, exc)
            if found is None:
                raise RunFailedError(self.workflow_id, exc) from exc.cause
            return found

    async def _snapshot(self) -> LiveSnapshot:
        """The run's own ``snapshot`` query (a worker must answer it within ``QUERY_TIMEOUT``)."""
        return await self._handle.query("snapshot", result_type=LiveSnapshot, rpc_timeout=QUERY_TIMEOUT)

    async def cost(self, prices: PriceTable | None | Literal["env"] = "env") -> RunCost:
        """What the run used so far (or in all, once it has ended): tokens by turn and model,
        Temporal actions from its history, and dollars under ``prices`` (by default the table
        of ``DA_PRICES`` / ``DA_PRICES_FILE``, if set)."""
        if prices == "env":
            prices = load_prices()  # a bad table fails before anything is read
        description = await self.started()
        tokens: RunCost | None = None
        if description.status == WorkflowExecutionStatus.RUNNING:
            try:
                tokens = (await self._snapshot()).cost
            except (RPCError, WorkflowQueryFailedError):
                tokens = None  # no worker to answer: the actions alone
        else:
            try:
                tokens = (await self._outcome()).cost
            except RunFailedError:
                tokens = None  # failed before any turn: the actions alone
        return await full_cost(self.client, self.workflow_id, tokens, prices)

    async def status(self, description: WorkflowExecutionDescription | None = None) -> LiveSnapshot | str:
        """The live snapshot of the run; ``"queued"`` while it waits for its turn on the thread,
        or the workflow's final status (``"completed"``, ``"failed"``, ...) once it has closed.
        A running run with no worker to answer gets a snapshot built from what the server knows
        (``source == "server"``): its pending activities, their attempts and last failures.
        ``description``: the run's workflow as the caller has just described it (not looked up again)."""
        if description is None:
            description = await self.describe()
        if description is None:
            return "queued"
        if description.status != WorkflowExecutionStatus.RUNNING:
            return description.status.name.lower() if description.status else "unknown"
        pending = pending_activities(description)
        task_queue = description.task_queue
        if task_queue and not await has_pollers(self.client, task_queue):
            return server_snapshot(description, pending, f"no worker is polling task queue {task_queue!r}")
        try:
            snapshot = await self._snapshot()
        except RPCError as exc:
            return server_snapshot(description, pending, f"the worker did not answer: {exc.message}")
        return snapshot.model_copy(update={"pending_activities": pending})

    async def cancel(self) -> bool:
        """Ask the run to cancel: its tools, its API run; ``result()`` then says ``cancelled``.
        Returns at once; False when no worker polls the run's task queue (the cancel waits for one).
        A run still waiting in its thread's queue is cancelled when its turn comes (this waits)."""
        description = await self.started()
        await self._handle.cancel()
        return not description.task_queue or await has_pollers(self.client, description.task_queue)

    async def pending_approvals(self) -> list[PendingApproval]:
        """The run's tool calls waiting for a person's decision (empty once it has ended)."""
        description = await self.describe()
        if description is None or description.status != WorkflowExecutionStatus.RUNNING:
            return []
        return (await self._snapshot()).pending_approvals

    async def approve(
        self, call_id: str, *, note: str | None = None, by: str | None = None, edited_arguments: dict[str, Any] | None = None
    ) -> ApprovalRecord:
        """Approve a waiting tool call, so it runs; with ``edited_arguments``, it runs with
        those instead (decision ``edit``; both are recorded). Raises ``ApprovalError``."""
        decision = "edit" if edited_arguments is not None else "approve"
        return await self.decide(ToolCallDecision(
            call_id=call_id, decision=decision, note=note, by=by, edited_arguments=edited_arguments,
        ))

    async def reject(self, call_id: str, note: str, *, by: str | None = None) -> ApprovalRecord:
        """Reject a waiting tool call: the model gets an output saying so, with ``note``."""
        return await self.decide(ToolCallDecision(call_id=call_id, decision="reject", note=note, by=by))

    async def decide(self, decision: ToolCallDecision) -> ApprovalRecord:
        """Send one decision (the ``decide_tool_call`` update). Raises ``ApprovalError`` when
        the run refuses it, ``RunNotFoundError`` when there is no such run."""
        description = await self.describe()
        if description is None:
            raise ApprovalError(f"{self.workflow_id} is still queued in {self.queue_id}; its calls wait for nothing yet")
        if description.status != WorkflowExecutionStatus.RUNNING:
            status = description.status.name.lower() if description.status else "unknown"
            raise ApprovalError(f"{self.workflow_id} has ended ({status}); no tool call waits for approval")
        if description.task_queue and not await has_pollers(self.client, description.task_queue):
            raise ApprovalError(
                f"no worker is polling task queue {description.task_queue!r}, so {self.workflow_id} cannot take a decision now"
            )
        try:
            return await self._handle.execute_update(
                "decide_tool_call", decision, result_type=ApprovalRecord, rpc_timeout=APPROVAL_TIMEOUT
            )
        except WorkflowUpdateFailedError as exc:
            raise ApprovalError(root_cause(exc)) from None

    async def progress(self, from_offset: int = 0) -> AsyncIterator[ProgressEvent]:
        """The run's story as it happens: status changes, tool calls started and finished,
        tool progress and (in stream mode) text deltas. From the start by default, so a late
        follower, or one that arrives after the run ended, still sees all of it."""
        async for _, event in self.progress_items(from_offset):
            yield event

    async def progress_items(self, from_offset: int = 0) -> AsyncIterator[tuple[int, ProgressEvent]]:
        """``progress`` with each event's offset in the run's stream (resume after one with
        ``from_offset = offset + 1``)."""
        await self.started()
        stream = WorkflowStreamClient.create(self.client, self.workflow_id)
        seen: dict[str, int] = {}
        async for item in stream.subscribe([PROGRESS_TOPIC], from_offset=from_offset, result_type=ProgressEvent):
            if not is_repeat(item.data, seen):
                yield item.offset, item.data


AWAITING_APPROVAL_QUERY = f"WorkflowType = '{RUN_WORKFLOW_NAME}' AND ExecutionStatus = 'Running' AND AwaitingApproval = true"


async def awaiting_approval(client: Client, limit: int = 100) -> list[tuple[str, PendingApproval]]:
    """Tool calls waiting for a decision across runs, oldest request first, as (workflow ID,
    call): runs found by the AwaitingApproval search attribute (visibility may lag a second),
    each asked for its pending approvals. A run that no worker answers is left out."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    ids = [e.id async for e in client.list_workflows(AWAITING_APPROVAL_QUERY, limit=limit)]
    gate = asyncio.Semaphore(QUERIES_AT_ONCE)

    async def calls(workflow_id: str) -> list[tuple[str, PendingApproval]]:
        async with gate:
            try:
                snapshot = await client.get_workflow_handle(workflow_id).query(
                    "snapshot", result_type=LiveSnapshot, rpc_timeout=QUERY_TIMEOUT
                )
            except (RPCError, WorkflowQueryFailedError):
                return []
        return [(workflow_id, p) for p in snapshot.pending_approvals]

    found = [row for rows in await asyncio.gather(*(calls(i) for i in ids)) for row in rows]
    return sorted(found, key=lambda row: row[1].requested_at)[:limit]


async def pollers(client: Client, task_queue: str, kind: str = "workflow") -> list[Any]:
    """The workers polling ``task_queue`` for ``kind`` ("workflow" or "activity") tasks, as
    the server saw them lately (``PollerInfo``: identity, last access time), one a worker
    identity.

    Two views are merged. A task queue has several partitions (four by default, on the dev
    server too) and the plain ``DescribeTaskQueue`` answers from the root partition only: a
    worker whose polls all sit on another partition, their forwarding to the root taken by
    other workers' polls, is missing from it until its long poll ends (we saw 52 s). The
    enhanced mode asks every partition, but answers from a cache for some seconds (a worker
    that has just started can be missing from it for 5 s). The enhanced mode is deprecated
    in the API: a server that refuses it, or fails to answer it, leaves the root's view."""
    task_queue_type = _task_queue_type(kind)
    root, everywhere = await asyncio.gather(
        _root_pollers(client, task_queue, task_queue_type), _pollers_of_every_partition(client, task_queue, task_queue_type)
    )
    latest: dict[str, Any] = {}
    for poller in [*root, *everywhere]:
        seen = latest.get(poller.identity)
        if seen is None or poller.last_access_time.ToNanoseconds() > seen.last_access_time.ToNanoseconds():
            latest[poller.identity] = poller
    return list(latest.values())


async def has_pollers(client: Client, task_queue: str) -> bool:
    """Whether a worker polls ``task_queue`` for workflow tasks (seen by the server lately):
    the root partition's view, and every partition's when that one has none."""
    task_queue_type = _task_queue_type("workflow")
    return bool(await _root_pollers(client, task_queue, task_queue_type) or await _pollers_of_every_partition(client, task_queue, task_queue_type))


def _task_queue_type(kind: str) -> Any:
    return TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if kind == "workflow" else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY


async def _root_pollers(client: Client, task_queue: str, task_queue_type: Any) -> list[Any]:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=task_queue_type),
        timeout=QUERY_TIMEOUT,
    )
    return list(response.pollers)


async def _pollers_of_every_partition(client: Client, task_queue: str, task_queue_type: Any) -> list[Any]:
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                api_mode=DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED,
                task_queue_types=[task_queue_type],
                report_pollers=True,
            ),
            timeout=QUERY_TIMEOUT,
        )
    except RPCError:
        return []  # the root's view stands (a failure of the connection itself fails that one)
    return [poller for version in response.versions_info.values() for types in version.types_info.values() for poller in types.pollers]


def pending_activities(description: WorkflowExecutionDescription) -> list[PendingActivity]:
    """The run's activities under way as the server records them, with attempts and last failures."""
    found = []
    for info in description.raw_description.pending_activities:
        started = info.last_started_time.ToDatetime(tzinfo=UTC).timestamp() if info.HasField("last_started_time") else None
        found.append(
            PendingActivity(
                name=info.activity_type.name,
                state=PendingActivityState.Name(info.state).removeprefix("PENDING_ACTIVITY_STATE_").lower(),
                attempt=info.attempt,
                started_at=started,
                last_failure=" ".join(info.last_failure.message.split()) or None if info.HasField("last_failure") else None,
            )
        )
    return found


def server_snapshot(description: WorkflowExecutionDescription, pending: list[PendingActivity], note: str) -> LiveSnapshot:
    """What can be said of a running run without its worker: the search attributes it set, and
    its pending activities."""
    attributes = {pair.key.name: pair.value for pair in description.typed_search_attributes}
    status = attributes.get("RunStatus")
    return LiveSnapshot(
        status=status if isinstance(status, str) else "unknown",
        round=0,
        assistant_id=attributes.get("AssistantId"),
        thread_id=attributes.get("ThreadId"),
        run_id=attributes.get("ApiRunId"),
        pending_tool_calls=[],
        tool_calls_done=0,
        source="server",
        note=note,
        pending_activities=pending,
    )


async def run_result_of(handle: WorkflowHandle[Any, Any], failure: WorkflowFailureError) -> RunResult | None:
    """The ``RunResult`` of a run whose workflow failed or was cancelled because of the run's
    outcome: a failed or expired run's is the failure's details[0] (an ``ApplicationError`` of
    type ``RunFailed`` or ``RunExpired``); a cancelled run's is read with the workflow's
    ``result`` query (a Canceled workflow carries none), or, with no worker to answer, told
    from what the server knows. None for any other failure."""
    cause = failure.cause
    if isinstance(cause, ApplicationError) and cause.type in (RUN_FAILED, RUN_EXPIRED) and cause.details:
        return RunResult.model_validate(cause.details[0])
    if not isinstance(cause, TemporalCancelledError):
        return None
    try:
        found = await handle.query("result", result_type=RunResult, rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError):
        found = None
    if isinstance(found, RunResult):
        return found
    description = await handle.describe()
    attributes = {pair.key.name: pair.value for pair in description.typed_search_attributes}
    return RunResult(
        status="cancelled",
        run_id=str(attributes.get("ApiRunId") or ""),
        thread_id=attributes.get("ThreadId"),
        failure="the workflow was cancelled (no worker answered for the rest of its result)",
    )


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
    """Enqueue ``request``. ``request_id`` is an idempotency key for the whole namespace: the
    same ID with the same request returns the first run's handle (also once it has ended); the
    same ID with a different request raises ``IdempotencyConflictError``. Raises ``TypeError``
    for arguments of the wrong type and ``ValueError`` for a request that can never run."""
    _check_arguments(client, request, request_id, task_queue)
    explicit = request_id is not None
    # Payloads are encrypted: the workflow ID and summary (metadata operators read without the
    # codec) carry no words of the message.
    private = client.data_converter.payload_codec is not None
    request_id = request_id or readable_request_id(request, private)
    workflow_id = run_workflow_id(request_id)
    context = request.context_id  # a thread or a conversation: its runs take turns
    fingerprint = request_fingerprint(request)
    memo = {MEMO_FINGERPRINT: fingerprint, MEMO_CONTEXT: context}
    if summary is None:
        implied = request.implied_backend()
        fresh = {None: "a new conversation", "conversation": "a new conversation", "chain": "a new response chain", "stateless": "a stateless run"}
        responses = f"the chain of {request.previous_response_id}" if request.previous_response_id else fresh[request.responses_state]
        where = context or {"assistants": "a new thread", "responses": responses}.get(implied or "", "a new thread or conversation")
        summary = default_summary(request, where, excerpt=not private)
    if context is None:
        # Findable from its first event (also if it fails before its API run exists): the
        # agent and RunStatus "starting", where the namespace has the run's attributes.
        attributes = None
        if await _namespace_has(client, RUN_ATTRIBUTES):
            pairs: list[SearchAttributePair[Any]] = [SearchAttributePair(sa.RUN_STATUS, "starting")]
            if request.assistant_id is not None:
                pairs.append(SearchAttributePair(sa.ASSISTANT_ID, request.assistant_id))
            attributes = TypedSearchAttributes(pairs)
        try:
            await client.start_workflow(
                RUN_WORKFLOW_NAME,
                request,
                id=workflow_id,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                memo=memo,
                static_summary=summary,
                search_attributes=attributes,
            )
        except WorkflowAlreadyStartedError:
            await _same_request(client, workflow_id, request_id, fingerprint, context)
        return RunHandle(client, workflow_id)

    if explicit:
        # The run may exist already: enqueued before without a thread, or on this thread
        # through a queue that has since gone idle and ended (a new queue remembers nothing).
        if await _same_request(client, workflow_id, request_id, fingerprint, context):
            return RunHandle(client, workflow_id, EnqueueReceipt(run_workflow_id=workflow_id, position=0, duplicate=True))
    queue_attributes = await _namespace_has(client, QUEUE_ATTRIBUTES)
    run_attributes = await _namespace_has(client, RUN_ATTRIBUTES)

    def start() -> WithStartWorkflowOperation[Any, Any]:
        return WithStartWorkflowOperation(
            THREAD_QUEUE_WORKFLOW_NAME,
            ThreadQueueInput(thread_id=context, search_attributes=queue_attributes, run_search_attributes=run_attributes),
            id=queue_workflow_id(context),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"queue of {'thread' if request.thread_id else 'conversation'} {context}",
        )

    item = EnqueueRequest(
        request_id=request_id, run_workflow_id=workflow_id, request=request, task_queue=task_queue,
        summary=summary, fingerprint=fingerprint,
    )
    # Temporal answers a repeated update ID with the first outcome, unchecked: the same
    # request gets its receipt again, a different one reaches the queue's conflict check.
    receipt = await _enqueue(client, start, item, f"{request_id}#{fingerprint[:16]}", context)
    return RunHandle(client, receipt.run_workflow_id, receipt, queue_id=queue_workflow_id(context))


async def _enqueue(
    client: Client, start: Any, item: EnqueueRequest, update_id: str, context: str
) -> EnqueueReceipt:
    """The queue's ``enqueue`` update (with start), tried again while the queue is busy."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    tries = 0
    while True:
        tries += 1
        operation = start()
        try:
            async with _turn(context):
                return await client.execute_update_with_start_workflow(
                    "enqueue", item, start_workflow_operation=operation, id=update_id, result_type=EnqueueReceipt
                )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == IDEMPOTENCY_CONFLICT:
                raise IdempotencyConflictError(cause.message) from None
            if isinstance(cause, ApplicationError) and cause.type == QUEUE_FULL:
                raise QueueFullError(cause.message, context) from None
            raise
        except RPCError as exc:
            with contextlib.suppress(Exception):  # the start's outcome, this same error: retrieved, so not logged
                await asyncio.wait_for(operation.workflow_handle(), 1)
            if not queue_busy(exc):
                raise
            last = exc
        delay = min(ENQUEUE_BACKOFF_MAX, ENQUEUE_BACKOFF_FIRST * 2 ** (tries - 1)) * random.uniform(0.5, 1.0)
        elapsed = loop.time() - began
        if elapsed + delay > ENQUEUE_RETRY_SECONDS:
            raise QueueBusyError(context, item.request_id, tries, elapsed, last) from last
        await asyncio.sleep(delay)


class _Gate:
    def __init__(self) -> None:
        self.semaphore = asyncio.Semaphore(ENQUEUES_AT_ONCE)
        self.users = 0


# Per event loop (asyncio primitives belong to one), per thread or conversation; a gate goes when unused.
# Per client: the namespace's custom search attributes, listed once (None: it could not list them).
_attributes: weakref.WeakKeyDictionary[Client, frozenset[str] | None] = weakref.WeakKeyDictionary()


async def namespace_search_attributes(client: Client) -> frozenset[str] | None:
    """The custom search attributes of the client's namespace, listed once per client; None
    if it may not list them (then nothing should be upserted). The enqueueing client and the
    worker's model activities both ask this before a workflow upserts any."""
    if client not in _attributes:
        try:
            response = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=client.namespace), timeout=QUERY_TIMEOUT
            )
            _attributes[client] = frozenset(response.custom_attributes)
        except RPCError:
            _attributes[client] = None
    return _attributes[client]


async def _namespace_has(client: Client, names: Sequence[str]) -> bool:
    """Whether the client's namespace has every custom search attribute in ``names``."""
    present = await namespace_search_attributes(client)
    return present is not None and set(names) <= present


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Gate]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _turn(context: str) -> AsyncIterator[None]:
    """One of the ENQUEUES_AT_ONCE places this process has at ``context``'s queue."""
    gates = _gates.setdefault(asyncio.get_running_loop(), {})
    gate = gates.setdefault(context, _Gate())
    gate.users += 1
    try:
        async with gate.semaphore:
            yield
    finally:
        gate.users -= 1
        if gate.users == 0:
            del gates[context]


def queue_busy(exc: RPCError) -> bool:
    """Whether Temporal refused an update for the moment, so that the same update, sent again
    later, can be taken. By status code; by message only where the server gives no code of its own."""
    if exc.status in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE):
        # RESOURCE_EXHAUSTED: "limit on number of concurrent in-flight updates has been reached"
        # (cause CONCURRENT_LIMIT; also their size, and rate limits). UNAVAILABLE: "workflow
        # update was aborted" (the server dropped the update before the queue took it), restarts.
        return True
    message = exc.message.lower()
    if exc.status == RPCStatusCode.NOT_FOUND and "aborted by closing workflow" in message:
        return True  # the queue ended (idle) as the update arrived; the next try starts it again
    if exc.status == RPCStatusCode.FAILED_PRECONDITION and (
        "total number of distinct updates" in message or "number of total updates" in message  # new, older servers
    ):
        return True  # 2,000 updates per run: the queue continues as new after its current run
    return False


def check_request_id(request_id: str) -> None:
    """Raise ``ValueError`` (its message the ID and the rule) unless ``request_id`` is 1 to
    200 printable characters without spaces."""
    if not request_id.strip() or len(request_id) > MAX_REQUEST_ID_CHARS or any(c.isspace() or not c.isprintable() for c in request_id):
        raise ValueError(f"{request_id[:80]!r} must be 1 to {MAX_REQUEST_ID_CHARS} printable characters without spaces")


def _check_arguments(client: object, request: object, request_id: object, task_queue: object) -> None:
    if not isinstance(client, Client):
        raise TypeError(f"enqueue_run: client must be a temporalio.client.Client (see connect_temporal()), got {type(client).__name__}")
    if not isinstance(request, RunRequest):
        hint = "; build one with RunRequest.model_validate(...)" if isinstance(request, dict) else ""
        raise TypeError(f"enqueue_run: request must be a RunRequest, got {type(request).__name__}{hint}")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise TypeError(f"enqueue_run: request_id must be a str, got {type(request_id).__name__}")
        try:
            check_request_id(request_id)
        except ValueError as exc:
            raise ValueError(f"enqueue_run: request_id {exc}") from None
    if not isinstance(task_queue, str) or not task_queue.strip():
        raise ValueError(f"enqueue_run: task_queue must be a non-empty str, got {task_queue!r}")
    size = len(request.model_dump_json().encode())  # also proves it can be sent at all
    if size > MAX_REQUEST_BYTES:
        raise ValueError(
            f"enqueue_run: the request is {size} bytes as JSON; a run request travels in one Temporal payload, "
            f"so it may be at most {MAX_REQUEST_BYTES} bytes (put large inputs in files, or behind a tool)"
        )


async def _same_request(client: Client, workflow_id: str, request_id: str, fingerprint: str, context: str | None) -> bool:
    """Whether the run ``workflow_id`` exists; raises ``IdempotencyConflictError`` if it was
    enqueued for a different request."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    memo = await description.memo()
    first = memo.get(MEMO_FINGERPRINT)
    first_context = memo.get(MEMO_CONTEXT)
    if first is not None and first != fingerprint:
        raise IdempotencyConflictError(
            f"request ID {request_id!r} was already used for a different request (run {workflow_id}); "
            "use a new request ID for a new request"
        )
    if first_context is not None and context is not None and first_context != context:
        raise IdempotencyConflictError(
            f"request ID {request_id!r} was already used for a run on {first_context}, not {context} (run {workflow_id})"
        )
    return True


def get_run(client: Client, workflow_id: str) -> RunHandle:
    """A handle on a run enqueued earlier, by its workflow ID. Its methods raise
    ``RunNotFoundError`` if no such run exists, queued or not."""
    if not isinstance(client, Client):
        raise TypeError(f"get_run: client must be a temporalio.client.Client, got {type(client).__name__}")
    if not isinstance(workflow_id, str) or not workflow_id:
        raise ValueError(f"get_run: workflow_id must be a non-empty str, got {workflow_id!r}")
    return RunHandle(client, workflow_id)
