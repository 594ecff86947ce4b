"""``AssistantRun``: one workflow per assistant run.

The loop (see DESIGN.md), ``AssistantRunWorkflow._run``: start the run and wait until it is
actionable (one activity); on ``requires_action`` run every tool call of the round as its own
activity, all at once; submit all outputs and wait again (one activity); until the run ends.
Problems the model made (an unknown tool, arguments that are not a JSON object) never reach
an activity: the model gets an error output it can act on.

This module holds the loop, the model-API steps, and what callers call (the queries and the
approval update). The workflow class inherits the rest, one concern to a module:

    run_tools.py     one round of tool calls (approval, deadlines, budgets, inline results)
    run_stop.py      how a run stops: cancellation, cleanup of the API run, failed steps
    run_view.py      what operators and followers see: progress, details, search attributes, cost
    run_callback.py  the completion callback
    run_state.py     what a run keeps (declared for all of them)
    run_settings.py  timeouts, retries, limits and the patch IDs

Why one module of about 460 lines: the loop, the three model-API steps it awaits and the
handlers a caller reaches (queries, the approval update) read together; every other concern
is a module of its own (above).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
)

with workflow.unsafe.imports_passed_through():
    import pydantic

    from durable_assistants.tools import ToolPolicy
    from durable_assistants.workflows import metrics
    from durable_assistants.workflows import search_attributes as sa
    from durable_assistants.workflows.activity_models import (
        CREATE_THREAD,
        START_RUN,
        SUBMIT_TOOL_OUTPUTS,
        CreateThreadInput,
        StartInput,
        StartResult,
        SubmitInput,
        ToolOutput,
    )
    from durable_assistants.workflows.models import (
        PROGRESS_TOPIC,
        RUN_EXPIRED,
        RUN_FAILED,
        RUN_WORKFLOW_NAME,
        ApprovalRecord,
        CallbackDelivery,
        LiveSnapshot,
        ModelTokens,
        PendingApproval,
        PendingToolCall,
        ProgressEvent,
        RunProgress,
        RunRequest,
        RunResult,
        RunSnapshot,
        ToolCall,
        ToolCallDecision,
        ToolCallRecord,
        TurnTokens,
    )

from durable_assistants.workflows.run_callback import RunCallback
from durable_assistants.workflows.run_settings import (
    INLINE_TOOLS,
    MODEL_API_HEARTBEAT,
    MODEL_API_RETRY,
    MODEL_API_START_TO_CLOSE,
    OUTCOME_IS_WORKFLOW_STATUS,
    RELEASE_FOLLOWERS_ON_FAILURE,
    RUNNING_TOOLS_STATUS,
    TURNS_KEPT,
)
from durable_assistants.workflows.run_stop import _as_application_error
from durable_assistants.workflows.run_tools import RunTools, _RunOutOfTime, _schema_problems
from durable_assistants.workflows.run_view import _newest_events


@workflow.defn(name=RUN_WORKFLOW_NAME)
class AssistantRunWorkflow(RunTools, RunCallback):
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
                thread_id = await workflow.execute_activity(
                    CREATE_THREAD,
                    CreateThreadInput(request=request, key=key),
                    result_type=str,
                    start_to_close_timeout=timedelta(minutes=2),
                    schedule_to_close_timeout=self._model_budget(),
                    heartbeat_timeout=MODEL_API_HEARTBEAT,  # a killed worker is noticed in 30 s, not 2 min
                    retry_policy=MODEL_API_RETRY,
                    summary="create thread",
                )
            handle = workflow.start_activity(
                START_RUN,
                StartInput(
                    request=request, thread_id=thread_id, key=key, add_messages=request.thread_id is not None,
                    **self._version_asks(), approval=dict(request.approval),
                ),
                result_type=StartResult,
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

    async def _submit(self, request: RunRequest, snapshot: RunSnapshot, outputs: list[ToolOutput]) -> RunSnapshot:
        since = workflow.now()
        try:
            handle = workflow.start_activity(
                SUBMIT_TOOL_OUTPUTS,
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
                result_type=RunSnapshot,
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


def _api_reason(result: RunResult) -> str | None:
    """What the API said of a run that ended failed or expired (its last_error), briefly."""
    error = result.last_error or {}
    message = error.get("message") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if message or code:
        return f"the model API's run ended {result.status}" + (f" ({code})" if code else "") + (f": {message}" if message else "")
    return f"the model API's run ended {result.status}" if result.status == "expired" else None


def _describe_invalid(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "request"
        value = repr(error.get("input"))
        problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')} (got {value[:80]})")
    return "; ".join(problems)


