"""A thread's queue under load: many callers at once, many requests waiting, and the bound on
what it holds. Against a real dev server, in-process workers and the emulator.

Temporal takes 10 updates in flight per workflow and 2,000 per run of a workflow; the queue
carries its waiting requests into continue-as-new, where a payload may have 2 MB."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

import durable_assistants.client as enqueueing
from durable_assistants import worker
from durable_assistants.client import QueueBusyError, QueueFullError, RunHandle, enqueue_run, queue_busy
from durable_assistants.tools import registry
from durable_assistants.workflows.models import (
    THREAD_QUEUE_WORKFLOW_NAME,
    EnqueueRequest,
    MessageInput,
    RunRequest,
    RunResult,
    ThreadQueueInput,
    ThreadQueueState,
    WaitingRequest,
)
from durable_assistants.workflows.thread_queue import MAX_WAITING, MAX_WAITING_BYTES, queue_workflow_id
from tests.conftest import script
from tests.test_cli import cli  # noqa: F401  (fixture)
from tests.test_worker_runs import TOOLS, message


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    import tests.worker_tools  # noqa: F401  (the slow tool the blockers call)

    return client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]


def small(assistant_id: str, thread: str, text: str) -> RunRequest:
    return RunRequest(assistant_id=assistant_id, thread_id=thread, messages=[message(text)], tool_choice="none")


def blocker(assistant_id: str, thread: str, marker: Path) -> RunRequest:
    """A run that holds the thread (a slow tool) until the test cancels it."""
    rounds = [[{"name": "slow", "arguments": {"seconds": 600, "marker": str(marker)}}]]
    return RunRequest(assistant_id=assistant_id, thread_id=thread, messages=[message(script(rounds=rounds))])


async def wait_until(predicate: Any, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def result_in_turn(client: Client, workflow_id: str) -> RunResult:
    """A queued run's result, read from the workflow once it exists. Callers here wait for runs
    in their queue order, so each has started, or is about to, when its turn to be awaited comes.
    (Not RunHandle.result(): under this load its look into the queue, a query with a 2 s
    timeout, can go unanswered, which it reads as 'no such run'.)"""
    handle = client.get_workflow_handle(workflow_id, result_type=RunResult)
    while True:
        try:
            await handle.describe()
            break
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.2)
    return await handle.result()


async def queue_state(client: Client, thread: str) -> ThreadQueueState:
    return await client.get_workflow_handle(queue_workflow_id(thread)).query("state", result_type=ThreadQueueState)


def api_run_ids(client: OpenAI, thread: str) -> list[str]:
    """Every run on the thread, oldest first, as the API lists them."""
    found, after = [], None
    while True:
        page = client.beta.threads.runs.list(thread_id=thread, order="asc", limit=100, **({"after": after} if after else {}))
        found += [r.id for r in page.data]
        if not page.has_more:
            return found
        after = page.data[-1].id


@pytest.mark.parametrize(
    ("status", "message", "busy"),
    [
        (RPCStatusCode.RESOURCE_EXHAUSTED, "limit on number of concurrent in-flight updates has been reached (10)", True),
        (RPCStatusCode.UNAVAILABLE, "workflow update was aborted", True),
        (RPCStatusCode.NOT_FOUND, "workflow update was aborted by closing workflow", True),
        (RPCStatusCode.FAILED_PRECONDITION, "The limit on the total number of distinct updates in this workflow has been reached (2000). Make sure", True),
        (RPCStatusCode.FAILED_PRECONDITION, "limit on number of total updates has been reached (2000)", True),  # older servers
        (RPCStatusCode.NOT_FOUND, "Namespace default is not found.", False),
        (RPCStatusCode.FAILED_PRECONDITION, "something else", False),
        (RPCStatusCode.INVALID_ARGUMENT, "workflow update was aborted", False),
        (RPCStatusCode.PERMISSION_DENIED, "Request unauthorized.", False),
    ],
)
def test_what_an_enqueue_tries_again(status: RPCStatusCode, message: str, busy: bool) -> None:
    assert queue_busy(RPCError(message, status, b"")) is busy


async def test_an_enqueue_refused_all_along_says_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enqueueing, "ENQUEUE_RETRY_SECONDS", 1.0)
    sent: list[str] = []

    class Refusing:
        async def execute_update_with_start_workflow(self, *args: Any, **kwargs: Any) -> Any:
            sent.append(kwargs["id"])
            raise RPCError("limit on number of concurrent in-flight updates has been reached (10)", RPCStatusCode.RESOURCE_EXHAUSTED, b"")

    class Start:
        async def workflow_handle(self) -> Any:
            raise RuntimeError("not started")

    request = RunRequest(assistant_id="asst_1", thread_id="thread_1", messages=[message("hi")])
    item = EnqueueRequest(request_id="r1", run_workflow_id="assistant-run/r1", request=request)
    with pytest.raises(QueueBusyError) as refused:
        await enqueueing._enqueue(Refusing(), Start, item, "r1#0123456789abcdef", "thread_1")  # type: ignore[arg-type]
    assert len(sent) >= 3 and set(sent) == {"r1#0123456789abcdef"}  # the same update ID each time: taken once at most
    text = str(refused.value)
    assert text.startswith("the queue of thread_1 did not take request 'r1': tried") and f"tried {len(sent)} times" in text
    assert "RESOURCE_EXHAUSTED: limit on number of concurrent in-flight updates" in text and "same request ID" in text


# Longer than the SDK's own retries of a refused call (10 s by default), which were all callers got before.
WORKER_AWAY_SECONDS = 15


@pytest.mark.slow
async def test_two_hundred_callers_at_once_on_one_thread_all_get_their_run_once(
    temporal_server: Any, temporal_client: Client, emulator: Any, task_queue: str, assistant_id: str, client: OpenAI,
    admin: httpx.Client,
) -> None:
    """200 callers enqueue on one thread at the same moment, while the queue's worker is away (a
    deploy). Temporal takes 10 updates in flight per workflow and refuses the others for the
    moment, aborting those it held; callers used to get those errors raw ("workflow update was
    aborted", "limit on number of concurrent in-flight updates"). ``enqueue_run`` now sends 5 at
    a time from a process and tries a refused one again (the same update ID), so all get in
    once the worker is back, each once."""
    import durable_assistants.tools.examples  # noqa: F401
    import tests.worker_tools  # noqa: F401

    thread = client.beta.threads.create().id
    connections = [await Client.connect(temporal_server.address, data_converter=pydantic_data_converter) for _ in range(20)]
    tag = uuid.uuid4().hex[:8]

    async def caller(i: int) -> RunHandle:
        return await enqueue_run(connections[i % 20], small(assistant_id, thread, f"caller {i}"), request_id=f"many-{i}-{tag}", task_queue=task_queue)

    began = time.monotonic()
    callers = asyncio.gather(*(caller(i) for i in range(200)))
    await asyncio.sleep(WORKER_AWAY_SECONDS)
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    async with worker.WorkerGroup(worker.build_workers(temporal_client, model, registry, task_queue)):
        handles = await callers
        enqueued = time.monotonic() - began
        in_order = sorted(handles, key=lambda h: h.receipt.sequence)  # type: ignore[union-attr]
        results = {h.workflow_id: await result_in_turn(temporal_client, h.workflow_id) for h in in_order}
        finished = time.monotonic() - began
    await model.close()
    print(f"\n200 callers, worker away {WORKER_AWAY_SECONDS} s: all enqueued after {enqueued:.1f} s, all runs done after {finished:.1f} s")

    assert sorted(h.receipt.sequence for h in handles) == list(range(1, 201))  # type: ignore[union-attr]
    assert [results[h.workflow_id].final_text for h in handles] == [f"You said: caller {i}" for i in range(200)]
    stats = admin.get("/stats").json()["threads"][thread]
    assert stats["runs_created"] == 200 and stats["user_messages_created"] == 200  # each once
    assert api_run_ids(client, thread) == [results[h.workflow_id].run_id for h in in_order]  # in queue order
    assert enqueued < WORKER_AWAY_SECONDS + 45, f"enqueueing took {enqueued:.0f} s"


@pytest.mark.stress  # about 16 minutes on 2 cores: `make test-stress`, not `make test`
async def test_three_thousand_waiting_requests_all_run_in_order(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, admin: httpx.Client,
    tmp_path: Path,
) -> None:
    """Issue 13 §3: a thread with 3,000 waiting requests finishes. One run of the queue's
    workflow takes at most 2,000 updates, so the queue is held by a first run (A) while the
    first ~2,000 arrive, continues as new when A ends (carrying them), and is held by a second
    (B) while the rest arrive: then 3,000 wait, and all of them run, in order."""
    thread = client.beta.threads.create().id
    tag = uuid.uuid4().hex[:8]
    marker_a, marker_b = tmp_path / "a", tmp_path / "b"
    a = await enqueue_run(temporal_client, blocker(assistant_id, thread, marker_a), request_id=f"a-{tag}", task_queue=task_queue)
    b = await enqueue_run(temporal_client, blocker(assistant_id, thread, marker_b), request_id=f"b-{tag}", task_queue=task_queue)
    await wait_until(marker_a.exists, "A's slow tool")

    count = 3_000
    limit = asyncio.Semaphore(50)
    done: list[RunHandle] = []

    async def caller(i: int) -> RunHandle:
        async with limit:
            handle = await enqueue_run(temporal_client, small(assistant_id, thread, f"w{i}"), request_id=f"w{i}-{tag}", task_queue=task_queue)
        done.append(handle)
        return handle

    began = time.monotonic()
    callers = asyncio.gather(*(caller(i) for i in range(count)))
    # Release A once its run of the queue has taken what it can (or everything).
    await wait_until(lambda: len(done) >= 1_990, "the first ~2,000 enqueues", limit=300)
    await a.cancel()
    handles = await callers
    enqueued = time.monotonic() - began

    state = await queue_state(temporal_client, thread)
    assert state.running == b.workflow_id
    assert state.waiting == [h.workflow_id for h in sorted(handles, key=lambda h: h.receipt.sequence)]  # type: ignore[union-attr]
    assert len(state.waiting) == count and state.waiting_bytes <= MAX_WAITING_BYTES
    print(f"\n{count} waiting, {state.waiting_bytes} bytes as carried; enqueued in {enqueued:.0f} s")

    await b.cancel()
    in_order = sorted(handles, key=lambda h: h.receipt.sequence)  # type: ignore[union-attr]
    results = [await result_in_turn(temporal_client, h.workflow_id) for h in in_order]
    ran = time.monotonic() - began - enqueued
    assert all(r.status == "completed" for r in results)
    assert sorted(r.final_text or "" for r in results) == sorted(f"You said: w{i}" for i in range(count))
    assert api_run_ids(client, thread)[2:] == [r.run_id for r in results]  # after A and B, in queue order
    stats = admin.get("/stats").json()["threads"][thread]
    assert stats["runs_created"] == count + 2 and stats["user_messages_created"] == count + 2

    # What each run of the queue's workflow started from: the largest is the carried state.
    starts = []
    async for execution in temporal_client.list_workflows(f"WorkflowId = '{queue_workflow_id(thread)}'"):
        history = await temporal_client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        starts.append(len(history.events[0].workflow_execution_started_event_attributes.input.payloads[0].data))
    print(f"{count} runs in {ran:.0f} s; the queue ran as {len(starts)} workflow runs; largest carried input {max(starts)} bytes")
    assert len(starts) >= 2 and max(starts) < 2_000_000


@pytest.mark.slow
async def test_a_full_queue_refuses_the_next_request_and_runs_the_ones_it_took(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, admin: httpx.Client,
    tmp_path: Path, cli: Any,  # noqa: F811
) -> None:
    """Requests of ~400 KB: two wait, a third would pass the bytes a queue may carry and is
    refused (QueueFullError; the CLI says so in one line); nothing of it is recorded, a small
    request still fits, and once the queue has room the same request ID is taken."""
    thread = client.beta.threads.create().id
    tag = uuid.uuid4().hex[:8]
    marker = tmp_path / "a"
    a = await enqueue_run(temporal_client, blocker(assistant_id, thread, marker), request_id=f"a-{tag}", task_queue=task_queue)
    await wait_until(marker.exists, "the blocker's slow tool")

    def big(n: int) -> RunRequest:
        padding = MessageInput(content=f"{n} " + "x" * 200_000)
        return RunRequest(
            assistant_id=assistant_id, thread_id=thread, messages=[padding, padding, message(f"big {n}")], tool_choice="none"
        )

    taken = [await enqueue_run(temporal_client, big(n), request_id=f"big-{n}-{tag}", task_queue=task_queue) for n in (1, 2)]
    assert [h.receipt.position for h in taken] == [1, 2]  # type: ignore[union-attr]
    with pytest.raises(QueueFullError) as refused:
        await enqueue_run(temporal_client, big(3), request_id=f"big-3-{tag}", task_queue=task_queue)
    assert refused.value.thread_id == thread
    assert f"the queue of {thread} is full" in str(refused.value) and str(MAX_WAITING_BYTES) in str(refused.value)
    request_file = tmp_path / "big3.json"
    request_file.write_text(big(3).model_dump_json(exclude_none=True))
    code, out, err = await cli("enqueue", "--request", f"@{request_file}", "--request-id", f"big-3-{tag}", "--task-queue", task_queue)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"durable-assistants: error: the queue of {thread} is full"), err

    fits = await enqueue_run(temporal_client, small(assistant_id, thread, "small"), request_id=f"small-{tag}", task_queue=task_queue)
    assert fits.receipt.position == 3  # type: ignore[union-attr]
    state = await queue_state(temporal_client, thread)
    assert len(state.waiting) == 3 and 800_000 < state.waiting_bytes <= MAX_WAITING_BYTES

    await a.cancel()
    results = [await result_in_turn(temporal_client, h.workflow_id) for h in (*taken, fits)]
    assert [r.final_text for r in results] == ["You said: big 1", "You said: big 2", "You said: small"]
    again = await enqueue_run(temporal_client, big(3), request_id=f"big-3-{tag}", task_queue=task_queue)
    assert (await result_in_turn(temporal_client, again.workflow_id)).final_text == "You said: big 3"
    stats = admin.get("/stats").json()["threads"][thread]
    assert stats["runs_created"] == 5  # the blocker, big 1 and 2, small, big 3 once: the refusals left nothing


@pytest.mark.slow
async def test_a_queue_holding_its_most_requests_refuses_the_next(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI,
) -> None:
    """The count bound, MAX_WAITING: a queue started (as if continued as new) with that many
    minimal requests waiting, whose first run sits on a task queue no worker polls."""
    thread = client.beta.threads.create().id
    tag = uuid.uuid4().hex[:8]
    nobody = f"nobody-{tag}"
    minimal = RunRequest(assistant_id="a", thread_id=thread, messages=[message("m")])  # never runs: some 180 bytes carried
    waiting = [
        WaitingRequest(request_id=f"m{i}-{tag}", request=minimal, sequence=i + 1, task_queue=nobody, summary="")
        for i in range(MAX_WAITING)
    ]
    queue = await temporal_client.start_workflow(
        THREAD_QUEUE_WORKFLOW_NAME, ThreadQueueInput(thread_id=thread, waiting=waiting, accepted=MAX_WAITING, pending=None),
        id=queue_workflow_id(thread), task_queue=task_queue,
    )
    try:
        await wait_until_async(lambda: queue_state(temporal_client, thread), lambda s: s.running == f"assistant-run/m0-{tag}")
        one_more = await enqueue_run(temporal_client, small(assistant_id, thread, "last"), request_id=f"last-{tag}", task_queue=task_queue)
        assert one_more.receipt.position == MAX_WAITING and one_more.receipt.sequence == MAX_WAITING + 1  # type: ignore[union-attr]
        with pytest.raises(QueueFullError, match=f"{MAX_WAITING} requests wait"):
            await enqueue_run(temporal_client, small(assistant_id, thread, "too many"), request_id=f"over-{tag}", task_queue=task_queue)
        again = await enqueue_run(temporal_client, small(assistant_id, thread, "last"), request_id=f"last-{tag}", task_queue=task_queue)
        assert again.workflow_id == one_more.workflow_id  # a repeat takes no room: still answered
        state = await queue_state(temporal_client, thread)
        assert len(state.waiting) == MAX_WAITING and state.waiting[-1] == one_more.workflow_id
    finally:
        await queue.terminate("test over")  # and with it its child, the first run


async def wait_until_async(probe: Any, check: Any, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if check(await probe()):
                return
        except RPCError:
            pass
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)
