"""Expiry, cancellation, a worker killed mid-tool, and replay of recorded histories."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer, Worker

from durable_assistants import worker
from durable_assistants.activities.assistants import AssistantsBackend
from durable_assistants.activities.model_api import ModelActivities
from durable_assistants.activities.responses import ResponsesBackend
from durable_assistants.client import enqueue_run
from durable_assistants.cost import run_actions
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.nexus import NexusRunInput
from durable_assistants.processes import die_with_parent, stop_process
from durable_assistants.tools import registry
from durable_assistants.workflows.enqueued_run import EnqueuedRunWorkflow
from durable_assistants.workflows.models import Callback, LiveSnapshot, RunRequest, ToolCallDecision
from durable_assistants.workflows.run import AssistantRunWorkflow
from durable_assistants.workflows.thread_queue import ThreadQueueWorkflow, queue_workflow_id
from tests.apis import Api, Seen
from tests.conftest import eventually, script, workflow_outcome
from tests.test_worker_runs import TOOLS, message, start
from tests.worker_tools import CANCELLED

HISTORIES = Path(__file__).parent / "histories"
REPO = Path(__file__).parent.parent


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"max_cached_workflows": 0}  # every workflow task replays: non-determinism shows at once


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]


def slow_round(seconds: float, marker: Path | str = "") -> list[list[dict[str, Any]]]:
    return [[{"name": "slow", "arguments": {"seconds": seconds, "marker": str(marker)}}, {"name": "structured", "arguments": {"n": 1}}]]


async def wait_for(predicate: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("policy", ["submit_errors", "fail"])
async def test_a_tool_that_would_outlast_the_run(
    policy: str, temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client, client: OpenAI
) -> None:
    admin.patch("/config", json={"expiry_seconds": 5}).raise_for_status()
    request = RunRequest(
        assistant_id=assistant_id,
        messages=[message(script(rounds=slow_round(30)))],
        expiry_policy=policy,  # type: ignore[arg-type]
        expiry_margin_seconds=1.5,
    )
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    slow = result.tool_calls[0]
    assert slow.name == "slow" and slow.error == "slow did not finish before the run's deadline"
    if policy == "submit_errors":
        # The model got an error output in time and the run went on to its answer.
        assert result.status == "completed" and result.failure is None
        assert "- slow: Error: slow did not finish before the run's deadline." in (result.final_text or "")
        assert (await workflow_outcome(temporal_client, handle.id))[0] == "COMPLETED"
    else:
        assert result.status == "expired"
        assert result.failure == "tool slow would outlast the run: slow did not finish before the run's deadline"
        status, failure_type, details = await workflow_outcome(temporal_client, handle.id)
        assert (status, failure_type) == ("FAILED", "RunExpired") and details is not None and details["status"] == "expired"
        api_run = client.beta.threads.runs.retrieve(thread_id=result.thread_id, run_id=result.run_id)
        assert api_run.status == "cancelled"


async def test_cancelling_the_workflow_cancels_its_tools_and_the_run(
    api: Api, temporal_client: Client, task_queue: str, workers: None, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    request = api.request([script(rounds=slow_round(60, marker))])
    handle = await start(temporal_client, task_queue, request)
    await wait_for(marker.exists, "the slow tool to start")
    await handle.cancel()
    result = await handle.result()

    assert result.status == "cancelled" and result.failure == "the workflow was cancelled"
    assert api.api_status(result) == api.status_after_stop
    # Canceled, once the tool's cancellation was recorded: nothing left pending (workflow_outcome checks).
    assert (await workflow_outcome(temporal_client, handle.id))[0] == "CANCELED"
    call_id = marker.read_text().split()[0].split(":")[1]
    await wait_for(lambda: call_id in CANCELLED, "the slow tool to hear its cancellation")


async def test_a_tool_result_that_lands_with_the_cancel_still_waits_for_the_other_tools(
    temporal_client: Client, task_queue: str, emulator: Any, assistant_id: str, tmp_path: Path
) -> None:
    """One tool's result and the workflow's cancel reach the workflow in one task: that call
    ends at once, and the run still waits for the other tool's cancellation to be recorded
    before it stops the API run and closes (patch round-stops-together)."""
    import tests.worker_tools  # noqa: F401  (registers slow)

    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    activities = ModelActivities([AssistantsBackend(model, registry), ResponsesBackend(model, registry)], registry)
    activity_worker = Worker(
        temporal_client,
        task_queue=task_queue,
        activities=[activities.create_thread, activities.start_run, activities.submit_tool_outputs, activities.cancel_run, *worker.tool_activities(registry, None)],
        max_heartbeat_throttle_interval=worker.HEARTBEAT_THROTTLE,
    )

    def workflow_worker() -> Worker:
        return Worker(temporal_client, task_queue=task_queue, workflows=[AssistantRunWorkflow], max_cached_workflows=0)

    marker = tmp_path / "started"
    rounds = [[{"name": "slow", "arguments": {"seconds": 60, "marker": str(marker)}},
               {"name": "slow", "arguments": {"seconds": 2, "marker": str(marker)}}]]
    async with activity_worker:
        async with workflow_worker():
            handle = await start(temporal_client, task_queue, RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=rounds))]))
            await wait_for(lambda: marker.exists() and len(marker.read_text().splitlines()) == 2, "both tools to start")
        # No workflow worker now: the short tool's result waits in the history for the next task.
        async def completed() -> int:
            return sum(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED for e in (await handle.fetch_history()).events)

        before = await completed()  # create_thread and start_run
        deadline = time.monotonic() + 30
        while await completed() == before:
            assert time.monotonic() < deadline, "the short tool did not complete"
            await asyncio.sleep(0.1)
        await handle.cancel()
        async with workflow_worker():
            result = await handle.result()
    await model.close()

    assert result.status == "cancelled" and result.failure == "the workflow was cancelled"
    # workflow_outcome asserts that no activity is left pending on the closed workflow.
    assert (await workflow_outcome(temporal_client, handle.id))[0] == "CANCELED"
    events = [e.event_type for e in (await handle.fetch_history()).events]
    cancelled = events.index(EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED)
    stop_scheduled = [i for i, e in enumerate(events) if e == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED][-1]
    assert cancelled < stop_scheduled, "the API run was stopped before the long tool's cancellation was recorded"
    call_ids = [line.split()[0].split(":")[1] for line in marker.read_text().splitlines()]
    assert len(set(call_ids) & set(CANCELLED)) == 1  # the long tool heard its cancellation


@pytest.mark.parametrize("during", ["the first turn", "the turn after the tools"])
async def test_cancelling_the_workflow_mid_turn_stops_the_api_run(
    api: Api, during: str, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client
) -> None:
    """The model activity is waited for while it cancels the run or response it has under way."""
    reply = "A reply slow enough to be interrupted. " * 10
    if during == "the first turn":
        rounds: list[list[dict[str, Any]]] = []
        turn_started = "runs.create" if api.name == "assistants" else "responses.create"
        starts = 1
    else:
        rounds = [[{"name": "structured", "arguments": {"n": 1}}]]
        turn_started = "runs.submit_tool_outputs" if api.name == "assistants" else "responses.create"
        starts = 1 if api.name == "assistants" else 2
    read = "runs.retrieve" if api.name == "assistants" else "responses.retrieve"
    handle = await start(temporal_client, task_queue, api.request([script(rounds=rounds, reply=reply, chars_per_second=10)]))

    def requests() -> dict[str, int]:
        return admin.get("/stats").json()["requests"]

    await wait_for(lambda: requests().get(turn_started, 0) >= starts, f"{turn_started} #{starts}")
    reads = requests().get(read, 0)
    await wait_for(lambda: requests().get(read, 0) > reads, "the activity to poll the turn it started")
    await handle.cancel()
    result = await handle.result()

    assert result.status == "cancelled" and result.failure == "the workflow was cancelled"
    assert result.final_text is None
    assert api.api_status(result) == "cancelled"  # the API run itself was stopped, not left to finish
    assert result.rounds == len(rounds) and len(result.tool_calls) == len(rounds)
    if api.name == "responses":
        assert len(result.response_ids) == starts and result.response_ids[-1] == result.run_id


async def test_a_cancel_whose_api_cancel_fails_still_stops_the_run(
    api: Api, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client
) -> None:
    """The activity's own cancel call fails (a 500): it hands back the run it could not stop,
    and the workflow's cancel_run, which is retried, stops it."""
    cancel = "runs.cancel" if api.name == "assistants" else "responses.cancel"
    read = "runs.retrieve" if api.name == "assistants" else "responses.retrieve"
    handle = await start(temporal_client, task_queue, api.request([script(reply="slow " * 40, chars_per_second=10)]))

    def requests() -> dict[str, int]:
        return admin.get("/stats").json()["requests"]

    await wait_for(lambda: requests().get(read, 0) >= 1, "the activity to poll the turn")
    admin.post("/faults", json={"operation": cancel, "nth": 1, "action": "error", "status": 500}).raise_for_status()
    await handle.cancel()
    result = await handle.result()

    assert result.status == "cancelled" and result.failure == "the workflow was cancelled"
    assert api.api_status(result) == "cancelled"
    assert admin.get("/stats").json()["faults_fired"] == {cancel: 1}


