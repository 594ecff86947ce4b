"""How a run stops: the workflow's cancel reaches the model activity under way and is seen
through, the API run is cancelled (or its stopped calls answered), and a failed model step
becomes the run's failure.

Part of ``AssistantRun`` (``workflows/run.py``), which inherits it; deterministic workflow code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import workflow
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

    from durable_assistants.workflows.activity_models import CANCEL_RUN, CancelInput
    from durable_assistants.workflows.models import (
        RunRequest,
        RunResult,
        RunSnapshot,
    )

from durable_assistants.workflows.run_settings import (
    ANSWER_STOPPED_CALLS,
    CANCEL_CHECKED_EACH_ROUND,
    CANCEL_START_TO_CLOSE,
    CLEANUP_BUDGET,
    MODEL_API_HEARTBEAT,
    MODEL_API_RETRY,
    WAIT_FOR_MODEL_CANCEL,
    T,
)
from durable_assistants.workflows.run_view import RunView


class RunStop(RunView):
    def _model_cancellation(self) -> workflow.ActivityCancellationType:
        """Model activities: a cancelled workflow waits while the activity stops what it has
        under way. Histories from before this (patch absent) abandoned the activity at once."""
        if self._waits_for_model_cancel():
            return workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        return workflow.ActivityCancellationType.TRY_CANCEL

    async def _model_step(self, handle: asyncio.Task[T], keep: Callable[[T], object]) -> T:
        """Await a model activity, shielded from the workflow's cancel so that its outcome is
        always seen through the handle's public API: a result that landed in the same workflow
        task as the cancel still counts, and otherwise the activity is asked to stop what it has
        under way and hands back its final state. Either way ``keep`` stores it, then the cancel
        goes on, so that stopping starts from what really happened."""
        if not self._waits_for_model_cancel():
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
    def _waits_for_model_cancel() -> bool:
        return workflow.patched(WAIT_FOR_MODEL_CANCEL)

    def _raise_if_cancelled(self, exc: ActivityError) -> None:
        """A model activity that ended because the workflow is being cancelled (cancelled, or
        failed or timed out once the cancel was requested, which Temporal does not retry)."""
        if not self._waits_for_model_cancel():
            return  # as before the patch: the failure fails the workflow
        if isinstance(exc.cause, TemporalCancelledError) or exc.retry_state == RetryState.CANCEL_REQUESTED:
            self._note_in_flight(exc)
            raise asyncio.CancelledError() from None

    def _note_in_flight(self, exc: ActivityError) -> None:
        """An activity that timed out (its worker gone) cannot stop what it had under way; its
        last heartbeat names it (``TurnIO.under_way``), so that ``_stop`` can."""
        details = getattr(exc.cause, "last_heartbeat_details", None) or ()
        in_flight = details[0].get("in_flight") if details and isinstance(details[0], dict) else None
        if isinstance(in_flight, dict):
            self._snapshot = RunSnapshot.model_validate({**in_flight, "status": "cancelling"})

    async def _stop(self, request: RunRequest, status: str) -> RunResult:
        """Cancel the API run (its tools are cancelled with the workflow) and say why."""
        if self._snapshot is None:
            # Stopped before the first turn was under way: no API run exists to stop.
            self._emit("status", status=status)
            workflow.set_current_details(f"**{status}** before the run started\n\nstopped: {self._failure}")
            return RunResult(status=status, run_id=None, thread_id=request.context_id, backend=request.implied_backend() or "assistants",
                             rounds=self._round, failure=self._failure)
        snapshot = self._snapshot
        if snapshot.backend == "responses" and snapshot.status == "requires_action":
            # The response has ended, with calls nobody will answer. Nothing runs on the API
            # side, but a conversation refuses new responses until every call has an output.
            if snapshot.thread_id is not None and snapshot.tool_calls and workflow.patched(ANSWER_STOPPED_CALLS):
                snapshot = await self._cleanup(snapshot, f"answer {len(snapshot.tool_calls)} stopped calls in {snapshot.thread_id}")
            snapshot = snapshot.model_copy(update={"status": status})
            self._snapshot = snapshot
        elif not snapshot.terminal:
            # Also when the workflow itself is being cancelled: the API run must stop too.
            snapshot = await self._cleanup(snapshot, f"cancel run {snapshot.run_id}")
            self._snapshot = snapshot
        self._observe(snapshot)
        result = self._result(snapshot)
        result.status = status  # type: ignore[assignment]
        return result

    async def _cleanup(self, snapshot: RunSnapshot, summary: str) -> RunSnapshot:
        """Run ``cancel_run`` on ``snapshot`` to the end: a cancel that arrives meanwhile (the run
        was stopping for another reason) doesn't abandon it, and its failure is told, not raised.
        It gets the snapshot's pending calls and the reason: a server that refuses to cancel a run
        at requires_action gets them answered with this reason first."""
        handle = workflow.start_activity(
            CANCEL_RUN,
            CancelInput(
                thread_id=snapshot.thread_id, run_id=snapshot.run_id, backend=snapshot.backend, snapshot=snapshot, reason=self._failure,
            ),
            result_type=RunSnapshot,
            start_to_close_timeout=CANCEL_START_TO_CLOSE,
            schedule_to_close_timeout=min(CLEANUP_BUDGET, self._model_budget()),
            heartbeat_timeout=MODEL_API_HEARTBEAT,
            retry_policy=MODEL_API_RETRY,
            summary=summary,
        )
        if not self._waits_for_model_cancel():
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
