"""Enqueueing from Python: idempotent request IDs, the per-thread queue, live progress,
status, cancellation and search attributes, against a real dev server and the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from durable_assistants import enqueue_run, worker
from durable_assistants.tools import registry
from durable_assistants.workflows.models import LiveSnapshot, RunRequest
from tests.apis import Api, Seen
from tests.conftest import script
from tests.test_worker_lifecycle import slow_round, wait_for
from tests.test_worker_runs import TOOLS, message


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]


async def test_same_request_id_is_one_run(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client
) -> None:
    threads_before = admin.get("/health").json()["threads"]
    request = RunRequest(assistant_id=assistant_id, messages=[message("hello")], tool_choice="none")
    first = await enqueue_run(temporal_client, request, request_id="req-1", task_queue=task_queue)
    again = await enqueue_run(temporal_client, request, request_id="req-1", task_queue=task_queue)
    assert first.workflow_id == again.workflow_id == "assistant-run/req-1"
    result = await first.result()
    late = await enqueue_run(temporal_client, request, request_id="req-1", task_queue=task_queue)  # after it finished
    assert (await late.result()).run_id == result.run_id and result.final_text == "You said: hello"
    assert admin.get("/health").json()["threads"] == threads_before + 1


async def test_progress_tells_the_whole_story_even_to_a_late_follower(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str
) -> None:
    rounds = [[{"name": "slow", "arguments": {"seconds": 0.6, "marker": ""}}, {"name": "structured", "arguments": {"n": 2}}]]
    request = RunRequest(
        assistant_id=assistant_id, messages=[message(script(rounds=rounds, reply="All done: {outputs}", chunk_chars=5))], mode="stream"
    )
    handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
    live: list[Any] = []

    async def follow() -> None:
        async for event in handle.progress():
            live.append(event)

    follower = asyncio.create_task(follow())
    result = await handle.result()
    await asyncio.wait_for(follower, 30)  # the iterator ends by itself once the run has closed
    late = [event async for event in handle.progress()]

    assert [e.model_dump() for e in late] == [e.model_dump() for e in live]
    statuses = [e.status for e in late if e.kind == "status"]
    assert statuses[0] == "requires_action" and statuses[-1] == "completed"
    started = [e.tool for e in late if e.kind == "tool_started"]
    finished = [e for e in late if e.kind == "tool_finished"]
    assert sorted(started) == ["slow", "structured"] and sorted(e.tool for e in finished) == ["slow", "structured"]
    slow = next(e for e in finished if e.tool == "slow")
    assert slow.attempt == 1 and slow.duration_seconds >= 0.6
    assert any(e.kind == "tool_progress" and e.tool == "slow" and e.progress["elapsed"] > 0 for e in late)
    assert "".join(e.text for e in late if e.kind == "text") == result.final_text


async def test_status_shows_pending_tools_and_cancel_stops_the_run(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, tmp_path
) -> None:
    marker = tmp_path / "started"
    only_slow = [[{"name": "slow", "arguments": {"seconds": 60, "marker": str(marker)}}]]
    request = RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=only_slow))])
    handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
    await wait_for(marker.exists, "the slow tool to start")
    status = await handle.status()
    assert isinstance(status, LiveSnapshot) and status.status == "requires_action" and status.round == 1
    assert [c.name for c in status.pending_tool_calls] == ["slow"] and status.pending_tool_calls[0].elapsed_seconds >= 0
    await handle.cancel()
    result = await handle.result()
    assert result.status == "cancelled"
    assert client.beta.threads.runs.retrieve(thread_id=result.thread_id, run_id=result.run_id).status == "cancelled"
    assert await handle.status() == "canceled"  # the workflow's own status is the outcome (Temporal spells it so)


async def test_runs_are_findable_by_search_attributes(api: Api, temporal_client: Client, task_queue: str, workers: None) -> None:
    rounds = [[{"name": "structured", "arguments": {"n": 1}}]]
    request = api.request([script(rounds=rounds)], context=api.new_context())
    handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
    result = await handle.result()

    async def found(query: str) -> list[str]:
        return [w.id async for w in temporal_client.list_workflows(query)]

    queries = [
        f'ThreadId = "{result.thread_id}" AND ToolNames = "structured"',  # the thread, or the conversation
        f'ApiRunId = "{result.run_id}" AND RunStatus = "completed"',  # the run, or the last response
    ]
    if request.assistant_id is not None:
        queries.append(f'AssistantId = "{request.assistant_id}"')
    for query in queries:
        await wait_for_async(lambda query=query: found(query), [handle.workflow_id])


async def wait_for_async(probe: Any, expected: Any, limit: float = 15.0) -> None:
    """Visibility is eventually consistent: poll until it shows what history already says."""
    deadline = asyncio.get_running_loop().time() + limit
    while (got := await probe()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {got!r}, expected {expected!r}"
        await asyncio.sleep(0.2)


async def test_fifty_callers_on_one_thread_run_one_at_a_time_in_order(
    api: Api, temporal_server, temporal_client: Client, task_queue: str, workers: None, client: OpenAI, admin: httpx.Client
) -> None:
    """A thread (Assistants) or a conversation (Responses) shared by 50 callers."""
    context = api.new_context()
    callers = [await Client.connect(temporal_server.address, data_converter=pydantic_data_converter) for _ in range(50)]

    async def caller(i: int) -> Any:
        request = api.request([f"caller {i}"], context=context, tool_choice="none")
        return await enqueue_run(callers[i], request, request_id=f"caller-{i}-{context}", task_queue=task_queue)

    handles = await asyncio.gather(*(caller(i) for i in range(50)))
    duplicate = await caller(7)  # a retrying caller
    results = await asyncio.gather(*(h.result() for h in handles))

    # The retry gets the first run: from the queue while it waits there (Temporal deduplicates
    # the update by its ID, the request ID), from the run itself once it has started.
    assert duplicate.workflow_id == handles[7].workflow_id
    assert duplicate.receipt.duplicate or duplicate.receipt.sequence == handles[7].receipt.sequence
    assert sorted(h.receipt.sequence for h in handles) == list(range(1, 51))
    assert all(r.status == "completed" for r in results)
    # Each run answered its own caller's message, and runs happened in arrival order.
    assert [r.final_text for r in results] == [f"You said: caller {i}" for i in range(50)]
    by_sequence = sorted(zip(handles, results, strict=True), key=lambda pair: pair[0].receipt.sequence)
    stats = admin.get("/stats").json()
    assert api.seen(stats, results[0]) == Seen(turns_created=50, user_messages=50, rounds_submitted=0)
    if api.name == "assistants":
        api_runs = [r.id for r in client.beta.threads.runs.list(thread_id=context, order="asc", limit=100)]
        assert api_runs == [r.run_id for _, r in by_sequence]
        assert stats["responses"].get("runs.create 400", 0) == 0 and stats["responses"].get("messages.create 400", 0) == 0
    else:
        items = client.conversations.items.list(context, order="asc", limit=100).data
        asked = [i.content[0].text for i in items if i.type == "message" and i.role == "user"]  # type: ignore[union-attr]
        # The conversation holds the callers' messages in the order their runs went.
        assert asked == [(r.final_text or "").removeprefix("You said: ") for _, r in by_sequence]
        assert stats["responses"].get("responses.create 400", 0) == 0  # never conversation_locked


async def test_thread_queue_continues_as_new_and_still_deduplicates(
    emulator: Any, assistant_id: str, client: OpenAI, admin: httpx.Client, task_queue: str
) -> None:
    from durable_assistants.devstack.temporal import TemporalDevServer
    from durable_assistants.workflows.thread_queue import queue_workflow_id

    thread = client.beta.threads.create()
    with TemporalDevServer(extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=30"]) as server:
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0)
        async with worker.WorkerGroup(worker.build_workers(temporal, model, registry, task_queue)):

            def request(i: int) -> RunRequest:
                return RunRequest(assistant_id=assistant_id, thread_id=thread.id, messages=[message(f"n{i}")], tool_choice="none")

            handles = [await enqueue_run(temporal, request(i), request_id=f"q-{i}-{thread.id}", task_queue=task_queue) for i in range(6)]
            results = [await h.result() for h in handles]
            queue_runs = [w async for w in temporal.list_workflows(f"WorkflowId = '{queue_workflow_id(thread.id)}'")]
            # The same request ID again, now that the queue lives in a later run of its workflow.
            again = await enqueue_run(temporal, request(0), request_id=f"q-0-{thread.id}", task_queue=task_queue)
        await model.close()

    assert [r.final_text for r in results] == [f"You said: n{i}" for i in range(6)]
    assert len(queue_runs) >= 2  # it continued as new
    assert again.receipt is not None and again.receipt.duplicate and again.workflow_id == handles[0].workflow_id
    assert admin.get("/stats").json()["threads"][thread.id]["runs_created"] == 6


async def test_a_run_waiting_for_its_turn_on_the_thread_says_queued(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, tmp_path
) -> None:
    thread = client.beta.threads.create()
    marker = tmp_path / "started"
    first = await enqueue_run(
        temporal_client,
        RunRequest(assistant_id=assistant_id, thread_id=thread.id, messages=[message(script(rounds=slow_round(1.5, marker)))]),
        task_queue=task_queue,
    )
    await wait_for(marker.exists, "the first run's slow tool")
    second = await enqueue_run(
        temporal_client,
        RunRequest(assistant_id=assistant_id, thread_id=thread.id, messages=[message("after you")], tool_choice="none"),
        task_queue=task_queue,
    )
    assert second.receipt is not None and second.receipt.position == 1
    assert await second.status() == "queued"
    assert (await first.result()).status == "completed"
    assert (await second.result()).final_text == "You said: after you"


def test_followers_drop_a_text_delta_a_resumed_stream_repeats() -> None:
    """A retried activity resumes the stream where its last heartbeat says, which can be a few
    deltas behind what it had published; the deltas carry their sequence, and repeats go."""
    from durable_assistants.client import is_repeat
    from durable_assistants.workflows.models import ProgressEvent

    def text(delta: str, run_id: str | None, sequence: int | None) -> ProgressEvent:
        return ProgressEvent(kind="text", at=0.0, text=delta, run_id=run_id, sequence=sequence)

    events = [
        text("a", "resp_1", 4), text("b", "resp_1", 5), text("c", "resp_1", 6),
        text("b", "resp_1", 5), text("c", "resp_1", 6), text("d", "resp_1", 7),  # the retry, resumed after 4
        text("x", "resp_2", 3),  # the next turn's response counts from its own start
        text("p", None, None), text("p", None, None),  # Assistants deltas carry no sequence: all kept
        ProgressEvent(kind="status", at=0.0, status="completed", run_id="resp_2"),
    ]
    seen: dict[str, int] = {}
    kept = [e for e in events if not is_repeat(e, seen)]
    assert "".join(e.text or "" for e in kept) == "abcdxpp"
    assert kept[-1].kind == "status"