async def test_a_turn_that_ends_as_the_cancel_arrives_is_stopped_from_where_it_ended(
    temporal_client: Client, task_queue: str, emulator: Any, admin: httpx.Client, client: OpenAI
) -> None:
    """The start activity's result and the cancel reach the workflow in one task: the result
    still counts, so the stop answers the calls it left on the conversation."""
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    activities = ModelActivities([AssistantsBackend(model, registry), ResponsesBackend(model, registry)], registry)
    activity_worker = Worker(
        temporal_client,
        task_queue=task_queue,
        activities=[activities.start_run, activities.submit_tool_outputs, activities.cancel_run, *worker.tool_activities(registry, None)],
        max_heartbeat_throttle_interval=worker.HEARTBEAT_THROTTLE,
    )

    def workflow_worker() -> Worker:
        return Worker(temporal_client, task_queue=task_queue, workflows=[AssistantRunWorkflow], max_cached_workflows=0)

    conversation = client.conversations.create().id
    rounds = [[{"name": "structured", "arguments": {"n": 1}}]]
    request = RunRequest(backend="responses", model="gpt-4o", conversation_id=conversation, messages=[message(script(rounds=rounds))])
    async with activity_worker:
        async with workflow_worker():
            handle = await start(temporal_client, task_queue, request)
            await wait_for(lambda: admin.get("/stats").json()["requests"].get("responses.create", 0) >= 1, "the first turn")
        # No workflow worker now: the activity's result waits in the history for the next task.
        deadline = time.monotonic() + 30
        while not any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED for e in (await handle.fetch_history()).events):
            assert time.monotonic() < deadline, "the start activity did not complete"
            await asyncio.sleep(0.1)
        await handle.cancel()
        async with workflow_worker():
            result = await handle.result()
            after = await (await start(temporal_client, task_queue, RunRequest(
                backend="responses", model="gpt-4o", conversation_id=conversation, messages=[message(script(reply="still here"))]
            ))).result()
    await model.close()

    assert result.status == "cancelled" and result.failure == "the workflow was cancelled"
    assert result.run_id.startswith("resp_") and result.response_ids == [result.run_id]
    items = client.conversations.items.list(conversation, order="asc", limit=100).data
    outputs = [i.output for i in items if i.type == "function_call_output"]  # type: ignore[union-attr]
    assert outputs == ["Error: the run stopped before this call was answered: the workflow was cancelled"]
    assert after.status == "completed" and after.final_text == "still here"


