"""Model-API activities: create the thread, start the run, submit a round's outputs, cancel.

Each waits inside the activity (polling or streaming, heartbeating as it goes) and returns a
compact ``RunSnapshot``, so a run costs one activity per step of the loop, not one per poll.

Every one of them also heartbeats from a background task for its whole body (as
``temporalio.contrib.openai_agents`` does around its model calls): a create, list or stream
read that is slow to answer must not time the attempt out while it still runs, or the retry
starts beside it. The background beat repeats the latest details (``TurnIO.keep_alive``), so
what a retry must adopt is never dropped, and it is how a cancel reaches a call that is
waiting for the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_assistants.activities import tracing
from durable_assistants.activities.backend import ModelBackend, OnText, TurnIO
from durable_assistants.activities.progress import ProgressPublisher
from durable_assistants.activities.tools import run_inline
from durable_assistants.client import namespace_search_attributes
from durable_assistants.tools import ToolRegistry
from durable_assistants.workflows.activity_models import (
    CANCEL_RUN,
    CREATE_THREAD,
    START_RUN,
    SUBMIT_TOOL_OUTPUTS,
    CancelInput,
    CreateThreadInput,
    StartInput,
    StartResult,
    SubmitInput,
)
from durable_assistants.workflows.models import ApprovalAsk, RunRequest, RunSnapshot
from durable_assistants.workflows.search_attributes import APPROVAL_ATTRIBUTE, RUN_ATTRIBUTES

log = structlog.get_logger("model_api")

# The background heartbeat beats when nothing else has for this fraction of the activity's
# heartbeat timeout (7.5 s of the model activities' 30 s): a few beats may be late or lost
# before Temporal gives up on the attempt.
HEARTBEAT_FRACTION = 0.25
# An activity scheduled without a heartbeat timeout still beats, so that a cancel reaches it.
HEARTBEAT_SECONDS_WITHOUT_TIMEOUT = 10.0


def heartbeat_interval(heartbeat_timeout: timedelta | None) -> float:
    """How long the background heartbeat lets an attempt go without a heartbeat."""
    if heartbeat_timeout is None or heartbeat_timeout <= timedelta(0):
        return HEARTBEAT_SECONDS_WITHOUT_TIMEOUT
    return heartbeat_timeout.total_seconds() * HEARTBEAT_FRACTION


def _heartbeat(details: dict[str, Any]) -> None:
    activity.heartbeat(details)


def _io(key: str | None = None) -> TurnIO:
    """Heartbeats, and what the previous attempt of this activity recorded."""
    details = activity.info().heartbeat_details
    recalled = details[0] if details and isinstance(details[0], dict) else {}
    return TurnIO(
        key=key or activity.info().workflow_id or "",
        attempt=activity.info().attempt,
        heartbeat=_heartbeat,
        recalled=dict(recalled),
    )


def _text_to(progress: ProgressPublisher) -> OnText:
    """``TurnIO.on_text``: a turn's text deltas go to the run's progress stream."""
    return lambda delta, run_id=None, sequence=None: progress.publish("text", text=delta, run_id=run_id, sequence=sequence)


def _text_publisher(io: TurnIO) -> ProgressPublisher:
    """The publisher of a model turn's text: paced (a bounded number of signals per turn), and
    what reached the workflow is recorded (``sequence_number``): a retry resumes a response's
    stream after it, so a delta received but not yet delivered when the worker died is streamed
    again, not lost; one delivered twice is dropped by followers (``is_repeat``)."""
    return ProgressPublisher(paced=True, on_delivered=lambda run_id, sequence: io.remember_for_retry(sequence_number=sequence))


@contextlib.asynccontextmanager
async def _kept_alive(io: TurnIO) -> AsyncIterator[TurnIO]:
    """Heartbeat ``io``'s latest details in the background while the body runs, whenever
    nothing else has heartbeated for ``heartbeat_interval``. It beats only after a quiet
    interval, never at the start: a response ID recorded right after a quick create is then
    the attempt's first heartbeat, which the SDK sends at once instead of holding it back for
    the throttle interval."""
    interval = heartbeat_interval(activity.info().heartbeat_timeout)
    beating = asyncio.create_task(_keep_alive(io, interval), name="model-activity-heartbeat")
    try:
        yield io
    finally:
        beating.cancel()
        # Not `await beating`: that would swallow a cancel of this activity arriving meanwhile.
        await asyncio.wait({beating})


async def _keep_alive(io: TurnIO, interval: float) -> None:
    while True:
        quiet = time.monotonic() - io.last_beat
        if quiet < interval:
            await asyncio.sleep(interval - quiet)
            continue
        try:
            io.keep_alive()
        except Exception as exc:  # noqa: BLE001  (a heartbeat that fails must not stop the next)
            log.warning("background heartbeat failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(interval)


async def _cancellable(backend: ModelBackend, io: TurnIO, turn: Awaitable[RunSnapshot]) -> RunSnapshot:
    """Run one turn; if the workflow is cancelled meanwhile, stop the API run it has under way.

    The workflow waits for this (``WAIT_CANCELLATION_COMPLETED``) and gets the stopped run's
    snapshot, marked ``cancel_requested``. A cancel for any other reason (a heartbeat timeout,
    the worker shutting down) leaves the API run alone: the retry adopts it. With nothing under
    way yet there is nothing to stop, and the activity ends cancelled."""
    try:
        return await turn
    except asyncio.CancelledError:
        details = activity.cancellation_details()
        if io.in_flight is None or details is None or not details.cancel_requested:
            raise
        in_flight = io.in_flight.model_copy(update={"status": "cancelling", "cancel_requested": True})
        log.info("the workflow was cancelled; cancelling the API run", run_id=in_flight.run_id)
        try:
            stopped = await backend.cancel(in_flight, io)
        except Exception as exc:  # noqa: BLE001  (the workflow's own cancel_run retries it)
            log.warning("cancelling the API run failed; the workflow will retry", run_id=in_flight.run_id, error=f"{type(exc).__name__}: {exc}")
            return in_flight
        return stopped.model_copy(update={"cancel_requested": True})


def _bind(**ids: str | None) -> None:
    info = activity.info()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(workflow_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt, **ids)
    tracing.annotate({f"durable_assistants.{key}": value for key, value in ids.items()})


def _ended(snapshot: RunSnapshot) -> RunSnapshot:
    tracing.annotate({"durable_assistants.run_id": snapshot.run_id, "durable_assistants.thread_id": snapshot.thread_id,
                      "durable_assistants.status": snapshot.status})
    log.info("run is waiting for tools" if snapshot.status == "requires_action" else "run ended",
             run_id=snapshot.run_id, status=snapshot.status, tool_calls=len(snapshot.tool_calls))
    return snapshot


class ModelActivities:
    """The model APIs, each behind its backend. Built once by the worker, with its dependencies.

    A request names its API (``backend``, or fields only one API has); the others go to the
    worker's ``default_backend``. Snapshots carry their backend, so later steps use the same one.
    """

    def __init__(
        self, backends: ModelBackend | list[ModelBackend], tools: ToolRegistry, default_backend: str | None = None, private: bool = False
    ) -> None:
        self.private = private
        listed = backends if isinstance(backends, list) else [backends]
        self.backends: dict[str, ModelBackend] = {b.name: b for b in listed}
        self.default_backend = default_backend or listed[0].name
        if self.default_backend not in self.backends:
            raise ValueError(f"default backend {self.default_backend!r} is not one of {', '.join(self.backends)}")
        self.tools = tools
        self._namespaces_with_attributes: dict[str, tuple[bool, bool]] = {}

    def backend_for(self, request: RunRequest) -> ModelBackend:
        """The request's backend; a request that cannot run on it fails at once, saying why."""
        name = request.implied_backend() or self.default_backend
        try:
            request.check_backend(name)
        except ValueError as exc:
            raise ApplicationError(f"invalid run request: {exc}", type="InvalidRunRequest", non_retryable=True) from None
        backend = self.backends.get(name)
        if backend is None:
            raise ApplicationError(
                f"this worker has no {name} backend (it has {', '.join(self.backends)})", type="InvalidRunRequest", non_retryable=True
            )
        return backend

    def _backend(self, name: str) -> ModelBackend:
        backend = self.backends.get(name)
        if backend is None:
            raise ApplicationError(f"this worker has no {name} backend", type="InvalidRunRequest", non_retryable=True)
        return backend

    async def _search_attributes(self) -> tuple[bool, bool]:
        """Whether the namespace has the run's attributes, and AwaitingApproval; checked once
        per namespace: upserting attributes a namespace lacks would fail the workflow."""
        namespace = activity.info().namespace
        if namespace not in self._namespaces_with_attributes:
            present = await namespace_search_attributes(activity.client())
            if present is None:  # e.g. no permission to list them: run without
                log.warning("cannot list search attributes; runs won't be searchable by them")
            missing = sorted((set(RUN_ATTRIBUTES) | {APPROVAL_ATTRIBUTE}) - (present or frozenset()))
            if present is not None and missing:
                log.warning("search attributes missing; runs won't be searchable by them", missing=missing)
            self._namespaces_with_attributes[namespace] = (
                present is not None and not set(RUN_ATTRIBUTES) & set(missing),
                present is not None and APPROVAL_ATTRIBUTE not in missing,
            )
        return self._namespaces_with_attributes[namespace]

    @activity.defn(name=CREATE_THREAD)
    async def create_thread(self, input: CreateThreadInput) -> str:
        _bind(assistant_id=input.request.assistant_id)
        backend = self.backend_for(input.request)
        async with _kept_alive(_io()):
            # Check the request first: a bad one must fail before anything is created.
            await backend.check_request(input.request)
            thread_id = await backend.create_conversation(input.request, input.key)
        log.info("thread created", thread_id=thread_id)
        return thread_id

    def _flag_approvals(self, snapshot: RunSnapshot, overrides: dict[str, str] | None) -> RunSnapshot:
        """The round's calls that must wait for a person's decision: the request's override
        for the tool (or for '*'), else the tool's own policy, asked with the parsed arguments."""
        if overrides is None or snapshot.status != "requires_action":
            return snapshot
        asks = []
        for call in snapshot.tool_calls:
            tool = self.tools.get(call.name)
            if tool is None:
                continue  # the workflow answers an unknown tool with an error output
            override = overrides.get(call.name, overrides.get("*"))
            if override == "never":
                continue
            try:
                arguments = json.loads(call.arguments)
            except ValueError:
                continue  # not JSON: the workflow answers with an error output
            if not isinstance(arguments, dict):
                continue
            reason = (
                f"this run's request asks approval for {call.name}" if override == "always" else tool.needs_approval(arguments)
            )
            if reason is not None:
                parameters = tool.schema()["function"].get("parameters")
                asks.append(ApprovalAsk(call_id=call.id, reason=reason, parameters=parameters))
        if not asks:
            return snapshot
        log.info("calls wait for approval", calls=[a.call_id for a in asks])
        return snapshot.model_copy(update={"approvals": asks})

    async def _run_inline(self, snapshot: RunSnapshot, cap: int) -> RunSnapshot:
        """A round's calls of inline tools, run here (in parallel), their outputs handed back
        with the snapshot: the workflow runs the others as activities and submits them all.
        A call that waits for approval is not run here: the workflow runs it once decided."""
        if snapshot.status != "requires_action":
            return snapshot
        waiting = {a.call_id for a in snapshot.approvals}
        runs = []
        for call in snapshot.tool_calls:
            tool = self.tools.get(call.name)
            if tool is not None and tool.policy.inline and call.id not in waiting:
                runs.append(run_inline(tool, call.id, call.arguments, snapshot.run_id, snapshot.thread_id, cap, activity.info().attempt))
        if not runs:
            return snapshot
        results = await asyncio.gather(*runs)
        log.info("inline tools ran", calls=len(results), of=len(snapshot.tool_calls))
        return snapshot.model_copy(update={"inline_results": list(results)})

    async def _finish_turn(
        self, snapshot: RunSnapshot, input: StartInput | SubmitInput, cap: int, progress: ProgressPublisher
    ) -> RunSnapshot:
        """What a model step adds to the turn it saw, as far as its workflow asked: the calls
        that wait for approval, the inline tools' outputs, the turn's last text."""
        snapshot = self._flag_approvals(snapshot, input.approval)
        if input.inline_tools:
            snapshot = await self._run_inline(snapshot, cap)
        if input.text_tail:
            snapshot = snapshot.model_copy(update={"text_tail": progress.take_tail()})
        return snapshot

    @activity.defn(name=START_RUN)
    async def start_run(self, input: StartInput) -> StartResult:
        request = input.request
        _bind(assistant_id=request.assistant_id, thread_id=input.thread_id or request.conversation_id)
        backend = self.backend_for(request)
        async with _kept_alive(_io()) as io, _text_publisher(io) as progress:
            io.on_text = _text_to(progress)
            if input.add_messages or backend.name != "assistants":
                await backend.check_request(request)
            snapshot = await _cancellable(backend, io, backend.start(request, input.thread_id, input.key, input.add_messages, io))
            snapshot = await self._finish_turn(snapshot, input, request.output_cap_chars, progress)
            search_attributes, approval_attribute = await self._search_attributes()
        return StartResult(
            snapshot=_ended(snapshot), tools=self.tools.policies(), search_attributes=search_attributes, private=self.private,
            approval_attribute=approval_attribute,
        )

    @activity.defn(name=SUBMIT_TOOL_OUTPUTS)
    async def submit_tool_outputs(self, input: SubmitInput) -> RunSnapshot:
        _bind(thread_id=input.snapshot.thread_id, run_id=input.snapshot.run_id)
        backend = self._backend(input.snapshot.backend)
        if not input.outputs:
            async with _kept_alive(_io()) as io:
                io.under_way(input.snapshot)
                return _ended(self._flag_approvals(await _cancellable(backend, io, backend.wait(input.snapshot, io)), input.approval))
        outputs = [o.model_dump() for o in input.outputs]
        async with _kept_alive(_io(input.key)) as io, _text_publisher(io) as progress:
            io.on_text = _text_to(progress)
            snapshot = await _cancellable(backend, io, backend.submit_and_wait(input.request, input.snapshot, outputs, input.mode, io))
            snapshot = await self._finish_turn(snapshot, input, input.output_cap_chars, progress)
        return _ended(snapshot)

    @activity.defn(name=CANCEL_RUN)
    async def cancel_run(self, input: CancelInput) -> RunSnapshot:
        _bind(thread_id=input.thread_id, run_id=input.run_id)
        snapshot = input.snapshot or RunSnapshot(
            run_id=input.run_id, thread_id=input.thread_id, backend=input.backend, status="cancelling"
        )
        async with _kept_alive(_io()) as io:
            return _ended(await self._backend(input.backend).cancel(snapshot, io, input.reason))
