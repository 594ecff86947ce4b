"""``AssistantRun``: one workflow per assistant run.

The loop (see DESIGN.md): start the run and wait until it is actionable (one activity);
on ``requires_action`` run every tool call of the round as its own activity, all at once;
submit all outputs and wait again (one activity); until the run ends. Problems the model
made (an unknown tool, arguments that are not a JSON object) never reach an activity: the
model gets an error output it can act on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutType,
)
from temporalio.exceptions import (
    CancelledError as TemporalCancelledError,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)

with workflow.unsafe.imports_passed_through():
    import jsonschema
    import pydantic

    from durable_assistants.activities import metrics
    from durable_assistants.activities.callbacks import CallbackInput
    from durable_assistants.activities.model_api import (
        CancelInput,
        CreateThreadInput,
        ModelActivities,
        StartInput,
        StartResult,
        SubmitInput,
        ToolOutput,
    )
    from durable_assistants.activities.tools import INVALID_ARGUMENTS, TOOL_RETRIES_EXHAUSTED, ToolCallInput, ToolCallOutput, output_text
    from durable_assistants.tools import ToolPolicy
    from durable_assistants.workflows import search_attributes as sa
    from durable_assistants.workflows.models import (
        PROGRESS_TOPIC,
        RUN_EXPIRED,
        RUN_FAILED,
        RUN_WORKFLOW_NAME,
        ApprovalAsk,
        ApprovalRecord,
        CallbackAttempt,
        CallbackDelivery,
        CallbackEvent,
        LiveSnapshot,
        ModelTokens,
        PendingApproval,
        PendingToolCall,
        ProgressEvent,
        RunCost,
        RunProgress,
        RunRequest,
        RunResult,
        RunSnapshot,
        ToolCall,
        ToolCallDecision,
        ToolCallRecord,
        TurnTokens,
    )

# Model-API activities wait for the model inside (polling or streaming) and heartbeat.
MODEL_API_START_TO_CLOSE = timedelta(minutes=15)
MODEL_API_HEARTBEAT = timedelta(seconds=30)
MODEL_API_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30))
CANCEL_START_TO_CLOSE = timedelta(minutes=2)
# A callback: one POST per activity (the workflow keeps the backoff and the budget, so every
# attempt is in the result); backoff from 1 s doubling to 60 s; the newest attempts kept.
CALLBACK_ATTEMPT_TIMEOUT = timedelta(seconds=15)
CALLBACK_FIRST_PAUSE = 1.0
CALLBACK_MAX_PAUSE = 60.0
CALLBACK_ATTEMPTS_KEPT = 10
# Stopping an API run (cancel, then wait for it to end) gives up after this long at most (or
# the request's model-API budget, if shorter): the workflow then ends and says what it left.
CLEANUP_BUDGET = timedelta(minutes=5)
PREVIEW_CHARS = 200
# What a run carries is bounded whatever its length (Temporal's payload limit is 2 MB): a tool
# call's arguments are kept up to this many characters in its record (the tool gets them all),
RECORD_ARGUMENTS_CHARS = 1_000
# the newest this many records are kept (the result says how many there were in all),
RECORDS_KEPT = 500
# and followers can read the newest this many progress events after a continue-as-new;
PROGRESS_KEPT = 1_000
# the newest this many turns' tokens are itemized (the totals and the by-model sums keep all).
TURNS_KEPT = 500
T = TypeVar("T")
# A call that needs approval waits this long for a decision unless the request says otherwise
# (and never past the run's expires_at less the margin and the tool's timeout).
DEFAULT_APPROVAL_SECONDS = 24 * 3600.0
# Responses runs that stop at requires_action on a conversation answer its pending calls.
ANSWER_STOPPED_CALLS = "answer-stopped-calls"
# A cancel during a model activity waits for it to stop the API run, then stops the workflow's run.
WAIT_FOR_MODEL_CANCEL = "wait-for-model-cancel"
SUMMARY_CHARS = 120
# Tool activities: unlimited Temporal attempts within the tool's time budget; the activity
# counts the tool's own failures against max_attempts (activities/tools.py).
TOOL_BUDGET = "tool-budget-counts-own-failures"
RELEASE_FOLLOWERS_ON_FAILURE = "release-followers-on-failure"
# Before each round the workflow asks Temporal whether it was cancelled: a model activity that
# finished its turn without hearing the cancel hands back a result, and the run must still stop.
CANCEL_CHECKED_EACH_ROUND = "cancel-checked-each-round"
# The workflow's own status is the run's outcome: a run that ends failed or expired fails the
# workflow (its RunResult in the failure's details), a cancelled one ends it Canceled; and a
# cancelled run waits until its tools' cancellation is recorded (no pending activity after).
OUTCOME_IS_WORKFLOW_STATUS = "outcome-is-workflow-status"
TOOLS_WAIT_FOR_CANCEL = "tools-wait-for-cancel"
# A round that ends early (the workflow is cancelled, a tool would outlast the run) stops and
# waits for every call of the round before it goes on: a call whose result landed in the same
# workflow task as the cancel ends at once, and asyncio.gather alone then left the others pending.
ROUND_STOPS_TOGETHER = "round-stops-together"
# RunStatus says "running_tools" while a round's tools run, and "requires_action" only once
# their outputs wait to be submitted (a submit that cannot get through shows as that).
RUNNING_TOOLS_STATUS = "running-tools-status"
RUNNING_TOOLS = "running_tools"
# Search attributes are upserted only when a value changes (the same ApiRunId, ThreadId and
# AssistantId every round were a write each).
UPSERT_ONLY_CHANGES = "upsert-only-changes"
# The model activities run the round's inline tools (@tool(inline=True)) and hand back their
# outputs: such a call costs no activity of its own; and they hand back the turn's last
# streamed text with their result instead of signalling it just before (one workflow task
# less per streamed turn). Histories from before never asked for either.
INLINE_TOOLS = "inline-tools"


@workflow.defn(name=RUN_WORKFLOW_NAME)
class AssistantRunWorkflow:
    # The input is validated here, at the boundary, not by the data converter: a request that
    # doesn't match RunRequest (from a caller in any language) fails the workflow at once with
    # pydantic's message naming the field and the value, while any other error (a bug of ours)
    # fails only the workflow task, which a fixed deploy retries, instead of the run for good.
    @workflow.init
    def __init__(self, request: dict[str, Any]) -> None:
        self._invalid: str | None = None
        try:
            self._request = RunRequest.model_validate(request)
        except pydantic.ValidationError as exc:
            self._invalid = _describe_invalid(exc)
            self._request = RunRequest.model_construct()
        request = self._request  # type: ignore[assignment]
        self._snapshot: RunSnapshot | None = None
        self._records: list[ToolCallRecord] = []
        self._records_dropped = 0
        self._dropped_tool_names: set[str] = set()
        self._round = 0
        self._failure: str | None = None
        self._policies: dict[str, ToolPolicy] = {}
        self._search_attributes = False
        self._private = False  # the worker encrypts payloads (StartResult.private): summaries without arguments
        self._pending: dict[str, tuple[ToolCall, float]] = {}
        self._response_ids: list[str] = []
        self._callback: CallbackDelivery | None = None  # while the callback is delivered
        # The run's story for followers (status, tool calls, text): readable from offset 0
        # at any time, also after the run ended.
        self._stream = WorkflowStream(prior_state=self._request.resume.stream_state if self._request.resume else None)
        self._progress = self._stream.topic(PROGRESS_TOPIC, type=ProgressEvent)
        self._final: RunResult | None = None
        self._finished_in_round = 0  # tool calls of this round that have ended (for the details)
        # Human approval: the calls waiting for a decision, the decisions not yet taken up by
        # their call, and what was decided this run (for a clear answer to a late decision).
        self._approvals: dict[str, PendingApproval] = {}
        self._decisions: dict[str, ApprovalRecord] = {}
        self._edits: dict[str, dict[str, Any]] = {}
        self._decided: dict[str, ApprovalRecord] = {}
        self._approval_attribute = False  # the namespace has AwaitingApproval
        # Tokens: each turn's, and every turn's by model (kept whole when turns are dropped).
        self._turns: list[TurnTokens] = []
        self._tokens_seen = (0, 0)
        self._by_model: dict[str, ModelTokens] = {}

    @workflow.query(name="result")
    def final_result(self) -> RunResult | None:
        """The run's result once it has ended, whatever the workflow's status: how a caller
        reads the result of a cancelled run (a Canceled workflow carries none)."""
        return self._final

    @workflow.query(name="snapshot")
    def snapshot(self) -> LiveSnapshot:
        """The run as it is now: status, round, and the tool calls still running."""
        now = workflow.now().timestamp()
        snapshot = self._snapshot
        return LiveSnapshot(
            status=snapshot.status if snapshot else "starting",
            round=self._round,
            assistant_id=self._request.assistant_id,
            agent=self._request.agent_label,
            backend=snapshot.backend if snapshot else self._request.implied_backend(),
            thread_id=snapshot.thread_id if snapshot else self._request.context_id,
            run_id=snapshot.run_id if snapshot else None,
            pending_tool_calls=[
                PendingToolCall(call_id=c.id, name=c.name, arguments=c.arguments, elapsed_seconds=round(now - t, 3), started_at=t)
                for c, t in self._pending.values()
            ],
            tool_calls_done=self._records_dropped + len(self._records),
            failure=self._failure,
            pending_approvals=list(self._approvals.values()),
            cost=self._cost(),
            callback=self._callback,
        )

    @workflow.update(name="decide_tool_call")
    def decide_tool_call(self, decision: ToolCallDecision) -> ApprovalRecord:
        """A person's decision on a call that waits for approval: approve (it runs), reject
        (the model gets an output saying so, with the note) or edit (it runs with the edited
        arguments). The validator refuses what cannot be taken, changing nothing; of two
        decisions on one call that pass it together, the first wins and the other fails here."""
        pending = self._approvals.get(decision.call_id)
        if pending is None or decision.call_id in self._decisions:
            raise ApplicationError(self._not_waiting(decision.call_id), type="ApprovalNotPending", non_retryable=True)
        outcome = {"approve": "approved", "reject": "rejected", "edit": "edited"}[decision.decision]
        record = ApprovalRecord(
            decision=outcome,
            by=decision.by,
            note=decision.note,
            requested_at=pending.requested_at,
            decided_at=workflow.now().timestamp(),
            original_arguments=pending.arguments if decision.decision == "edit" else None,
        )
        self._decisions[decision.call_id] = record
        if decision.edited_arguments is not None:
            self._edits[decision.call_id] = decision.edited_arguments
        return record

    @decide_tool_call.validator
    def _check_decision(self, decision: ToolCallDecision) -> None:
        pending = self._approvals.get(decision.call_id)
        if pending is None or decision.call_id in self._decisions:
            raise ValueError(self._not_waiting(decision.call_id))
        if decision.decision == "reject" and not (decision.note or "").strip():
            raise ValueError(f"rejecting {pending.tool} call {decision.call_id} needs a note: the model is told why")
        if decision.decision == "edit":
            if decision.edited_arguments is None:
                raise ValueError(f"decision 'edit' needs edited_arguments: the arguments {pending.tool} runs with")
            problems = _schema_problems(pending.parameters, decision.edited_arguments)
            if problems:
                raise ValueError(f"edited_arguments do not match {pending.tool}'s parameters: {problems}")
        elif decision.edited_arguments is not None:
            raise ValueError(f"edited_arguments go with decision 'edit', not {decision.decision!r}")

    def _not_waiting(self, call_id: str) -> str:
        decided = self._decisions.get(call_id) or self._decided.get(call_id)
        if decided is not None:
            by = f" by {decided.by}" if decided.by else ""
            return f"tool call {call_id} was already decided: {decided.decision}{by}"
        waiting = ", ".join(f"{p.call_id} ({p.tool})" for p in self._approvals.values()) or "none"
        return f"no tool call {call_id!r} waits for approval in this run (waiting: {waiting})"

    @workflow.run
    async def run(self, request: dict[str, Any]) -> RunResult:
        if self._invalid is not None:
            raise ApplicationError(f"invalid run request: {self._invalid}", type="InvalidRunRequest", non_retryable=True)
        if workflow.info().typed_search_attributes.get(sa.RUN_STATUS) is not None:
            # Started with the run's attributes (enqueue_run checked the namespace has them):
            # a failure before the first model step can set RunStatus too.
            self._search_attributes = True
        # The API as the request names it ("default": the worker's), the same label at the end.
        api = self._request.implied_backend() or "default"
        if self._request.resume is None:
            metrics.run_started(workflow.metric_meter(), api)
        try:
            result = await self._run(self._request)
        except (Exception, asyncio.CancelledError) as exc:
            self._count_end(api, "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed", None)
            # A run that fails releases its followers too (else their polls are left open, and
            # the SDK warns of unfinished handlers). Runs recorded before this replay as they ran.
            # (Not BaseException: a workflow evicted from the cache is closed with GeneratorExit,
            # outside the workflow's event loop, where nothing of the workflow may run.)
            if workflow.patched(RELEASE_FOLLOWERS_ON_FAILURE):
                await self._release_followers()
            if isinstance(exc, ApplicationError) and self._search_attributes and workflow.patched(OUTCOME_IS_WORKFLOW_STATUS):
                self._upsert([sa.RUN_STATUS.value_set("failed")])  # the workflow fails with it
            if isinstance(exc, ApplicationError):
                workflow.set_current_details(f"**failed** · {self._request.agent_label} · round {self._round}\n\nreason: {exc.message}")
            if self._request.callback is not None:
                cancelled = isinstance(exc, asyncio.CancelledError)
                await self._deliver_callback(None, "cancelled" if cancelled else "failed", "the run was cancelled" if cancelled else str(exc))
            raise
        await self._release_followers()
        self._final = result
        self._count_end(api, result.status, result)
        if self._request.callback is not None:
            result.callback = await self._deliver_callback(result, result.status, None)
        if self._snapshot is not None and result.status != self._snapshot.status:
            self._set_details(self._snapshot, result.status)  # "failed", not the cancelled API run's status
        if result.status in ("failed", "expired", "cancelled") and workflow.patched(OUTCOME_IS_WORKFLOW_STATUS):
            if self._search_attributes:
                # The run's outcome, not its API run's last status (a failed run's API run was cancelled).
                self._upsert([sa.RUN_STATUS.value_set(result.status)])
            if result.status == "cancelled":
                if workflow.cancellation_reason() is not None:
                    raise asyncio.CancelledError(result.failure or "the workflow was cancelled")
            else:
                raise ApplicationError(
                    f"run {result.status}: {result.failure or _api_reason(result) or 'no reason given'}",
                    result,
                    type=RUN_FAILED if result.status == "failed" else RUN_EXPIRED,
                    non_retryable=True,
                )
        return result

    async def _deliver_callback(self, result: RunResult | None, status: str, error: str | None) -> CallbackDelivery:
        """POST the run's outcome to the request's callback until a 2xx or its budget is spent;
        whatever happens, the run's outcome stays as it is."""
        callback = self._request.callback
        assert callback is not None
        info = workflow.info()
        delivery_id = f"{info.workflow_id}/callback"
        event = f"run.{status}"
        body = CallbackEvent(
            id=delivery_id, type=event, created=int(workflow.now().timestamp()), workflow_id=info.workflow_id, result=result, error=error,
        ).model_dump_json()
        ends = workflow.now().timestamp() + callback.max_seconds
        attempts: list[CallbackAttempt] = []
        delivery = CallbackDelivery(url=callback.url, delivery_id=delivery_id, delivered=False, attempts=0)
        self._callback = delivery  # what the snapshot query shows meanwhile
        pause = CALLBACK_FIRST_PAUSE
        while True:
            workflow.set_current_details(f"**{status}** · delivering the callback to {callback.url} · attempt {len(attempts) + 1}")
            try:
                attempt = await workflow.execute_activity(
                    "deliver_callback",
                    CallbackInput(url=callback.url, secret=callback.secret, delivery_id=delivery_id, event=event, body=body),
                    start_to_close_timeout=CALLBACK_ATTEMPT_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    result_type=CallbackAttempt,
                    summary=f"callback attempt {len(attempts) + 1}",
                )
            except ActivityError as exc:
                attempts.append(_callback_attempt(exc))
            except asyncio.CancelledError:  # cancelled again while delivering: stop, as asked
                delivery.gave_up = "the workflow was cancelled during delivery"
                break
            else:
                attempts.append(attempt)
                delivery.delivered, delivery.delivered_at = True, attempt.at
            delivery.attempts, delivery.last_attempts = len(attempts), attempts[-CALLBACK_ATTEMPTS_KEPT:]
            if delivery.delivered:
                break
            if workflow.now().timestamp() + pause >= ends:
                delivery.gave_up = f"no 2xx answer within {callback.max_seconds:g} s ({len(attempts)} attempts)"
                break
            await workflow.sleep(pause)
            pause = min(pause * 2, CALLBACK_MAX_PAUSE)
        outcome = "delivered" if delivery.delivered else f"not delivered: {delivery.gave_up}"
        workflow.set_current_details(f"**{status}** · callback {outcome} ({delivery.attempts} attempt(s))")
        return delivery

    def _count_end(self, api: str, status: str, result: RunResult | None) -> None:
        usage = result.usage if result is not None else None
        metrics.run_ended(
            workflow.metric_meter(), api, status, self._round, self._request.model or ("assistant" if self._request.assistant_id else None),
            usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
        )

    async def _release_followers(self) -> None:
        """Release followers' long polls before the run closes; they read the rest by query."""
        self._stream.detach_pollers()
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _run(self, request: RunRequest) -> RunResult:
        try:
            if request.resume is not None:
                self._resume(request.resume)
            else:
                await self._start(request)
            assert self._snapshot is not None
            self._observe(self._snapshot)
            while self._snapshot.status == "requires_action":
                self._raise_if_cancel_requested()
                self._round += 1
                outputs = await self._run_round(request, self._snapshot, self._policies)
                if self._failure is not None:
                    return await self._stop(request, "failed")
                if self._search_attributes and workflow.patched(RUNNING_TOOLS_STATUS):
                    self._upsert([sa.RUN_STATUS.value_set("requires_action")])  # outputs to submit
                self._snapshot = await self._submit(request, self._snapshot, outputs)
                self._observe(self._snapshot)
                if self._snapshot.status == "requires_action" and workflow.info().is_continue_as_new_suggested():
                    await self._stream.continue_as_new(
                        lambda state: [request.model_copy(update={"resume": self._carry(state)})]
                    )
        except asyncio.CancelledError:
            self._failure = "the workflow was cancelled"
            return await self._stop(request, "cancelled")
        except _RunOutOfTime as exc:
            self._failure = str(exc)
            return await self._stop(request, "expired")
        return self._result(self._snapshot)

    async def _start(self, request: RunRequest) -> None:
        key = self._key()
        thread_id = request.thread_id
        since = workflow.now()
        try:
            # Assistants runs need a thread first; Responses runs continue a conversation or chain, or start fresh.
            if thread_id is None and request.assistant_id is not None:
                thread_id = await workflow.execute_activity_method(
                    ModelActivities.create_thread,
                    CreateThreadInput(request=request, key=key),
                    start_to_close_timeout=timedelta(minutes=2),
                    schedule_to_close_timeout=self._model_budget(),
                    heartbeat_timeout=MODEL_API_HEARTBEAT,  # a killed worker is noticed in 30 s, not 2 min
                    retry_policy=MODEL_API_RETRY,
                    summary="create thread",
                )
            handle = workflow.start_activity_method(
                ModelActivities.start_run,
                StartInput(
                    request=request, thread_id=thread_id, key=key, add_messages=request.thread_id is not None,
                    **self._version_asks(), approval=dict(request.approval),
                ),
                start_to_close_timeout=MODEL_API_START_TO_CLOSE,
                schedule_to_close_timeout=self._model_budget(),
                heartbeat_timeout=MODEL_API_HEARTBEAT,
                retry_policy=MODEL_API_RETRY,
                # A cancelled workflow waits while the activity stops the API run it has under way.
                cancellation_type=self._model_cancellation(),
                summary=f"start run of {request.agent_label} on {thread_id}"
                if thread_id is not None
                else f"start response of {request.agent_label}" + (
                    f" on {request.context_id}" if request.context_id else ""
                )
                if request.implied_backend() == "responses"
                else f"start run of {request.agent_label} (the worker's default API)",
            )
            start = await self._model_step(handle, self._started)
        except ActivityError as exc:
            self._raise_if_cancelled(exc)
            raise _as_application_error(exc, "starting the run", since) from None
        self._started(start)

    def _started(self, start: StartResult) -> None:
        self._snapshot = start.snapshot
        self._policies = start.tools
        self._search_attributes = start.search_attributes
        self._private = start.private
        self._approval_attribute = start.approval_attribute
        if start.snapshot.cancel_requested:
            raise asyncio.CancelledError()

    @staticmethod
    def _version_asks() -> dict[str, bool]:
        """What a model activity may hand back to a workflow of this version (patch
        inline-tools): inline tools' outputs, and the turn's last text with the result."""
        asks = workflow.patched(INLINE_TOOLS)
        return {"inline_tools": asks, "text_tail": asks}

    def _model_cancellation(self) -> workflow.ActivityCancellationType:
        """Model activities: a cancelled workflow waits while the activity stops what it has
        under way. Histories from before this (patch absent) abandoned the activity at once."""
        if self._cancels_handled():
            return workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        return workflow.ActivityCancellationType.TRY_CANCEL

    async def _model_step(self, handle: asyncio.Task[T], keep: Callable[[T], object]) -> T:
        """Await a model activity, shielded from the workflow's cancel so that its outcome is
        always seen through the handle's public API: a result that landed in the same workflow
        task as the cancel still counts, and otherwise the activity is asked to stop what it has
        under way and hands back its final state. Either way ``keep`` stores it, then the cancel
        goes on, so that stopping starts from what really happened."""
        if not self._cancels_handled():
            return await handle  # as before the patch
        try:
            return await asyncio.shield(handle)
        except asyncio.CancelledError:
            pass
        if not handle.done():
            handle.cancel()  # asks the activity to cancel; WAIT_CANCELLATION_COMPLETED waits for its outcome
        try:
            outcome = await handle
        except ActivityError as exc:
            self._note_in_flight(exc)  # it failed or timed out stopping: its last heartbeat names the run
            raise asyncio.CancelledError() from None
        keep(outcome)
        raise asyncio.CancelledError()

    @staticmethod
    def _raise_if_cancel_requested() -> None:
        """The workflow was cancelled (by the server's request), whatever the last step said."""
        if workflow.cancellation_reason() is not None and workflow.patched(CANCEL_CHECKED_EACH_ROUND):
            raise asyncio.CancelledError()

    @staticmethod
    def _cancels_handled() -> bool:
        return workflow.patched(WAIT_FOR_MODEL_CANCEL)

    def _raise_if_cancelled(self, exc: ActivityError) -> None:
        """A model activity that ended because the workflow is being cancelled (cancelled, or
        failed or timed out once the cancel was requested, which Temporal does not retry)."""
        if not self._cancels_handled():
            return  # as before the patch: the failure fails the workflow
        if isinstance(exc.cause, TemporalCancelledError) or exc.retry_state == RetryState.CANCEL_REQUESTED:
            self._note_in_flight(exc)
            raise asyncio.CancelledError() from None

    def _note_in_flight(self, exc: ActivityError) -> None:
        """An activity that timed out (its worker gone) cannot stop what it had under way; its
        last heartbeat names it (``TurnIO.running``), so that ``_stop`` can."""
        details = getattr(exc.cause, "last_heartbeat_details", None) or ()
        in_flight = details[0].get("in_flight") if details and isinstance(details[0], dict) else None
        if isinstance(in_flight, dict):
            self._snapshot = RunSnapshot.model_validate({**in_flight, "status": "cancelling"})

    def _model_budget(self) -> timedelta:
        """The total time one model-API step may take across its retries."""
        return timedelta(seconds=self._request.model_api_budget_seconds)

    @staticmethod
    def _key() -> str:
        """Tags every message, run and response the worker creates; the same across retries and continue-as-new."""
        info = workflow.info()
        return f"{info.workflow_id}/{info.first_execution_run_id}"

    def _resume(self, progress: RunProgress) -> None:
        self._snapshot = progress.snapshot
        self._policies = progress.tools
        self._records = list(progress.records)
        self._records_dropped = progress.records_dropped
        self._dropped_tool_names = set(progress.dropped_tool_names)
        self._round = progress.rounds
        self._search_attributes = progress.search_attributes
        self._private = progress.private
        self._approval_attribute = progress.approval_attribute
        self._response_ids = list(progress.response_ids)
        self._turns = list(progress.turns)
        self._by_model = {m.model or "": m for m in progress.by_model}
        self._tokens_seen = progress.tokens_seen

    def _trim_records(self) -> None:
        """Keep the newest ``RECORDS_KEPT`` tool-call records; count (and name) the others."""
        dropped = self._records[:-RECORDS_KEPT]
        if dropped:
            self._records = self._records[-RECORDS_KEPT:]
            self._records_dropped += len(dropped)
            self._dropped_tool_names.update(r.name for r in dropped)

    def _carry(self, stream_state: object) -> RunProgress:
        assert self._snapshot is not None
        self._trim_records()
        return RunProgress(
            thread_id=self._snapshot.thread_id,
            snapshot=self._snapshot,
            tools=self._policies,
            records=self._records,
            rounds=self._round,
            search_attributes=self._search_attributes,
            private=self._private,
            approval_attribute=self._approval_attribute,
            response_ids=self._response_ids,
            turns=self._turns[-TURNS_KEPT:],
            by_model=list(self._by_model.values()),
            tokens_seen=self._tokens_seen,
            stream_state=_newest_events(stream_state),
            records_dropped=self._records_dropped,
            dropped_tool_names=sorted(self._dropped_tool_names),
        )

    # ------------------------------------------------------------------ what operators and followers see

    def _emit(self, kind: str, **fields: object) -> None:
        self._progress.publish(ProgressEvent(kind=kind, at=workflow.now().timestamp(), round=self._round, **fields))

    def _observe(self, snapshot: RunSnapshot) -> None:
        """A new snapshot: tell followers, the UI's details and the search attributes."""
        for event in snapshot.text_tail:  # the turn's last text, carried by the result
            self._progress.publish(event)
        snapshot.text_tail.clear()  # once: a snapshot carried over continue-as-new is observed again
        if snapshot.backend == "responses" and snapshot.run_id not in self._response_ids:
            self._response_ids.append(snapshot.run_id)
        self._count_tokens(snapshot)
        self._emit("status", status=snapshot.status, run_id=snapshot.run_id, thread_id=snapshot.thread_id)
        if self._search_attributes:
            status: str = snapshot.status
            if status == "requires_action" and workflow.patched(RUNNING_TOOLS_STATUS):
                status = RUNNING_TOOLS  # the round starts in this same workflow task
            updates: list[SearchAttributeUpdate[Any]] = [sa.RUN_ID.value_set(snapshot.run_id), sa.RUN_STATUS.value_set(status)]
            if self._request.assistant_id is not None:
                updates.append(sa.ASSISTANT_ID.value_set(self._request.assistant_id))
            if snapshot.thread_id is not None:
                updates.append(sa.THREAD_ID.value_set(snapshot.thread_id))
            names = sorted({c.name for c in snapshot.tool_calls} | {r.name for r in self._records} | self._dropped_tool_names)
            if names:
                updates.append(sa.TOOL_NAMES.value_set(names))
            self._upsert(updates)
        self._set_details(snapshot)

    def _count_tokens(self, snapshot: RunSnapshot) -> None:
        """The tokens the usage reported since the last turn counted: a new turn (each
        response on Responses; the whole run, once it ends, on Assistants)."""
        usage = snapshot.usage
        if usage is None:
            return
        added_in, added_out = usage.prompt_tokens - self._tokens_seen[0], usage.completion_tokens - self._tokens_seen[1]
        if added_in <= 0 and added_out <= 0:
            return  # seen already (a snapshot observed again after continue-as-new)
        self._tokens_seen = (usage.prompt_tokens, usage.completion_tokens)
        turn = TurnTokens(
            turn=(self._turns[-1].turn if self._turns else 0) + 1, id=snapshot.run_id, model=snapshot.model,
            input_tokens=max(added_in, 0), output_tokens=max(added_out, 0),
        )
        self._turns = [*self._turns[-(TURNS_KEPT - 1):], turn]
        used = ModelTokens(model=snapshot.model, input_tokens=turn.input_tokens, output_tokens=turn.output_tokens, turns=1)
        known = self._by_model.get(snapshot.model or "")
        self._by_model[snapshot.model or ""] = used if known is None else known.plus(used)

    def _cost(self) -> RunCost:
        return RunCost(
            input_tokens=self._tokens_seen[0], output_tokens=self._tokens_seen[1],
            turns=list(self._turns), by_model=list(self._by_model.values()),
        )

    def _upsert(self, updates: list) -> None:
        """Upsert the attributes whose value changes (each upsert is a command and a write on
        the server; histories from before the patch upserted every value every time)."""
        if workflow.patched(UPSERT_ONLY_CHANGES):
            current = workflow.info().typed_search_attributes
            updates = [u for u in updates if current.get(u.key) != u.value]
            if not updates:
                return
        workflow.upsert_search_attributes(updates)

    def _set_details(self, snapshot: RunSnapshot, status: str | None = None) -> None:
        """The UI's current details: ``status`` (the run's outcome once it has one), else the
        API run's status."""
        if snapshot.backend == "responses":
            where = f"conversation `{snapshot.thread_id}` · " if snapshot.thread_id else ""
            who = f"{self._request.agent_label} · {where}response `{snapshot.run_id}`"
        else:
            who = f"{self._request.agent_label} · thread `{snapshot.thread_id}` · run `{snapshot.run_id}`"
        done = self._records_dropped + len(self._records) + self._finished_in_round
        lines = [f"**{status or snapshot.status}** · round {self._round} · {done} tool calls done", who]
        if self._pending:
            lines.append("running: " + ", ".join(
                f"{_summary(call, self._private)} since {_clock(started)}" for call, started in self._pending.values()
            ) + " (progress: the pending activity's heartbeat)")
        if self._approvals:
            lines.append("waiting for approval: " + ", ".join(
                f"{_summary(ToolCall(id=p.call_id, name=p.tool, arguments=p.arguments), self._private)} (call {p.call_id}) "
                f"until {_clock(p.deadline)}"
                for p in self._approvals.values()
            ) + f" (durable-assistants approve|reject {workflow.info().workflow_id} CALL)")
        if self._failure:
            lines.append(f"stopped: {self._failure}")
        workflow.set_current_details("\n\n".join(lines))

    # ------------------------------------------------------------------ one round of tools

    async def _run_round(self, request: RunRequest, snapshot: RunSnapshot, policies: dict[str, ToolPolicy]) -> list[ToolOutput]:
        deadline = None
        if snapshot.expires_at is not None:
            deadline = snapshot.expires_at - request.expiry_margin_seconds
        self._finished_in_round = 0
        calls = [self._call_tool(request, snapshot, call, policies.get(call.name), deadline) for call in snapshot.tool_calls]
        if workflow.patched(ROUND_STOPS_TOGETHER):
            finished = await _all_calls(calls)
        else:
            finished = await asyncio.gather(*calls)  # as recorded before the patch
        self._finished_in_round = 0
        self._records.extend(record for _, record in finished)  # in call order, not finishing order
        return [output for output, _ in finished]

    async def _call_tool(
        self,
        request: RunRequest,
        snapshot: RunSnapshot,
        call: ToolCall,
        policy: ToolPolicy | None,
        deadline: float | None,
    ) -> tuple[ToolOutput, ToolCallRecord]:
        started = workflow.now()
        error: str | None = None
        if policy is None:
            known = ", ".join(sorted(self._policies)) or "none"
            error = f"unknown tool '{call.name}'. Available tools: {known}."
        elif not _is_json_object(call.arguments):
            error = f"the arguments for {call.name} are not a JSON object: {call.arguments[:PREVIEW_CHARS]!r}"
        if error is not None:
            return self._record(call, f"Error: {error}", started, attempts=0, error=error)

        assert policy is not None
        ask = next((a for a in snapshot.approvals if a.call_id == call.id), None)
        if ask is not None:
            call, approval = await self._wait_for_decision(request, call, policy, ask, deadline)
            if approval.decision in ("rejected", "timed_out"):
                why = _not_approved(approval)
                output, record = self._record(call, f"Error: {why}", started, attempts=0, error=why)
                record.approval = approval
                return output, record
            # Its duration is the tool's own, from the decision on (the wait is in the approval).
            output, record = await self._run_call(request, snapshot, call, policy, deadline, workflow.now())
            record.approval = approval
            return output, record
        return await self._run_call(request, snapshot, call, policy, deadline, started)

    async def _run_call(
        self, request: RunRequest, snapshot: RunSnapshot, call: ToolCall, policy: ToolPolicy, deadline: float | None, started: Any
    ) -> tuple[ToolOutput, ToolCallRecord]:
        inline = next((r for r in snapshot.inline_results if r.call_id == call.id), None)
        if inline is not None:
            # Run already by the model activity that saw the round (an inline tool).
            self._emit("tool_started", tool=call.name, call_id=call.id, arguments=call.arguments[:PREVIEW_CHARS], inline=True)
            on_failure = request.tool_failure or policy.on_failure
            if inline.outcome == "error" and on_failure == "fail_run" and self._failure is None:
                self._failure = f"tool {call.name} failed: {inline.error}"
            return self._record(call, inline.output, started, attempts=inline.attempts, error=inline.error, duration=inline.duration_seconds)
        self._pending[call.id] = (call, started.timestamp())
        self._emit("tool_started", tool=call.name, call_id=call.id, arguments=call.arguments[:PREVIEW_CHARS])
        assert self._snapshot is not None
        self._set_details(self._snapshot)
        try:
            return await self._execute_tool(request, snapshot, call, policy, deadline, started)
        finally:
            del self._pending[call.id]
            self._finished_in_round += 1
            # (Not while the worker evicts the workflow: it closes the coroutine with GeneratorExit
            # outside the workflow's event loop, where no workflow call may run.)
            if self._snapshot is not None and workflow.in_workflow():
                self._set_details(self._snapshot)  # the UI's details drop it from "running" at once

    async def _wait_for_decision(
        self, request: RunRequest, call: ToolCall, policy: ToolPolicy, ask: ApprovalAsk, deadline: float | None
    ) -> tuple[ToolCall, ApprovalRecord]:
        """Wait for a person's decision on ``call`` (the ``decide_tool_call`` update), until
        the request's approval timeout, and never past the run's deadline less the tool's own
        timeout. Returns the call to run (edited arguments, if so decided) and the decision."""
        now = workflow.now().timestamp()
        ends = now + (request.approval_timeout_seconds or DEFAULT_APPROVAL_SECONDS)
        if deadline is not None:
            ends = min(ends, deadline - policy.timeout_seconds)
        pending = PendingApproval(
            call_id=call.id, tool=call.name, arguments=call.arguments, round=self._round, reason=ask.reason,
            requested_at=now, deadline=ends, parameters=ask.parameters,
        )
        self._approvals[call.id] = pending
        self._emit("approval_requested", tool=call.name, call_id=call.id, arguments=call.arguments[:PREVIEW_CHARS],
                   note=ask.reason, deadline=ends)
        self._approvals_changed()
        try:
            if ends > now:
                await workflow.wait_condition(lambda: call.id in self._decisions, timeout=ends - now)
        except TimeoutError:
            pass
        finally:
            del self._approvals[call.id]
            if workflow.in_workflow():  # not while the worker evicts the workflow (see _run_call)
                self._approvals_changed()
        record = self._decisions.pop(call.id, None)
        if record is None:
            waited = ends - now
            record = ApprovalRecord(
                decision="timed_out", requested_at=now, decided_at=workflow.now().timestamp(),
                note=f"no decision within {waited:g} s" if waited > 0 else "no time was left for a decision before the run's deadline",
            )
            if request.approval_on_timeout == "fail_run" and self._failure is None:
                self._failure = f"tool {call.name} call {call.id} was not approved in time ({record.note})"
        self._decided[call.id] = record
        self._emit("approval_decided", tool=call.name, call_id=call.id, decision=record.decision, by=record.by, note=record.note)
        edited = self._edits.pop(call.id, None)
        if edited is not None:
            call = call.model_copy(update={"arguments": json.dumps(edited, separators=(",", ":"))})
        return call, record

    def _approvals_changed(self) -> None:
        """The UI's details, and AwaitingApproval where the namespace has it."""
        if self._approval_attribute:
            self._upsert([sa.AWAITING_APPROVAL.value_set(bool(self._approvals))])
        if self._snapshot is not None:
            self._set_details(self._snapshot)

    async def _execute_tool(
        self,
        request: RunRequest,
        snapshot: RunSnapshot,
        call: ToolCall,
        policy: ToolPolicy,
        deadline: float | None,
        started: object,
    ) -> tuple[ToolOutput, ToolCallRecord]:
        budget = None if deadline is None else deadline - workflow.now().timestamp()
        if budget is not None and budget <= 0:
            return self._out_of_time(request, call, started, "there was no time left before the run expires")
        own_budget = workflow.patched(TOOL_BUDGET)
        tool_budget = policy.time_budget_seconds() if own_budget else None
        limits = [b for b in (budget, tool_budget) if b is not None]
        limit = min(limits) if limits else None
        try:
            result: ToolCallOutput = await workflow.execute_activity(
                call.name,
                ToolCallInput(
                    run_id=snapshot.run_id,
                    thread_id=snapshot.thread_id,
                    call_id=call.id,
                    name=call.name,
                    arguments=json.loads(call.arguments),  # a JSON object (checked above): readable in the UI
                    output_cap_chars=request.output_cap_chars,
                ),
                result_type=ToolCallOutput,
                task_queue=policy.task_queue or workflow.info().task_queue,
                start_to_close_timeout=timedelta(seconds=policy.timeout_seconds),
                schedule_to_close_timeout=timedelta(seconds=limit) if limit is not None else None,
                # A queue nobody polls would hold the call forever (a run with no expiry has no other bound).
                schedule_to_start_timeout=timedelta(seconds=request.tool_queue_wait_seconds) if policy.task_queue else None,
                heartbeat_timeout=timedelta(seconds=policy.heartbeat_timeout_seconds or 30),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=policy.initial_retry_seconds),
                    backoff_coefficient=policy.backoff,
                    maximum_interval=timedelta(seconds=policy.max_retry_seconds),
                    maximum_attempts=0 if own_budget else policy.max_attempts,
                    non_retryable_error_types=list(policy.non_retryable_errors),
                ),
                summary=_summary(call, self._private),
                # A cancelled run closes once its tools' cancellation is recorded: no activity
                # is left pending on a closed workflow.
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
                if workflow.patched(TOOLS_WAIT_FOR_CANCEL)
                else workflow.ActivityCancellationType.TRY_CANCEL,
            )
        except ActivityError as exc:
            cause = exc.cause
            timed_out = isinstance(cause, TemporalTimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_CLOSE
            if timed_out and (tool_budget is None or (budget is not None and budget <= tool_budget)):
                return self._out_of_time(request, call, started, f"{call.name} did not finish before the run's deadline")
            if isinstance(cause, ApplicationError) and cause.type == INVALID_ARGUMENTS:
                return self._record(call, f"Error: {cause.message}", started, attempts=1, error=cause.message)
            message = _failure_message(exc)
            attempts = policy.max_attempts if not (isinstance(cause, ApplicationError) and cause.non_retryable) else 1
            if timed_out:  # the tool's own time budget ran out (lost attempts, slow attempts)
                message = f"{call.name} did not finish within its time budget of {tool_budget:g} s ({message})"
            if isinstance(cause, ApplicationError) and cause.type == TOOL_RETRIES_EXHAUSTED:
                found = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
                message = str(found.get("error") or cause.message)
                attempts = int(found.get("failures") or policy.max_attempts)
            if isinstance(cause, TemporalTimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START:
                message = f"no worker polled task queue {policy.task_queue!r} for {request.tool_queue_wait_seconds:g} s, so it never started"
                attempts = 0
            on_failure = request.tool_failure or policy.on_failure
            if on_failure == "fail_run" and self._failure is None:
                self._failure = f"tool {call.name} failed: {message}"
            return self._record(call, f"Error: tool {call.name} failed: {message}", started, attempts=attempts, error=message)
        return self._record(call, output_text(result.output), started, attempts=result.attempt, error=None)

    def _out_of_time(self, request: RunRequest, call: ToolCall, started: object, why: str) -> tuple[ToolOutput, ToolCallRecord]:
        output, record = self._record(call, f"Error: {why}.", started, attempts=0, error=why)
        if request.expiry_policy == "fail":
            self._records.append(record)  # the round ends here; keep this call in the log
            raise _RunOutOfTime(f"tool {call.name} would outlast the run: {why}")
        return output, record

    def _record(
        self, call: ToolCall, output: str, started: object, *, attempts: int, error: str | None, duration: float | None = None
    ) -> tuple[ToolOutput, ToolCallRecord]:
        record = ToolCallRecord(
            round=self._round,
            call_id=call.id,
            name=call.name,
            arguments=_cut(call.arguments, RECORD_ARGUMENTS_CHARS),
            output_preview=output[:PREVIEW_CHARS],
            attempts=attempts,
            duration_seconds=duration if duration is not None else (workflow.now() - started).total_seconds(),  # type: ignore[operator]
            error=error,
        )
        self._emit(
            "tool_finished", tool=call.name, call_id=call.id, attempt=attempts,
            duration_seconds=record.duration_seconds, output_preview=record.output_preview, error=error,
        )
        return ToolOutput(tool_call_id=call.id, output=output), record

    # ------------------------------------------------------------------ model API steps

    async def _submit(self, request: RunRequest, snapshot: RunSnapshot, outputs: list[ToolOutput]) -> RunSnapshot:
        since = workflow.now()
        try:
            handle = workflow.start_activity_method(
                ModelActivities.submit_tool_outputs,
                SubmitInput(
                    snapshot=snapshot,
                    outputs=outputs,
                    mode=request.mode,
                    key=self._key(),
                    # A Responses turn repeats the run's settings; the messages went with the first turn.
                    request=request.model_copy(update={"messages": [], "resume": None})
                    if snapshot.backend == "responses"
                    else None,
                    **self._version_asks(),
                    output_cap_chars=request.output_cap_chars,
                    approval=dict(request.approval),
                ),
                start_to_close_timeout=MODEL_API_START_TO_CLOSE,
                schedule_to_close_timeout=self._model_budget(),
                heartbeat_timeout=MODEL_API_HEARTBEAT,
                retry_policy=MODEL_API_RETRY,
                cancellation_type=self._model_cancellation(),
                summary=f"submit {len(outputs)} outputs, round {self._round}",
            )
            snapshot = await self._model_step(handle, lambda done: setattr(self, "_snapshot", done))
        except ActivityError as exc:
            self._raise_if_cancelled(exc)
            raise _as_application_error(exc, f"submitting round {self._round}", since) from None
        if snapshot.cancel_requested:
            self._snapshot = snapshot
            raise asyncio.CancelledError()
        return snapshot

    async def _stop(self, request: RunRequest, status: str) -> RunResult:
        """Cancel the API run (its tools are cancelled with the workflow) and say why."""
        if self._snapshot is None:
            # Stopped before the first turn was under way: no API run exists to stop.
            self._emit("status", status=status)
            workflow.set_current_details(f"**{status}** before the run started\n\nstopped: {self._failure}")
            return RunResult(status=status, run_id="", thread_id=request.context_id, backend=request.implied_backend() or "assistants",
                             rounds=self._round, failure=self._failure)
        snapshot = self._snapshot
        if snapshot.backend == "responses" and snapshot.status == "requires_action":
            # The response has ended, with calls nobody will answer. Nothing runs on the API
            # side, but a conversation refuses new responses until every call has an output.
            if snapshot.thread_id is not None and snapshot.tool_calls and workflow.patched(ANSWER_STOPPED_CALLS):
                snapshot = await self._cleanup(
                    CancelInput(
                        thread_id=snapshot.thread_id, run_id=snapshot.run_id, backend=snapshot.backend,
                        snapshot=snapshot, reason=self._failure,
                    ),
                    f"answer {len(snapshot.tool_calls)} stopped calls in {snapshot.thread_id}",
                    snapshot,
                )
            snapshot = snapshot.model_copy(update={"status": status})
            self._snapshot = snapshot
        elif not snapshot.terminal:
            # Also when the workflow itself is being cancelled: the API run must stop too.
            snapshot = await self._cleanup(
                # The snapshot's pending calls and the reason: a server that refuses to cancel a
                # run at requires_action gets them answered with this reason first.
                CancelInput(
                    thread_id=snapshot.thread_id, run_id=snapshot.run_id, backend=snapshot.backend,
                    snapshot=snapshot, reason=self._failure,
                ),
                f"cancel run {snapshot.run_id}",
                snapshot,
            )
            self._snapshot = snapshot
        self._observe(snapshot)
        result = self._result(snapshot)
        result.status = status  # type: ignore[assignment]
        return result

    async def _cleanup(self, input: CancelInput, summary: str, snapshot: RunSnapshot) -> RunSnapshot:
        """Run ``cancel_run`` to the end: a cancel that arrives meanwhile (the run was stopping
        for another reason) doesn't abandon it, and its failure is told, not raised."""
        handle = workflow.start_activity_method(
            ModelActivities.cancel_run,
            input,
            start_to_close_timeout=CANCEL_START_TO_CLOSE,
            schedule_to_close_timeout=min(CLEANUP_BUDGET, self._model_budget()),
            heartbeat_timeout=MODEL_API_HEARTBEAT,
            retry_policy=MODEL_API_RETRY,
            summary=summary,
        )
        if not self._cancels_handled():
            return await handle  # as before the patch
        while True:
            try:
                return await asyncio.shield(handle)
            except asyncio.CancelledError:
                continue  # the stop is under way already; see it through
            except ActivityError as exc:
                # Given up (a server that refuses to cancel, or never ends the run): the run
                # ends here all the same, saying what it left behind.
                left = f"the API {'response' if snapshot.backend == 'responses' else 'run'} {snapshot.run_id} was left in status {snapshot.status}"
                message = f"stopping it failed ({_failure_message(exc)}); {left}"
                self._failure = f"{self._failure}; {message}" if self._failure else message
                return snapshot

    def _result(self, snapshot: RunSnapshot) -> RunResult:
        self._trim_records()
        return RunResult(
            status=snapshot.status,
            run_id=snapshot.run_id,
            thread_id=snapshot.thread_id,
            backend=snapshot.backend,
            response_ids=list(self._response_ids),
            final_text=snapshot.final_text,
            message_ids=snapshot.message_ids,
            usage=snapshot.usage,
            rounds=self._round,
            tool_calls=self._records,
            tool_calls_total=self._records_dropped + len(self._records),
            last_error=snapshot.last_error,
            incomplete_details=snapshot.incomplete_details,
            failure=self._failure,
            cost=self._cost(),
        )


async def _all_calls(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """``asyncio.gather`` that ends only when every call has: if the round ends early (the
    workflow's cancel, or an error such as a tool outlasting the run), the calls still going are
    cancelled and waited for (tool activities wait for their cancellation to be recorded), then
    the error goes on. Plain gather returns at the first call that ends cancelled, which happens
    when a tool's result and the workflow's cancel land in one workflow task."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except (Exception, asyncio.CancelledError):
        going = [task for task in tasks if not task.done()]
        for task in going:
            task.cancel()  # a no-op for the calls the workflow's cancel already reached
        if going:
            await workflow.wait(going)
        raise


def _clock(timestamp: float) -> str:
    """A time of day in UTC, for the UI's details."""
    seconds = int(timestamp) % 86_400
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d} UTC"


def _callback_attempt(exc: ActivityError) -> CallbackAttempt:
    """A failed attempt as the activity described it, or as Temporal ended it (a timeout: the
    worker stopped during the attempt)."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        return CallbackAttempt.model_validate(cause.details[0])
    why = "timed out (the worker may have stopped)" if isinstance(cause, TemporalTimeoutError) else str(cause or exc)
    return CallbackAttempt(at=workflow.now().timestamp(), error=why)


def _api_reason(result: RunResult) -> str | None:
    """What the API said of a run that ended failed or expired (its last_error), briefly."""
    error = result.last_error or {}
    message = error.get("message") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if message or code:
        return f"the model API's run ended {result.status}" + (f" ({code})" if code else "") + (f": {message}" if message else "")
    return f"the model API's run ended {result.status}" if result.status == "expired" else None


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"…[cut: {len(text)} characters]"
    return text[: limit - len(marker)] + marker


def _newest_events(state: Any) -> Any:
    """The stream's state with only its newest ``PROGRESS_KEPT`` events: a follower from the
    start reads from there (offsets stay as they were)."""
    if state is None or len(state.log) <= PROGRESS_KEPT:
        return state
    dropped = len(state.log) - PROGRESS_KEPT
    return dataclasses.replace(state, log=state.log[dropped:], base_offset=state.base_offset + dropped)


def _describe_invalid(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "request"
        value = repr(error.get("input"))
        problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')} (got {value[:80]})")
    return "; ".join(problems)


class _RunOutOfTime(Exception):
    """A tool would outlast the run and the request's expiry policy says stop."""


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _summary(call: ToolCall, private: bool = False) -> str:
    """A tool call as the UI lists it: ``get_weather({"city": "Lisbon"})``; with payload
    encryption on, only its name and the size of its arguments (summaries are metadata that
    operators read without the codec)."""
    if private:
        return f"{call.name}({len(call.arguments.encode())} bytes of arguments)"
    arguments = call.arguments if len(call.arguments) <= SUMMARY_CHARS else call.arguments[: SUMMARY_CHARS - 1] + "…"
    return f"{call.name}({arguments})"


def _failure_message(exc: ActivityError) -> str:
    """The failure's own message; for a timeout, also the last attempt's failure (the API
    error a retried call kept meeting), which Temporal keeps as the timeout's cause."""
    cause = exc.cause
    while cause is not None and isinstance(cause, ActivityError):
        cause = cause.cause
    if cause is None or not hasattr(cause, "message"):
        return str(exc)
    last = getattr(cause, "cause", None)
    if isinstance(cause, TemporalTimeoutError) and last is not None and getattr(last, "message", None):
        return f"{cause.message}; last failure: {last.message}"
    return cause.message


def _as_application_error(exc: ActivityError, doing: str, since: Any = None) -> ApplicationError:
    cause = exc.cause
    # The step's budget ran out: while an attempt ran (a timeout), or before the next retry
    # (Temporal then fails the activity with the last attempt's error, retry state TIMEOUT).
    timed_out = isinstance(cause, TemporalTimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_CLOSE
    if (timed_out or exc.retry_state == RetryState.TIMEOUT) and since is not None:
        last = getattr(getattr(cause, "cause", None) if timed_out else cause, "message", None) or "no attempt finished"
        return ApplicationError(
            f"{doing}: model API unavailable since {since:%Y-%m-%d %H:%M:%S} UTC: {last}",
            type="ModelApiUnavailable",
            non_retryable=True,
        )
    if isinstance(cause, ApplicationError):
        return ApplicationError(f"{doing}: {cause.message}", *cause.details, type=cause.type, non_retryable=True)
    return ApplicationError(f"{doing}: {_failure_message(exc)}", non_retryable=True)


def _not_approved(approval: ApprovalRecord) -> str:
    """The output the model gets for a call that was not approved."""
    if approval.decision == "timed_out":
        return f"this call was not approved: {approval.note}."
    by = f" by {approval.by}" if approval.by else ""
    return f"this call was rejected{by}: {approval.note}"


def _schema_problems(schema: dict[str, Any] | None, arguments: dict[str, Any]) -> str | None:
    """Where ``arguments`` break the tool's JSON schema (at most three places), or None."""
    if not schema:
        return None
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(arguments), key=lambda e: list(e.path))
    if not errors:
        return None
    return "; ".join(f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors[:3])