async def test_worker_killed_while_a_call_waits_for_approval_loses_nothing(
    api: Api, temporal_client: Client, temporal_server: TemporalDevServer, emulator: Any, task_queue: str, tmp_path: Path
) -> None:
    """The wait is workflow state: a SIGKILLed worker's successor takes the decision."""
    refund = {"name": "refund", "arguments": {"order_id": "o-9", "amount": 900}}
    request = api.request([script(rounds=[[refund]], reply="Done:\n{outputs}")])
    log = tmp_path / "workers.log"
    with KilledWorker(temporal_server, emulator, task_queue, log, api.name) as workers:
        handle = await enqueue_run(temporal_client, request, request_id=f"kill-approval-{uuid.uuid4()}", task_queue=task_queue)
        async def waiting() -> list[Any]:
            try:
                return await handle.pending_approvals()
            except RPCError:
                return []  # the worker still starting: the query had no answer in time

        [pending] = await eventually(waiting, lambda got: len(got) == 1, "a call waiting for approval", 60)
        workers.kill_and_replace()
        decided = await handle.approve(pending.call_id, note="after the crash", by="ops")
        result = await asyncio.wait_for(handle.result(), 60)

    assert decided.decision == "approved"
    assert result.status == "completed", log.read_text()
    [call] = result.tool_calls
    assert call.output_preview == "refunded 900.00 on o-9" and call.approval is not None and call.approval.by == "ops"


