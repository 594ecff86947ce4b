"""One round of tool calls: each call checked, waiting for approval if its tool asks for it,
then run as its own activity (or taken from the model activity, for an inline tool), all at
once, with the run's deadline and the tool's own budget; the round ends when every call has.

Part of ``AssistantRun`` (``workflows/run.py``), which inherits it; deterministic workflow code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutType,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)

with workflow.unsafe.imports_passed_through():
    import jsonschema

    from durable_assistants.tools import ToolPolicy
    from durable_assistants.workflows.activity_models import INVALID_ARGUMENTS, TOOL_RETRIES_EXHAUSTED, ToolCallInput, ToolCallOutput, ToolOutput, output_text
    from durable_assistants.workflows.models import (
        ApprovalAsk,
        ApprovalRecord,
        PendingApproval,
        RunRequest,
        RunSnapshot,
        ToolCall,
        ToolCallRecord,
    )

from durable_assistants.workflows.run_settings import (
    DEFAULT_APPROVAL_SECONDS,
    PREVIEW_CHARS,
    ROUND_STOPS_TOGETHER,
    TOOL_BUDGET,
    TOOLS_WAIT_FOR_CANCEL,
    T,
)
from durable_assistants.workflows.run_stop import RunStop, _failure_message
from durable_assistants.workflows.run_view import _summary


class RunTools(RunStop):
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
                retry_policy=tool_retry_policy(policy, own_budget=own_budget),
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


def tool_retry_policy(policy: ToolPolicy, *, own_budget: bool) -> RetryPolicy:
    """How Temporal retries a tool's activity. With the tool's own time budget (``TOOL_BUDGET``,
    the activity's schedule-to-close) it retries without a limit of attempts within that
    budget; before that patch, ``max_attempts`` was the bound."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=policy.initial_retry_seconds),
        backoff_coefficient=policy.backoff,
        maximum_interval=timedelta(seconds=policy.max_retry_seconds),
        maximum_attempts=0 if own_budget else policy.max_attempts,
        non_retryable_error_types=list(policy.non_retryable_errors),
    )


class _RunOutOfTime(Exception):
    """A tool would outlast the run and the request's expiry policy says stop."""


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


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
