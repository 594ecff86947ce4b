"""The completion callback: the run's outcome POSTed to the request's URL, an activity an
attempt, with backoff, until a 2xx or its time is spent.

Part of ``AssistantRun`` (``workflows/run.py``), which inherits it; deterministic workflow code."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)

with workflow.unsafe.imports_passed_through():

    from durable_assistants.workflows.activity_models import DELIVER_CALLBACK, CallbackInput
    from durable_assistants.workflows.models import (
        CallbackAttempt,
        CallbackDelivery,
        CallbackEvent,
        RunResult,
    )

from durable_assistants.workflows.run_settings import (
    CALLBACK_ATTEMPT_TIMEOUT,
    CALLBACK_ATTEMPTS_KEPT,
    CALLBACK_FIRST_PAUSE,
    CALLBACK_MAX_PAUSE,
)
from durable_assistants.workflows.run_state import RunState


class RunCallback(RunState):
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
                    DELIVER_CALLBACK,
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


def _callback_attempt(exc: ActivityError) -> CallbackAttempt:
    """A failed attempt as the activity described it, or as Temporal ended it (a timeout: the
    worker stopped during the attempt)."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        return CallbackAttempt.model_validate(cause.details[0])
    why = "timed out (the worker may have stopped)" if isinstance(cause, TemporalTimeoutError) else str(cause or exc)
    return CallbackAttempt(at=workflow.now().timestamp(), error=why)