class KilledWorker:
    """A worker subprocess to SIGKILL mid-run and replace with a fresh one (``kill_and_replace``);
    every worker it started is stopped (SIGTERM) when the block ends."""

    def __init__(self, server: TemporalDevServer, emulator: Any, task_queue: str, log: Path, backend: str = "assistants") -> None:
        self._spawn = lambda: spawn_worker(server, emulator, task_queue, log, backend)
        self.processes = [self._spawn()]

    def kill_and_replace(self) -> None:
        killed = self.processes[-1]
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        self.processes.append(self._spawn())

    def __enter__(self) -> KilledWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            stop_process(process)


def spawn_worker(server: TemporalDevServer, emulator: Any, task_queue: str, log: Path, backend: str = "assistants") -> subprocess.Popen[bytes]:
    env = {
        "DA_BACKEND": backend,
        **os.environ,
        "TEMPORAL_ADDRESS": server.address,
        "OPENAI_BASE_URL": emulator.base_url,
        "OPENAI_API_KEY": "sk-test",
        "DA_TOOL_MODULES": "tests.worker_tools,durable_assistants.tools.examples",
        "DA_LOG_FORMAT": "json",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "worker.py", "--task-queue", task_queue], cwd=REPO, env=env, stderr=out, stdout=out, preexec_fn=die_with_parent
        )


