"""``ThreadQueue``: one workflow per thread that runs its callers' requests one at a time.

A thread accepts one active run at a time, so callers that share a thread would collide
("already has an active run"); a Responses conversation likewise takes one response at a
time ("conversation_locked"), so it gets a queue too, keyed by its conversation ID (the
``thread_id`` of the queue's input). Callers enqueue here instead, by update-with-start on the
workflow ID ``thread-queue/<thread_id>``; the queue runs each request as a child
``AssistantRun`` workflow (whose ID the caller got back, so it can follow and await it), in
the order the updates were accepted, and continues as new before its history grows large.

What it carries into continue-as-new is bounded: the waiting requests, each without what the
queue can restore and without default values, at most ``MAX_WAITING`` of them taking at most
``MAX_WAITING_BYTES`` (an enqueue beyond either is refused, by the update's validator, with a
``QueueFull`` error: nothing is recorded), and the request IDs it remembers for deduplication
(``REMEMBERED_REQUESTS``, at most ``REMEMBERED_BYTES``). Temporal refuses a payload over 2 MB.

What an operator sees of it (docs/ui.md): its ``ThreadId`` search attribute from its first
workflow task, ``QueuedRuns`` listing the runs waiting (the first ``QUEUED_RUNS_MAX``), and its
current details: the run under way and the requests waiting, or that it is idle.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from durable_assistants.workflows import search_attributes as sa
    from durable_assistants.workflows.models import (
        IDEMPOTENCY_CONFLICT,
        QUEUE_FULL,
        RUN_WORKFLOW_ID_PREFIX,
        RUN_WORKFLOW_NAME,
        THREAD_QUEUE_WORKFLOW_NAME,
        EnqueueReceipt,
        EnqueueRequest,
        ThreadQueueInput,
        ThreadQueueState,
        WaitingRequest,
        default_summary,
    )

# The queue ends after this long with nothing to do; the next enqueue starts it again.
IDLE_TIMEOUT = timedelta(minutes=5)
# Continue as new after this many runs even if Temporal has not suggested it yet.
RUNS_PER_HISTORY = 500
# Request IDs remembered for deduplication (carried across continue-as-new), and the most
# bytes they may take as carried (fewer are carried when request IDs are long).
REMEMBERED_REQUESTS = 5_000
REMEMBERED_BYTES = 450_000
# Carried fingerprints keep this many hex digits (64 bits; the update ID holds as many).
FINGERPRINT_KEPT = 16
# The most requests that may wait, and the most bytes they may take as carried (JSON without
# default values: some 300 bytes for a short message, so about 3,500 of those). With the
# remembered IDs, a continue-as-new stays under 1.6 MB, inside Temporal's 2 MB payload limit;
# the bytes bound is above the 1 MB a request may have (enqueue_run), so one always fits.
MAX_WAITING = 5_000
MAX_WAITING_BYTES = 1_100_000
# Runs start as children that never reuse a workflow ID (a request ID is one run, ever) and
# carry their request's fingerprint in the memo, as runs started directly do.
ONE_RUN_PER_REQUEST_ID = "one-run-per-request-id"
# The queue upserts its ThreadId and QueuedRuns search attributes (histories recorded before
# this have no such commands, so they replay without them).
QUEUE_SEARCH_ATTRIBUTES = "queue-search-attributes"
# The waiting requests its current details list; the rest are counted.
DETAILS_WAITING_SHOWN = 20


def queue_workflow_id(thread_id: str) -> str:
    return f"thread-queue/{thread_id}"


@workflow.defn(name=THREAD_QUEUE_WORKFLOW_NAME)
class ThreadQueueWorkflow:
    @workflow.init
    def __init__(self, input: ThreadQueueInput) -> None:
        self._thread_id = input.thread_id
        self._accepted = input.accepted
        self._finished = input.finished
        self._current: EnqueueRequest | None = None
        # Request ID -> run workflow ID and fingerprint (whole, or as carried), oldest first.
        self._seen: dict[str, str] = dict(input.seen)
        self._fingerprints: dict[str, str] = dict(input.fingerprints)
        for request_id, fingerprint in input.remembered.items():
            self._seen[request_id] = input.run_workflow_ids.get(request_id) or RUN_WORKFLOW_ID_PREFIX + request_id
            if fingerprint:
                self._fingerprints[request_id] = fingerprint
        self._pending: deque[EnqueueRequest] = deque(input.pending or [])  # an earlier version's form
        for waiting in input.waiting:
            item = self._restored(waiting)
            self._pending.append(item)
            self._seen[item.request_id] = item.run_workflow_id
            if item.fingerprint is not None:
                self._fingerprints[item.request_id] = item.fingerprint
        self._waiting_bytes = sum(self._carried_size(item) for item in self._pending)
        # For the current details: when each waiting request was accepted (requests carried
        # over from the previous run have no time here) and when the current run started.
        self._enqueued_at: dict[str, datetime] = {}
        self._current_since: datetime | None = None
        self._findable: bool | None = None  # decided once per run (see _search_attributes_on)
        self._namespace_has_attributes = input.search_attributes
        self._run_attributes = input.run_search_attributes
        self._queued_runs_shown: list[str] = []
        self._keeper: asyncio.Task[None] | None = None

    @workflow.update(name="enqueue")
    def enqueue(self, item: EnqueueRequest) -> EnqueueReceipt:
        existing = self._seen.get(item.request_id)
        if existing is not None:
            position, sequence = self._place(existing)
            return EnqueueReceipt(run_workflow_id=existing, position=position, sequence=sequence, duplicate=True)
        self._accepted += 1
        item = item.model_copy(update={"sequence": self._accepted})
        self._pending.append(item)
        self._waiting_bytes += self._carried_size(item)
        self._seen[item.request_id] = item.run_workflow_id
        self._enqueued_at[item.request_id] = workflow.now()
        if item.fingerprint is not None:
            self._fingerprints[item.request_id] = item.fingerprint
        while len(self._seen) > REMEMBERED_REQUESTS:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
            self._fingerprints.pop(oldest, None)
        self._show()
        return EnqueueReceipt(run_workflow_id=item.run_workflow_id, position=len(self._pending), sequence=item.sequence)

    @enqueue.validator
    def _check(self, item: EnqueueRequest) -> None:
        if item.request.context_id != self._thread_id:
            raise ValueError(f"this queue serves {self._thread_id}, not {item.request.context_id}")
        first = self._fingerprints.get(item.request_id)
        if first is not None and item.fingerprint is not None and first[:FINGERPRINT_KEPT] != item.fingerprint[:FINGERPRINT_KEPT]:
            raise ApplicationError(
                f"request ID {item.request_id!r} was already used for a different request on {self._thread_id} "
                f"(run {self._seen.get(item.request_id)}); use a new request ID for a new request",
                type=IDEMPOTENCY_CONFLICT,
                non_retryable=True,
            )
        if item.request_id in self._seen:
            return  # a repeat: answered with the first receipt, it takes no room
        size = self._carried_size(item.model_copy(update={"sequence": self._accepted + 1}))
        if size > MAX_WAITING_BYTES:
            raise ApplicationError(
                f"this request takes {size} bytes as the queue of {self._thread_id} carries it, and a queue carries "
                f"at most {MAX_WAITING_BYTES} bytes of waiting requests; nothing was enqueued",
                type=QUEUE_FULL,
                non_retryable=True,
            )
        if len(self._pending) >= MAX_WAITING or self._waiting_bytes + size > MAX_WAITING_BYTES:
            raise ApplicationError(
                f"the queue of {self._thread_id} is full: {len(self._pending)} requests wait, taking {self._waiting_bytes} "
                f"bytes (a queue holds at most {MAX_WAITING} requests and {MAX_WAITING_BYTES} bytes; this one takes {size}); "
                "nothing was enqueued: try again once some have run",
                type=QUEUE_FULL,
                non_retryable=True,
            )

    @workflow.query(name="state")
    def state(self) -> ThreadQueueState:
        return ThreadQueueState(
            thread_id=self._thread_id,
            running=self._current.run_workflow_id if self._current else None,
            waiting=[item.run_workflow_id for item in self._pending],
            finished=self._finished,
            waiting_bytes=self._waiting_bytes,
        )

    @workflow.run
    async def run(self, input: ThreadQueueInput) -> int:
        runs_here = 0
        if self._search_attributes_on():
            self._upsert_first()
            self._keeper = asyncio.create_task(self._keep_queued_runs())  # ends with the run
        self._show()
        while True:
            if not await self._next_or_idle():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._pending:
                    return self._finished
                continue
            item = self._pending.popleft()
            self._waiting_bytes -= self._carried_size(item)
            self._current = item
            self._current_since = workflow.now()
            self._enqueued_at.pop(item.request_id, None)
            self._show()
            once: dict[str, Any] = {}
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
                    search_attributes=self._first_run_attributes(item),
                    **once,
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
            self._current_since = None
            self._finished += 1
            runs_here += 1
            self._show()
            if runs_here >= RUNS_PER_HISTORY or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carried_state())

    # ------------------------------------------------------------------ what operators see (docs/ui.md)

    def _search_attributes_on(self) -> bool:
        """Whether this run of the queue upserts its search attributes: the patch, taken in its
        first workflow task (a worker can keep it off with a ``patch_activation_callback``, e.g.
        for a namespace without the attributes, where an upsert fails the workflow task)."""
        if self._findable is None:
            # Only where the namespace has them (the starting client checked): an upsert of an
            # attribute the namespace lacks fails the workflow task, again and again.
            self._findable = self._namespace_has_attributes and workflow.patched(QUEUE_SEARCH_ATTRIBUTES)
        return self._findable

    def _first_run_attributes(self, item: EnqueueRequest) -> TypedSearchAttributes | None:
        """The run's AssistantId, ThreadId and RunStatus "starting" from its first event, as a
        run started directly has (a child start's search attributes are not a command of
        their own: histories from before replay unchanged)."""
        if not self._run_attributes:
            return None
        pairs: list[SearchAttributePair[str]] = [SearchAttributePair(sa.RUN_STATUS, "starting")]
        if len(json.dumps(self._thread_id)) <= sa.VALUE_MAX_BYTES:
            pairs.append(SearchAttributePair(sa.THREAD_ID, self._thread_id))
        if item.request.assistant_id is not None:
            pairs.append(SearchAttributePair(sa.ASSISTANT_ID, item.request.assistant_id))
        return TypedSearchAttributes(pairs)

    def _upsert_first(self) -> None:
        """ThreadId (unless carried over from the previous run already) and QueuedRuns."""
        carried = workflow.info().typed_search_attributes
        self._queued_runs_shown = list(carried.get(sa.QUEUED_RUNS) or [])
        updates: list = []
        if carried.get(sa.THREAD_ID) != self._thread_id and len(json.dumps(self._thread_id)) <= sa.VALUE_MAX_BYTES:
            updates.append(sa.THREAD_ID.value_set(self._thread_id))
        queued = self._queued_runs()
        if queued != self._queued_runs_shown:
            updates.append(sa.QUEUED_RUNS.value_set(queued) if queued else sa.QUEUED_RUNS.value_unset())
            self._queued_runs_shown = queued
        if updates:
            workflow.upsert_search_attributes(updates)

    async def _keep_queued_runs(self) -> None:
        """Upsert QueuedRuns when the runs it lists change: once per workflow task at most (a
        burst of enqueues is one upsert), and not at all while only runs beyond it change."""
        while True:
            await workflow.wait_condition(lambda: self._queued_runs() != self._queued_runs_shown)
            queued = self._queued_runs()
            workflow.upsert_search_attributes([sa.QUEUED_RUNS.value_set(queued) if queued else sa.QUEUED_RUNS.value_unset()])
            self._queued_runs_shown = queued

    def _queued_runs(self) -> list[str]:
        """The first waiting runs' workflow IDs, as many as fit in one search attribute value."""
        queued: list[str] = []
        size = 2  # []
        for item in self._pending:
            cost = len(json.dumps(item.run_workflow_id)) + 1
            if len(queued) >= sa.QUEUED_RUNS_MAX or size + cost > sa.VALUE_MAX_BYTES:
                break
            queued.append(item.run_workflow_id)
            size += cost
        return queued

    def _show(self) -> None:
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        """The queue's current details (markdown): the run under way, then the requests waiting
        (the first DETAILS_WAITING_SHOWN of them), or that it has nothing to do."""
        done = f"{self._finished} run{'' if self._finished == 1 else 's'} done"
        if self._current is None and not self._pending:
            return f"idle: nothing running or waiting; ends after {_minutes(IDLE_TIMEOUT)} idle · {done}"
        lines = []
        if self._current is not None:
            since = f", since {_when(self._current_since)}" if self._current_since else ""
            lines.append(f"**running** {_code(self._current.run_workflow_id)} (request {_code(self._current.request_id)}{since})")
        else:
            lines.append("**running** nothing yet: the next request starts now")
        lines.append(f"**waiting** {len(self._pending)} · {done}")
        if self._pending:
            lines += ["", "| # | request | run | enqueued |", "|---:|---|---|---|"]
            for position, item in enumerate(self._pending, start=1):
                if position > DETAILS_WAITING_SHOWN:
                    break
                at = self._enqueued_at.get(item.request_id)
                enqueued = _when(at) if at else "before the queue continued as new"
                lines.append(f"| {position} | {_code(item.request_id)} | {_code(item.run_workflow_id)} | {enqueued} |")
            if len(self._pending) > DETAILS_WAITING_SHOWN:
                lines += ["", f"and {len(self._pending) - DETAILS_WAITING_SHOWN} more"]
        return "\n".join(lines)

    async def _next_or_idle(self) -> bool:
        try:
            await workflow.wait_condition(lambda: bool(self._pending), timeout=IDLE_TIMEOUT)
        except TimeoutError:
            return False
        return True

    def _carried_state(self) -> ThreadQueueInput:
        """What the next run starts from: the waiting requests (bounded by the validator) and
        the newest remembered request IDs that fit in REMEMBERED_BYTES."""
        waiting = [self._carried(item) for item in self._pending]
        waiting_ids = {w.request_id for w in waiting}
        newest_first: list[tuple[str, str]] = []
        run_workflow_ids: dict[str, str] = {}
        budget = REMEMBERED_BYTES
        for request_id in reversed(self._seen):
            if request_id in waiting_ids:
                continue  # carried with its request
            fingerprint = (self._fingerprints.get(request_id) or "")[:FINGERPRINT_KEPT]
            run_workflow_id = self._seen[request_id]
            own_run = run_workflow_id != RUN_WORKFLOW_ID_PREFIX + request_id
            cost = len(json.dumps(request_id)) + len(fingerprint) + 4  # an upper bound of its JSON
            if own_run:
                cost += len(json.dumps(request_id)) + len(json.dumps(run_workflow_id)) + 2
            if cost > budget:
                break
            budget -= cost
            newest_first.append((request_id, fingerprint))
            if own_run:
                run_workflow_ids[request_id] = run_workflow_id
        return ThreadQueueInput(
            thread_id=self._thread_id,
            waiting=waiting,
            remembered=dict(reversed(newest_first)),
            run_workflow_ids=run_workflow_ids,
            accepted=self._accepted,
            finished=self._finished,
            search_attributes=self._namespace_has_attributes,
            run_search_attributes=self._run_attributes,
            pending=None,
        )

    def _carried(self, item: EnqueueRequest) -> WaitingRequest:
        """``item`` as carried: without what the queue restores (see ``_restored``)."""
        default = default_summary(item.request, self._thread_id)
        return WaitingRequest(
            request_id=item.request_id,
            request=item.request,
            sequence=item.sequence,
            fingerprint=item.fingerprint,
            run_workflow_id=None if item.run_workflow_id == RUN_WORKFLOW_ID_PREFIX + item.request_id else item.run_workflow_id,
            task_queue=None if item.task_queue == workflow.info().task_queue else item.task_queue,
            summary=None if item.summary == default else item.summary or "",
        )

    def _restored(self, waiting: WaitingRequest) -> EnqueueRequest:
        return EnqueueRequest(
            request_id=waiting.request_id,
            run_workflow_id=waiting.run_workflow_id or RUN_WORKFLOW_ID_PREFIX + waiting.request_id,
            request=waiting.request,
            task_queue=waiting.task_queue,  # None runs it on the queue's own task queue
            summary=default_summary(waiting.request, self._thread_id) if waiting.summary is None else waiting.summary or None,
            sequence=waiting.sequence,
            fingerprint=waiting.fingerprint,
        )

    def _carried_size(self, item: EnqueueRequest) -> int:
        return len(self._carried(item).model_dump_json(exclude_defaults=True).encode())

    def _place(self, run_workflow_id: str) -> tuple[int, int]:
        """Position and sequence of a waiting run; (0, 0) once it has started."""
        for index, item in enumerate(self._pending, start=1):
            if item.run_workflow_id == run_workflow_id:
                return index, item.sequence
        return 0, 0


def _code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "/") + "`"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:g} min"
