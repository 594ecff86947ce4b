"""Model activities under slow and lost answers (issue 13): a slow call keeps its attempt, a
retry keeps what the attempt before it recorded, a retry that waited for a conversation does
not send its input again, and every wait on a response is bounded.

The activity tests run the real model activities on a real Temporal dev server against the
emulator over HTTP, scheduled by a small workflow of this module with a short heartbeat
timeout (``HEARTBEAT``), so that a call slower than the heartbeat timeout takes seconds, not
the run workflow's 30. One of them SIGKILLs a real worker process (``worker.py``) serving them.
The backend tests drive ``ResponsesBackend`` directly, as ``test_responses_backend.py`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import durable_assistants.activities.responses as responses_module
import durable_assistants.tools.examples  # noqa: F401
import tests.worker_tools  # noqa: F401  (registers the test tools)
from durable_assistants import worker
from durable_assistants.activities.assistants import AssistantsBackend
from durable_assistants.activities.backend import TurnIO
from durable_assistants.activities.model_api import ModelActivities, heartbeat_interval
from durable_assistants.activities.responses import ResponsesBackend
from durable_assistants.client import RunHandle
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.processes import stop_process
from durable_assistants.tools import registry
from durable_assistants.workflows.activity_models import CancelInput, CreateThreadInput, StartInput, SubmitInput, ToolOutput
from durable_assistants.workflows.models import MessageInput, RunRequest, RunSnapshot
from tests.conftest import script
from tests.test_responses_backend import backend, earlier_create, request, retry  # noqa: F401  (backend: a fixture)
from tests.test_worker_lifecycle import spawn_worker

MODEL = "gpt-4o"
# The test workflow's heartbeat timeout, and how long a slow call takes: well over it.
HEARTBEAT = timedelta(seconds=3)
SLOW_CALL_SECONDS = 8.0
# Generous "does not hang" bound for one test workflow.
DOES_NOT_HANG = 120.0

Step = Literal["create_thread", "start_run", "submit_tool_outputs", "cancel_run"]


class Steps(BaseModel):
    request: RunRequest
    steps: list[Step]
    activity_task_queue: str | None = None


class StepsResult(BaseModel):
    thread_id: str | None = None
    snapshot: RunSnapshot | None = None


@workflow.defn(name="test-model-activity-steps")
class ModelStepsWorkflow:
    """Runs the model activities one after the other, as the run workflow would, but with a
    short heartbeat timeout and on a task queue of the test's choosing. It holds a progress
    stream, as the run workflow does, for the text a streamed turn publishes."""

    def __init__(self) -> None:
        self._stream = WorkflowStream()

    @workflow.run
    async def run(self, input: Steps) -> StepsResult:
        try:
            return await self._steps(input)
        finally:
            self._stream.detach_pollers()

    async def _steps(self, input: Steps) -> StepsResult:
        info = workflow.info()
        key = f"{info.workflow_id}/{info.first_execution_run_id}"
        options: dict[str, Any] = {
            "task_queue": input.activity_task_queue,
            "start_to_close_timeout": timedelta(minutes=2),
            "heartbeat_timeout": HEARTBEAT,
            "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0, maximum_attempts=5),
            # As the run workflow: a cancelled workflow waits for the activity to stop.
            "cancellation_type": workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        }
        request = input.request
        result = StepsResult()
        for step in input.steps:
            if step == "create_thread":
                result.thread_id = await workflow.execute_activity_method(
                    ModelActivities.create_thread, CreateThreadInput(request=request, key=key), **options
                )
            elif step == "start_run":
                start = await workflow.execute_activity_method(
                    ModelActivities.start_run,
                    StartInput(request=request, thread_id=result.thread_id, key=key, add_messages=False),
                    **options,
                )
                result.snapshot = start.snapshot
            elif step == "submit_tool_outputs":
                assert result.snapshot is not None
                outputs = [ToolOutput(tool_call_id=c.id, output=f"output of {c.name}") for c in result.snapshot.tool_calls]
                result.snapshot = await workflow.execute_activity_method(
                    ModelActivities.submit_tool_outputs,
                    SubmitInput(
                        snapshot=result.snapshot,
                        outputs=outputs,
                        key=key,
                        request=request.model_copy(update={"messages": []}) if result.snapshot.backend == "responses" else None,
                    ),
                    **options,
                )
            else:
                assert result.snapshot is not None
                snapshot = result.snapshot
                result.snapshot = await workflow.execute_activity_method(
                    ModelActivities.cancel_run,
                    CancelInput(thread_id=snapshot.thread_id, run_id=snapshot.run_id, backend=snapshot.backend, snapshot=snapshot),
                    **options,
                )
        return result


def model_worker(client: Client, model: AsyncOpenAI, task_queue: str, *, activities: bool = True) -> Worker:
    """The test workflow, and (unless a worker process serves them) the model activities as
    ``worker.build_workers`` registers them, with the same heartbeat throttle."""
    served: list[Any] = []
    if activities:
        model_activities = ModelActivities([AssistantsBackend(model, registry), ResponsesBackend(model, registry)], registry)
        served = [model_activities.create_thread, model_activities.start_run, model_activities.submit_tool_outputs, model_activities.cancel_run]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ModelStepsWorkflow],
        activities=served,
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_heartbeat_throttle_interval=worker.HEARTBEAT_THROTTLE,
    )


@pytest.fixture
async def model(emulator: Any) -> AsyncIterator[AsyncOpenAI]:
    # A client timeout well above the slow call: the call is slow, not broken.
    client = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=60)
    yield client
    await client.close()


async def run_steps(client: Client, task_queue: str, steps: Steps) -> tuple[StepsResult, WorkflowHandle[Any, StepsResult]]:
    handle = await client.start_workflow(
        ModelStepsWorkflow.run, steps, id=f"steps-{uuid.uuid4()}", task_queue=task_queue, result_type=StepsResult
    )
    return await asyncio.wait_for(handle.result(), DOES_NOT_HANG), handle


async def attempts(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, int]]:
    """Each model activity of the workflow and the attempt that finished it (1: never retried)."""
    events = (await handle.fetch_history()).events
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return [
        (scheduled[e.activity_task_started_event_attributes.scheduled_event_id], e.activity_task_started_event_attributes.attempt)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


ACTIVITY_ENDINGS = frozenset({
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
})


def responses_created(stats: dict[str, Any]) -> list[str]:
    return [rid for rid, counts in stats["runs"].items() if counts.get("responses_created")]


def slow(admin: httpx.Client, operation: str, nth: int = 1) -> None:
    """The ``nth`` ``operation`` takes effect at once, and its answer comes ``SLOW_CALL_SECONDS`` later."""
    rule = {"operation": operation, "nth": nth, "action": "delay", "when": "after", "delay_seconds": SLOW_CALL_SECONDS}
    admin.post("/faults", json=rule).raise_for_status()


def chain_request(text: str) -> RunRequest:
    return RunRequest(backend="responses", model=MODEL, responses_state="chain", messages=[MessageInput(content=text)])


ONE_ROUND = [[{"name": "structured", "arguments": {"n": 2}}]]


# ---------------------------------------------------------------------------- slow calls


async def test_a_create_slower_than_the_heartbeat_timeout_keeps_its_attempt_and_makes_one_response(
    temporal_client: Client, task_queue: str, model: AsyncOpenAI, admin: httpx.Client
) -> None:
    """Before: nothing heartbeated while ``responses.create`` was on its way, the attempt timed
    out, and its retry (with no response ID to adopt) made a second response on the chain."""
    slow(admin, "responses.create")
    async with model_worker(temporal_client, model, task_queue):
        result, handle = await run_steps(temporal_client, task_queue, Steps(request=chain_request(script(reply="once")), steps=["start_run"]))

    assert result.snapshot is not None and result.snapshot.status == "completed" and result.snapshot.final_text == "once"
    assert await attempts(handle) == [("start_run", 1)]
    assert responses_created(admin.get("/stats").json()) == [result.snapshot.run_id]


async def test_a_submit_slower_than_the_heartbeat_timeout_keeps_its_attempt(
    temporal_client: Client, task_queue: str, model: AsyncOpenAI, admin: httpx.Client
) -> None:
    slow(admin, "responses.create", nth=2)  # the submit's create, the round's outputs in it
    steps = Steps(request=chain_request(script(rounds=ONE_ROUND, reply="done")), steps=["start_run", "submit_tool_outputs"])
    async with model_worker(temporal_client, model, task_queue):
        result, handle = await run_steps(temporal_client, task_queue, steps)

    assert result.snapshot is not None and result.snapshot.status == "completed" and result.snapshot.final_text == "done"
    assert await attempts(handle) == [("start_run", 1), ("submit_tool_outputs", 1)]
    stats = admin.get("/stats").json()
    assert len(responses_created(stats)) == 2
    assert sum(c.get("function_call_outputs_accepted", 0) for c in stats["runs"].values()) == 1


async def test_a_cancel_slower_than_the_heartbeat_timeout_keeps_its_attempt(
    temporal_client: Client, task_queue: str, model: AsyncOpenAI, admin: httpx.Client, client: OpenAI
) -> None:
    """Stopping a run at requires_action on a conversation answers its calls; that write is slow."""
    conversation = client.conversations.create().id
    request = RunRequest(model=MODEL, conversation_id=conversation, messages=[MessageInput(content=script(rounds=ONE_ROUND))])
    slow(admin, "conversations.items.create")
    async with model_worker(temporal_client, model, task_queue):
        result, handle = await run_steps(temporal_client, task_queue, Steps(request=request, steps=["start_run", "cancel_run"]))

    assert result.snapshot is not None and result.snapshot.status == "cancelled"
    assert await attempts(handle) == [("start_run", 1), ("cancel_run", 1)]
    items = client.conversations.items.list(conversation, order="asc", limit=100).data
    assert len([i for i in items if i.type == "function_call_output"]) == 1


async def test_a_thread_create_slower_than_the_heartbeat_timeout_makes_one_thread(
    temporal_client: Client, task_queue: str, model: AsyncOpenAI, admin: httpx.Client, client: OpenAI
) -> None:
    assistant_id = client.beta.assistants.create(model=MODEL, tools=[t.schema() for t in registry]).id  # type: ignore[misc]
    request = RunRequest(assistant_id=assistant_id, messages=[MessageInput(content=script(reply="hello"))])
    threads_before = admin.get("/health").json()["threads"]
    slow(admin, "threads.create")
    slow(admin, "runs.create")
    async with model_worker(temporal_client, model, task_queue):
        result, handle = await run_steps(temporal_client, task_queue, Steps(request=request, steps=["create_thread", "start_run"]))

    assert result.snapshot is not None and result.snapshot.status == "completed" and result.snapshot.final_text == "hello"
    assert await attempts(handle) == [("create_thread", 1), ("start_run", 1)]
    assert admin.get("/health").json()["threads"] == threads_before + 1  # no orphan thread
    assert admin.get("/stats").json()["threads"][result.thread_id]["runs_created"] == 1


async def test_a_cancel_reaches_an_activity_whose_call_is_slow_to_answer(
    temporal_client: Client, task_queue: str, model: AsyncOpenAI, admin: httpx.Client, client: OpenAI
) -> None:
    """The workflow is cancelled while the turn reads its conversation (slowly). The
    background heartbeat brings the cancel to the activity during the read, and the turn
    ends there, cancelled. Before: nothing heartbeated during the read, so the activity
    never heard the cancel and timed out instead."""
    conversation = client.conversations.create().id
    request = RunRequest(model=MODEL, conversation_id=conversation, messages=[MessageInput(content=script(reply="never"))])
    rule = {"operation": "conversations.items.list", "nth": 1, "action": "delay", "delay_seconds": SLOW_CALL_SECONDS}
    admin.post("/faults", json=rule).raise_for_status()
    async with model_worker(temporal_client, model, task_queue):
        handle = await temporal_client.start_workflow(
            ModelStepsWorkflow.run, Steps(request=request, steps=["start_run"]), id=f"steps-{uuid.uuid4()}",
            task_queue=task_queue, result_type=StepsResult,
        )
        while admin.get("/stats").json()["faults_fired"].get("conversations.items.list", 0) == 0:
            await asyncio.sleep(0.02)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), DOES_NOT_HANG)
        # The slow read answers in the end (to no one); nothing follows it.
        deadline = time.monotonic() + DOES_NOT_HANG
        while "conversations.items.list 200" not in admin.get("/stats").json()["responses"]:
            assert time.monotonic() < deadline, "the slow read never answered"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

    stats = admin.get("/stats").json()
    assert responses_created(stats) == [] and stats["requests"].get("responses.create", 0) == 0
    ended = [e.event_type for e in (await handle.fetch_history()).events if e.event_type in ACTIVITY_ENDINGS]
    assert ended == [EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED]  # heard the cancel; did not time out


# ---------------------------------------------------------------------------- what a retry recalls


def test_a_retry_heartbeats_what_the_attempt_before_recorded_until_it_replaces_it() -> None:
    sent: list[dict[str, Any]] = []
    io = TurnIO(heartbeat=sent.append, attempt=2, recalled={"conversation_head": "msg_1", "response_id": "resp_1"})
    io.progress(waiting_for="earlier response")
    io.forget_for_retry("response_id")
    io.keep_alive()
    io.remember_for_retry(conversation_head="msg_2")
    assert sent == [
        {"conversation_head": "msg_1", "response_id": "resp_1", "waiting_for": "earlier response"},
        {"conversation_head": "msg_1"},
        {"conversation_head": "msg_1"},
        {"conversation_head": "msg_2"},
    ]


def test_the_background_heartbeat_interval_is_a_fraction_of_the_heartbeat_timeout() -> None:
    assert heartbeat_interval(timedelta(seconds=30)) == 7.5
    assert heartbeat_interval(HEARTBEAT) < HEARTBEAT.total_seconds() / 2
    assert heartbeat_interval(None) == 10.0  # no heartbeat timeout: still beats, so a cancel arrives


# ---------------------------------------------------------------------------- a retry killed in turn


@contextlib.asynccontextmanager
async def start_run_on_a_worker_process(
    client: Client, server: TemporalDevServer, emulator: Any, task_queue: str, log: Path, request: RunRequest
) -> AsyncIterator[tuple[WorkflowHandle[Any, StepsResult], Callable[[], None]]]:
    """The test workflow's start_run, its activity served by a real worker process (output in
    ``log``): yields the workflow's handle and ``kill_and_replace()``, which SIGKILLs that
    process and starts another. Every process is stopped on the way out."""
    activity_queue = f"{task_queue}-activities"
    processes = [spawn_worker(server, emulator, activity_queue, log, "responses")]

    def kill_and_replace() -> None:
        processes[-1].send_signal(signal.SIGKILL)
        processes[-1].wait()
        processes.append(spawn_worker(server, emulator, activity_queue, log, "responses"))

    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0)
    try:
        async with model_worker(client, model, task_queue, activities=False):
            steps = Steps(request=request, steps=["start_run"], activity_task_queue=activity_queue)
            handle = await client.start_workflow(
                ModelStepsWorkflow.run, steps, id=f"steps-{uuid.uuid4()}", task_queue=task_queue, result_type=StepsResult
            )
            yield handle, kill_and_replace
    finally:
        await model.close()
        for process in processes:
            stop_process(process)


async def first_heartbeat_of_attempt(handle: WorkflowHandle[Any, Any], attempt: int) -> dict[str, Any]:
    """The details of the first heartbeat the given attempt of the workflow's activity sent
    (as Temporal holds them: what a retry would recall)."""
    deadline = time.monotonic() + DOES_NOT_HANG
    while time.monotonic() < deadline:
        for pending in (await handle.describe()).raw_description.pending_activities:
            beat, started = pending.last_heartbeat_time, pending.last_started_time
            if pending.attempt == attempt and started.seconds and (beat.seconds, beat.nanos) >= (started.seconds, started.nanos):
                return json.loads(pending.heartbeat_details.payloads[0].data) if pending.heartbeat_details.payloads else {}
        await asyncio.sleep(0.01)
    raise AssertionError(f"attempt {attempt} never heartbeated")


async def test_a_retry_killed_while_it_waits_for_the_earlier_response_leaves_the_next_one_what_it_needs(
    temporal_client: Client,
    temporal_server: TemporalDevServer,
    emulator: Any,
    task_queue: str,
    admin: httpx.Client,
    client: OpenAI,
    tmp_path: Path,
) -> None:
    """Attempt 1 records the conversation's head, and its create takes effect but the reply is
    lost. Attempt 2 finds its message after the head and waits for that response (the
    conversation is locked by it); its worker is SIGKILLed the moment attempt 2 first
    heartbeats. Before: that heartbeat carried only its progress, not the head attempt 1 had
    recorded, so attempt 3 could not recognise the message and sent it a second time."""
    conversation = client.conversations.create().id
    admin.post("/faults", json={"operation": "responses.create", "nth": 1, "action": "drop", "when": "after"}).raise_for_status()
    text = script(reply="the only answer", turn_seconds=6)
    request = RunRequest(model=MODEL, conversation_id=conversation, messages=[MessageInput(content=text)])
    log = tmp_path / "workers.log"
    async with start_run_on_a_worker_process(temporal_client, temporal_server, emulator, task_queue, log, request) as (handle, kill_and_replace):
        beat = await first_heartbeat_of_attempt(handle, 2)
        kill_and_replace()
        result = await asyncio.wait_for(handle.result(), DOES_NOT_HANG)

    assert result.snapshot is not None and result.snapshot.final_text == "the only answer", log.read_text()[-3000:]
    items = client.conversations.items.list(conversation, order="asc", limit=100).data
    assert [(i.role, i.content[0].text) for i in items if i.type == "message"] == [  # type: ignore[union-attr]
        ("user", text), ("assistant", "the only answer"),
    ]
    # One response answered. A retry continuing the conversation just as that response ended
    # can make a second, which it cancels at once, before it adds anything (the race that
    # docs/responses-backend.md, point 2, describes; more likely on a loaded machine).
    statuses = sorted(client.responses.retrieve(rid).status or "" for rid in responses_created(admin.get("/stats").json()))
    assert statuses.count("completed") == 1 and set(statuses) <= {"completed", "cancelled"}, statuses
    assert "conversation_head" in beat and await attempts(handle) == [("start_run", 3)]


async def test_a_stream_resumed_after_a_kill_gives_followers_every_delta_once(
    temporal_client: Client, temporal_server: TemporalDevServer, emulator: Any, task_queue: str, admin: httpx.Client, tmp_path: Path
) -> None:
    """A streamed Responses turn whose worker is SIGKILLed while text is streaming: the retry
    resumes the response's stream after the last delta that reached the workflow (recorded
    once each paced batch is delivered, activities/progress.py), so a delta received but not
    yet delivered is streamed again, not lost, and followers see the reply exactly once."""
    reply = "Every word of this reply reaches the follower once. " * 6
    request = RunRequest(
        backend="responses", model=MODEL, mode="stream", tool_choice="none",
        messages=[MessageInput(content=script(reply=reply, chunk_chars=3, chars_per_second=40))],
    )
    log = tmp_path / "workers.log"
    async with start_run_on_a_worker_process(temporal_client, temporal_server, emulator, task_queue, log, request) as (handle, kill_and_replace):
        seen = ""
        async for event in RunHandle(temporal_client, handle.id).progress():
            seen += event.text or ""
            if len(seen) >= 100:  # the batch ~3.3 s into the text; the next comes ~1.9 s later
                break
        # Killed between two batches, more than a heartbeat throttle after the last one:
        # text has come in (and been heartbeated as received) since it was delivered.
        await asyncio.sleep(1.5)
        kill_and_replace()
        result = await asyncio.wait_for(handle.result(), DOES_NOT_HANG)
        streamed = [e async for e in RunHandle(temporal_client, handle.id).progress() if e.kind == "text"]

    assert result.snapshot is not None and result.snapshot.final_text == reply, log.read_text()[-3000:]
    assert "".join(e.text or "" for e in streamed) == reply
    assert await attempts(handle) == [("start_run", 2)]  # the kill cut attempt 1
    stats = admin.get("/stats").json()
    assert len(responses_created(stats)) == 1 and stats["requests"]["responses.retrieve"] >= 1  # resumed, not created again


# ---------------------------------------------------------------------------- conversations: check after the wait


async def test_a_retry_that_waited_for_the_conversation_does_not_send_its_input_again(
    backend: ResponsesBackend, client: OpenAI, admin: httpx.Client
) -> None:
    """The earlier attempt's create reaches the server only after the retry looked for its
    input (the retry's look is answered late); the retry then finds the conversation busy
    with that response. Before: once it ended, the retry sent the same message again."""
    conversation = client.conversations.create().id
    text = script(reply="the first answer", turn_seconds=3)
    look = {"operation": "conversations.items.list", "nth": 1, "action": "delay", "when": "after", "delay_seconds": 2.0}
    admin.post("/faults", json=look).raise_for_status()

    turn = asyncio.create_task(backend.start(request(conversation, text), None, "wf/run", False, retry(conversation_head=None)))
    while admin.get("/stats").json()["faults_fired"].get("conversations.items.list", 0) == 0:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the look has read the conversation; its answer is on hold
    await asyncio.to_thread(earlier_create, client, conversation, text)
    snapshot = await asyncio.wait_for(turn, DOES_NOT_HANG)

    assert snapshot.status == "completed" and snapshot.final_text == "the first answer"
    items = client.conversations.items.list(conversation, order="asc", limit=100).data
    user = [i for i in items if i.type == "message" and i.role == "user"]  # type: ignore[union-attr]
    assert len(user) == 1
    stats = admin.get("/stats").json()
    # One response answered; one the retry made while the first was ending is cancelled at once (see above).
    statuses = sorted(client.responses.retrieve(rid).status or "" for rid in responses_created(stats))
    assert statuses.count("completed") == 1 and set(statuses) <= {"completed", "cancelled"}, statuses
    assert stats["responses"]["responses.create 400"] >= 1  # the retry did wait for the lock


# ---------------------------------------------------------------------------- bounded waits


async def test_a_response_that_never_ends_fails_the_turn_after_the_bound_and_is_cancelled(
    backend: ResponsesBackend, client: OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(responses_module, "RESPONSE_WAIT_SECONDS", 1.0, raising=False)
    turn = backend.start(chain_request(script(reply="too late", turn_seconds=20)), None, "wf/run", False, TurnIO(key="wf/run"))

    with pytest.raises(ApplicationError) as raised:
        await asyncio.wait_for(turn, DOES_NOT_HANG)

    error = raised.value
    assert error.non_retryable and error.type == "ResponseWaitExceeded"
    response_id = error.details[0]["response_id"]
    assert f"response {response_id} was still " in error.message and "RESPONSE_WAIT_SECONDS = 1 s" in error.message
    assert client.responses.retrieve(response_id).status == "cancelled"


async def test_waiting_for_an_earlier_attempts_response_is_bounded_across_attempts(
    backend: ResponsesBackend, client: OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The earlier attempt's create took the turn's input, its ID was lost, and the response
    runs on: the retry waits for it to end (the conversation is locked meanwhile), up to the
    bound. The time waited is recorded, so the next attempt goes on counting from it."""
    monkeypatch.setattr(responses_module, "RESPONSE_WAIT_SECONDS", 1.0, raising=False)
    conversation = client.conversations.create().id
    text = script(reply="slow", turn_seconds=20)
    earlier_create(client, conversation, text)

    io = retry(conversation_head=None)
    with pytest.raises(ApplicationError) as raised:
        await asyncio.wait_for(backend.start(request(conversation, text), None, "wf/run", False, io), DOES_NOT_HANG)
    assert raised.value.non_retryable and raised.value.type == "ResponseWaitExceeded"
    assert f"on conversation {conversation} for the response an earlier attempt" in raised.value.message
    since = io.recorded["waiting_since"]

    # The next attempt, an hour's bound later: the time already waited counts.
    monkeypatch.setattr(responses_module, "RESPONSE_WAIT_SECONDS", 3600.0)
    later = TurnIO(attempt=3, recalled={"conversation_head": None, "waiting_since": since - 3600}, key="wf/run")
    with pytest.raises(ApplicationError) as raised:
        await asyncio.wait_for(backend.start(request(conversation, text), None, "wf/run", False, later), DOES_NOT_HANG)
    assert raised.value.type == "ResponseWaitExceeded" and raised.value.details[0]["waited_seconds"] >= 3600