async def test_worker_killed_mid_tool_and_restarted_creates_nothing_twice(
    api: Api,
    temporal_client: Client,
    temporal_server: TemporalDevServer,
    emulator: Any,
    task_queue: str,
    admin: httpx.Client,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "attempts"
    context = api.new_context()
    rounds = [*slow_round(3, marker), [{"name": "structured", "arguments": {"n": 2}}]]
    request = api.request([script(rounds=rounds)], context=context)
    log = tmp_path / "workers.log"
    with KilledWorker(temporal_server, emulator, task_queue, log, api.name) as workers:
        handle = await start(temporal_client, task_queue, request)
        # Its attempt written, not only the file made: a kill between the two loses the line.
        await wait_for(lambda: marker.exists() and marker.read_text().endswith("\n"), "the slow tool to start on the first worker")
        workers.kill_and_replace()
        result = await asyncio.wait_for(handle.result(), 60)
    second = workers.processes[-1]

    assert result.status == "completed" and result.rounds == 2, log.read_text()
    attempts = marker.read_text().splitlines()
    assert len(attempts) == 2 and attempts[0].endswith("attempt 1") and attempts[1].endswith("attempt 2")
    assert attempts[0].split()[0] == attempts[1].split()[0]  # same idempotency key on the retry
    assert result.tool_calls[0].attempts == 1  # the killed attempt is not the tool's own failure
    assert api.seen(admin.get("/stats").json(), result) == Seen(turns_created=api.turns(2), user_messages=1, rounds_submitted=2)
    assert second.returncode == 0  # SIGTERM is a clean shutdown


async def test_recorded_histories_replay_without_nondeterminism(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, tmp_path: Path
) -> None:
    """Replays every committed history (recorded by earlier versions of the workflows) and
    the histories of fresh runs. Set DA_RECORD_HISTORIES=1 to (re)record the fresh ones."""
    scenarios = {
        "poll-two-rounds": RunRequest(
            assistant_id=assistant_id,
            messages=[message(script(rounds=[[{"name": "structured", "arguments": {"n": 1}}, {"name": "no_such_tool"}], [{"name": "flaky", "arguments": {"succeed_on_attempt": 2}}]]))],
        ),
        "stream-fail-run": RunRequest(
            assistant_id=assistant_id,
            messages=[message(script(rounds=[[{"name": "critical", "arguments": {"reason": "x"}}]]))],
            mode="stream",
        ),
        "responses-stream-fail-in-round-2": RunRequest(
            backend="responses",
            model="gpt-4o",
            messages=[message(script(rounds=[[{"name": "structured", "arguments": {"n": 1}}, {"name": "no_such_tool"}], [{"name": "critical", "arguments": {"reason": "x"}}]]))],
            mode="stream",
        ),
    }
    # A round of inline tools, then a mixed one (patch inline-tools).
    scenarios["inline-rounds"] = RunRequest(
        assistant_id=assistant_id,
        messages=[message(script(rounds=[
            [{"name": "inline_lookup", "arguments": {"key": "a", "fail_first": 1}}],
            [{"name": "inline_lookup", "arguments": {"key": "b", "fail_first": 0}}, {"name": "structured", "arguments": {"n": 1}}],
        ]))],
    )
    # A run that fails (the workflow raises; patch release-followers-on-failure).
    scenarios["start-fails"] = RunRequest(assistant_id="asst_missing", messages=[message("hi")])
    # A callback no receiver takes (a port that refuses): two attempts and a pause, undelivered.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    scenarios["callback-undelivered"] = RunRequest(
        assistant_id=assistant_id, messages=[message("hi")], tool_choice="none",
        callback=Callback(url=nowhere, secret="replay-secret-0123456789", max_seconds=1.5),
    )
    fresh = []
    for name, request in scenarios.items():
        handle = await start(temporal_client, task_queue, request)
        try:
            await handle.result()
        except WorkflowFailureError:
            assert name == "start-fails"
        fresh.append((name, await handle.fetch_history()))
    # A run cancelled while its tool runs (the workflow ends Canceled once the tool's cancellation is recorded).
    marker = tmp_path / "replay-cancel"
    handle = await start(temporal_client, task_queue, RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=slow_round(60, marker)))]))
    await wait_for(marker.exists, "the slow tool to start")
    await handle.cancel()
    assert (await handle.result()).status == "cancelled"
    fresh.append(("cancel-mid-tool", await handle.fetch_history()))
    # A call that waits for approval (refunds over 100) and is edited, beside one that needs none.
    handle = await start(temporal_client, task_queue, RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=[[
        {"name": "refund", "arguments": {"order_id": "o-1", "amount": 500}}, {"name": "refund", "arguments": {"order_id": "o-2", "amount": 5}},
    ]]))]))
    plain = temporal_client.get_workflow_handle(handle.id)

    async def waiting() -> list[Any]:
        return (await plain.query("snapshot", result_type=LiveSnapshot)).pending_approvals

    [pending] = await eventually(waiting, lambda got: len(got) == 1, "a call waiting for approval")
    await plain.execute_update("decide_tool_call", ToolCallDecision(
        call_id=pending.call_id, decision="edit", edited_arguments={"order_id": "o-1", "amount": 50}, by="replay",
    ))
    assert (await handle.result()).tool_calls[0].output_preview == "refunded 50.00 on o-1"
    fresh.append(("approval-edit", await handle.fetch_history()))
    # A run enqueued through Nexus's EnqueuedRun (started here directly: the workflow is the same).
    enqueued = await temporal_client.start_workflow(
        EnqueuedRunWorkflow.run,
        NexusRunInput(request=RunRequest(assistant_id=assistant_id, messages=[message("hi")], tool_choice="none"), request_id=f"replay-nexus-{uuid.uuid4()}"),
        id=f"nexus-run/replay-{uuid.uuid4()}", task_queue=task_queue,
    )
    assert (await enqueued.result()).status == "completed"
    fresh.append(("enqueued-run", await enqueued.fetch_history()))
    # Two runs taking turns on one thread, through its ThreadQueue (still open, idling: replayed as far as it went).
    thread_id = client.beta.threads.create().id
    queued = [
        await enqueue_run(
            temporal_client, RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[message(f"hello {i}")], tool_choice="none"),
            request_id=f"replay-{i}-{thread_id}", task_queue=task_queue,
        )
        for i in range(2)
    ]
    assert [(await h.result()).status for h in queued] == ["completed", "completed"]
    fresh.append(("thread-queue-two-runs", await temporal_client.get_workflow_handle(queue_workflow_id(thread_id)).fetch_history()))
    if os.environ.get("DA_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        for name, history in fresh:
            (HISTORIES / f"{name}.json").write_text(history.to_json())
    recorded = [WorkflowHistory.from_json(p.stem, p.read_text()) for p in sorted(HISTORIES.glob("*.json"))]
    assert recorded, f"no recorded histories in {HISTORIES}; run with DA_RECORD_HISTORIES=1 once"
    assert any("thread-queue" in h.workflow_id for h in recorded), "no recorded ThreadQueue history"
    replayer = Replayer(workflows=[AssistantRunWorkflow, ThreadQueueWorkflow, EnqueuedRunWorkflow], data_converter=pydantic_data_converter)
    async with replayer.workflow_replay_iterator(_iterate([*recorded, *(h for _, h in fresh)])) as outcomes:
        async for outcome in outcomes:
            assert outcome.replay_failure is None, outcome.replay_failure


async def _iterate(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TEMPORAL_ADDRESS": "127.0.0.1:1"}, "worker: cannot connect to Temporal (127.0.0.1:1)"),
        # No retries at start-up: a transient failure is retried for DA_STARTUP_RETRY_SECONDS (tests/test_tool_durability.py).
        ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "DA_STARTUP_RETRY_SECONDS": "0"}, "worker: cannot reach the model API at http://127.0.0.1:1/v1"),
    ],
)
def test_worker_says_in_one_line_what_it_cannot_reach(temporal_server: TemporalDevServer, env: dict[str, str], expected: str) -> None:
    full_env = {**os.environ, "TEMPORAL_ADDRESS": temporal_server.address, "OPENAI_API_KEY": "k", **env}
    done = subprocess.run([sys.executable, "worker.py"], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected) and "Traceback" not in done.stderr


async def test_the_dev_server_registers_the_search_attributes(temporal_client: Client) -> None:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    from durable_assistants.workflows.search_attributes import SEARCH_ATTRIBUTE_TYPES

    response = await temporal_client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    assert set(SEARCH_ATTRIBUTE_TYPES) <= set(response.custom_attributes)


async def test_long_runs_continue_as_new_without_repeating_anything(
    api: Api, emulator: Any, admin: httpx.Client, task_queue: str
) -> None:
    # A server that suggests continue-as-new after 40 history events: a few rounds' worth.
    with TemporalDevServer(extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"]) as server:
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0)
        rounds = [[{"name": "structured", "arguments": {"n": r}}, {"name": "get_weather", "arguments": {"city": "Rome"}}] for r in range(6)]
        # Round 5, after the first continue-as-new: a call that waits for approval in the continued run.
        rounds[4].append({"name": "refund", "arguments": {"order_id": "o-5", "amount": 500}})
        context = api.new_context()
        request = api.request([script(rounds=rounds)], context=context)
        async with worker.WorkerGroup(worker.build_workers(temporal, model, registry, task_queue, backend=api.name)):
            handle = await start(temporal, task_queue, request)
            plain = temporal.get_workflow_handle(handle.id)

            async def waiting() -> list[Any]:
                return (await plain.query("snapshot", result_type=LiveSnapshot)).pending_approvals

            [pending] = await eventually(waiting, lambda got: len(got) == 1, "the round-5 call waiting for approval", 60)
            runs_by_then = [w async for w in temporal.list_workflows(f"WorkflowId = '{handle.id}'")]
            await plain.execute_update("decide_tool_call", ToolCallDecision(call_id=pending.call_id, decision="approve", by="after-can"))
            result = await handle.result()
        await model.close()
        runs = [w async for w in temporal.list_workflows(f"WorkflowId = '{handle.id}'")]
        # The actions read across continue-as-new, against each run's own history.
        actions = await run_actions(temporal, handle.id)
        scheduled = 0
        for run in runs:
            events = (await temporal.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()).events
            scheduled += sum(1 for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)

    assert result.status == "completed" and result.rounds == 6
    assert [r.round for r in result.tool_calls] == [r for r in range(1, 7) for _ in range(3 if r == 5 else 2)]
    assert len(runs) >= 2  # it did continue as new
    assert len(runs_by_then) >= 2 and pending.round == 5  # the call waited in a continued run
    approved = next(r for r in result.tool_calls if r.name == "refund")
    assert approved.approval is not None and approved.approval.by == "after-can" and approved.output_preview == "refunded 500.00 on o-5"
    assert (actions.workflows_started, actions.continued_as_new) == (len(runs), len(runs) - 1)
    assert actions.activities_started == scheduled == 1 + 6 * 3 + 1 and actions.activity_retries == 0
    assert actions.updates >= 1  # the decision
    # Tokens carried across continue-as-new: every turn counted once.
    assert result.cost is not None and result.usage is not None
    assert (result.cost.input_tokens, result.cost.output_tokens) == (result.usage.prompt_tokens, result.usage.completion_tokens)
    assert len(result.cost.turns) == (7 if api.name == "responses" else 1)
    assert api.seen(admin.get("/stats").json(), result) == Seen(turns_created=api.turns(6), user_messages=1, rounds_submitted=6)
    if api.name == "responses":
        assert len(set(result.response_ids)) == 7  # carried across continue-as-new
