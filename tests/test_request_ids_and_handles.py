"""One request ID, one run, in the whole namespace; run handles that never wait on what
cannot happen (no such run, no worker to answer, a model API that is down)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from openai import OpenAI
from temporalio.client import Client

from durable_assistants.client import (
    IdempotencyConflictError,
    RunNotFoundError,
    check_request_id,
    enqueue_run,
    get_run,
    readable_request_id,
    run_workflow_id,
)
from durable_assistants.workflows.models import LiveSnapshot, MessageInput, RunRequest
from durable_assistants.workflows.thread_queue import queue_workflow_id
from tests.conftest import script
from tests.test_worker_runs import TOOLS, message

# Bounds for "answers at once": generous for a loaded 2-core machine, far below "forever".
ANSWERS_WITHIN = 20.0


def new_id(label: str) -> str:
    """Request IDs are unique in the whole namespace, which the test session shares."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]


async def executions(temporal_client: Client, workflow_id: str) -> int:
    """How many workflow executions (open or closed) carry ``workflow_id``; visibility lags a little."""
    count = 0
    for _ in range(20):
        count = len([e async for e in temporal_client.list_workflows(f"WorkflowId = '{workflow_id}'")])
        if count:
            return count
        await asyncio.sleep(0.25)
    return count


async def busy_thread(temporal_client: Client, task_queue: str, assistant_id: str, client: OpenAI) -> tuple[str, Any]:
    """A new thread whose first run keeps it busy for two seconds (a slow tool), so the next waits."""
    thread_id = client.beta.threads.create().id
    slow = script(rounds=[[{"name": "slow", "arguments": {"seconds": 2, "marker": ""}}]])
    blocker = RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[message(slow)])
    return thread_id, await enqueue_run(temporal_client, blocker, request_id=new_id("blocker"), task_queue=task_queue)


def runs_created(admin: httpx.Client) -> int:
    return sum(t.get("runs_created", 0) for t in admin.get("/stats").json()["threads"].values())


async def test_same_id_new_thread_then_naming_that_thread_is_the_same_run(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client
) -> None:
    request = RunRequest(assistant_id=assistant_id, messages=[message("hello")], tool_choice="none")
    request_id = new_id("retry-with-thread")
    first = await enqueue_run(temporal_client, request, request_id=request_id, task_queue=task_queue)
    result = await first.result()
    # The retrying caller learned the thread the first enqueue created, and names it now.
    again = await enqueue_run(
        temporal_client, request.model_copy(update={"thread_id": result.thread_id}), request_id=request_id, task_queue=task_queue
    )
    assert again.workflow_id == first.workflow_id
    assert (await again.result()).run_id == result.run_id
    assert await executions(temporal_client, first.workflow_id) == 1
    assert runs_created(admin) == 1


async def test_same_id_after_the_threads_queue_ended_is_the_same_run(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, admin: httpx.Client
) -> None:
    thread_id = client.beta.threads.create().id
    request = RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[message("hello")], tool_choice="none")
    request_id = new_id("after-idle")
    first = await enqueue_run(temporal_client, request, request_id=request_id, task_queue=task_queue)
    done = await first.result()
    # What an idle queue does after five minutes: end, forgetting the request IDs it saw.
    await temporal_client.get_workflow_handle(queue_workflow_id(thread_id)).terminate("as if idle")
    again = await enqueue_run(temporal_client, request, request_id=request_id, task_queue=task_queue)
    assert again.workflow_id == first.workflow_id and again.receipt is not None and again.receipt.duplicate
    assert (await again.result()).run_id == done.run_id
    assert await executions(temporal_client, first.workflow_id) == 1
    assert runs_created(admin) == 1


@pytest.mark.parametrize("on_thread", [False, True], ids=["new-thread", "on-a-thread"])
async def test_same_id_with_a_different_request_is_refused(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, admin: httpx.Client, on_thread: bool
) -> None:
    thread_id = client.beta.threads.create().id if on_thread else None
    request = RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[message("first")], tool_choice="none")
    request_id = new_id("conflict")
    first = await enqueue_run(temporal_client, request, request_id=request_id, task_queue=task_queue)
    other = request.model_copy(update={"messages": [message("something else")]})
    with pytest.raises(IdempotencyConflictError, match=f"'{request_id}' was already used for a different request"):
        await enqueue_run(temporal_client, other, request_id=request_id, task_queue=task_queue)
    # Nothing changed: the first run is the only one and says what it was asked.
    assert (await first.result()).final_text == "You said: first"
    assert await executions(temporal_client, first.workflow_id) == 1
    assert runs_created(admin) == 1


async def test_same_id_while_waiting_in_the_queue_with_a_different_request_is_refused(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI
) -> None:
    """The queue itself remembers fingerprints: the run has not started, so there is no memo to compare."""
    thread_id, first = await busy_thread(temporal_client, task_queue, assistant_id, client)
    waiting = RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[message("second")], tool_choice="none")
    request_id = new_id("waiting")
    queued = await enqueue_run(temporal_client, waiting, request_id=request_id, task_queue=task_queue)
    assert queued.receipt is not None and queued.receipt.position >= 1
    with pytest.raises(IdempotencyConflictError, match=f"'{request_id}' was already used for a different request"):
        await enqueue_run(temporal_client, waiting.model_copy(update={"temperature": 1.0}), request_id=request_id, task_queue=task_queue)
    again = await enqueue_run(temporal_client, waiting, request_id=request_id, task_queue=task_queue)  # the same request: fine
    assert again.workflow_id == queued.workflow_id
    assert [(await h.result()).status for h in (first, queued)] == ["completed", "completed"]


@pytest.mark.parametrize("method", ["result", "status", "cancel", "progress"])
async def test_a_run_that_does_not_exist_is_not_found_at_once(temporal_client: Client, method: str) -> None:
    handle = get_run(temporal_client, "assistant-run/typo")

    async def call() -> Any:
        if method == "progress":
            return [event async for event in handle.progress()]
        return await getattr(handle, method)()

    with pytest.raises(RunNotFoundError, match="no run with workflow ID 'assistant-run/typo'"):
        await asyncio.wait_for(call(), ANSWERS_WITHIN)


async def test_a_queued_run_is_found_in_its_queue_by_a_handle_from_get_run(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI
) -> None:
    thread_id, first = await busy_thread(temporal_client, task_queue, assistant_id, client)
    second = RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[message("next")], tool_choice="none")
    queued = await enqueue_run(temporal_client, second, request_id=new_id("second-in-line"), task_queue=task_queue)
    later = get_run(temporal_client, queued.workflow_id)  # no receipt: it looks through the running queues
    assert await later.status() == "queued"
    assert later.queue_id == queue_workflow_id(thread_id)
    assert (await later.result()).final_text == "You said: next"
    assert (await first.result()).status == "completed"


async def test_status_and_cancel_without_a_worker_answer_from_the_server(
    temporal_client: Client, task_queue: str, assistant_id: str
) -> None:
    """Nobody polls the run's task queue: status comes from describe, cancel returns at once."""
    handle = await enqueue_run(
        temporal_client, RunRequest(assistant_id=assistant_id, messages=[message("hi")]), request_id=new_id("no-worker"), task_queue=task_queue
    )
    started = time.monotonic()
    status = await asyncio.wait_for(handle.status(), ANSWERS_WITHIN)
    assert isinstance(status, LiveSnapshot) and status.source == "server"
    assert status.note == f"no worker is polling task queue {task_queue!r}"
    assert await asyncio.wait_for(handle.cancel(), ANSWERS_WITHIN) is False
    assert time.monotonic() - started < ANSWERS_WITHIN
    await temporal_client.get_workflow_handle(handle.workflow_id).terminate("test over")


async def test_status_shows_a_model_api_that_keeps_failing(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client
) -> None:
    """While the API answers 500, status names the pending activity, its attempts and the error."""
    admin.post("/faults", json={"operation": "runs.create", "action": "error", "status": 500}).raise_for_status()
    handle = await enqueue_run(
        temporal_client, RunRequest(assistant_id=assistant_id, messages=[message("hi")]), request_id=new_id("api-down"), task_queue=task_queue
    )
    pending = None
    for _ in range(80):
        status = await handle.status()
        assert isinstance(status, LiveSnapshot)
        pending = next((p for p in status.pending_activities if p.name == "start_run" and p.attempt >= 2 and p.last_failure), None)
        if pending:
            break
        await asyncio.sleep(0.25)
    assert pending is not None, "status never showed the failing start_run"
    assert "HTTP 500" in (pending.last_failure or "")
    await temporal_client.get_workflow_handle(handle.workflow_id).terminate("test over")


@pytest.mark.parametrize("where", ["a new thread", "a thread's queue"])
async def test_a_failed_run_raises_with_the_root_cause(where: str, temporal_client: Client, task_queue: str, workers: None, client: OpenAI) -> None:
    from durable_assistants.client import RunFailedError

    thread_id = client.beta.threads.create().id if where == "a thread's queue" else None
    handle = await enqueue_run(
        temporal_client, RunRequest(assistant_id="asst_missing", thread_id=thread_id, messages=[message("hi")]),
        request_id=new_id("missing-assistant"), task_queue=task_queue,
    )
    with pytest.raises(RunFailedError) as failed:
        await asyncio.wait_for(handle.result(), ANSWERS_WITHIN)
    assert "No assistant found with id 'asst_missing'" in str(failed.value)
    assert "\n" not in failed.value.reason
    # Findable although it failed before its API run existed: started with its attributes
    # (by enqueue_run, or by its thread's queue), in its first event.
    run = temporal_client.get_workflow_handle(handle.workflow_id)
    described = await run.describe()
    attributes = {pair.key.name: pair.value for pair in described.typed_search_attributes}
    assert attributes["AssistantId"] == "asst_missing" and attributes["RunStatus"] == "failed", attributes
    first = [e async for e in run.fetch_history_events()][0].workflow_execution_started_event_attributes
    at_start = {k: json.loads(v.data) for k, v in first.search_attributes.indexed_fields.items()}
    assert at_start["AssistantId"] == "asst_missing" and at_start["RunStatus"] == "starting", at_start
    if thread_id is not None:
        assert attributes["ThreadId"] == at_start["ThreadId"] == thread_id


async def test_run_workflow_ids_follow_the_request_id() -> None:
    assert run_workflow_id("order-1") == "assistant-run/order-1"


def test_a_run_with_no_request_id_gets_a_readable_unique_one() -> None:
    """The agent, the first words of the first message, a unique suffix: readable in the UI's list."""
    request = RunRequest(assistant_id="asst_abc", messages=[message("Plan my week, please! In Oslo")])
    first, second = readable_request_id(request), readable_request_id(request)
    assert re.fullmatch(r"asst_abc-plan-my-week-please-[0-9a-f]{8}", first) and first != second
    assert re.fullmatch(r"gpt-4o-[0-9a-f]{8}", readable_request_id(RunRequest(model="gpt-4o")))
    parts = RunRequest(model="gpt 4o/mini", messages=[MessageInput(content=[{"type": "text", "text": "Héllo wörld"}])])
    assert re.fullmatch(r"gpt-4o-mini-h-llo-w-rld-[0-9a-f]{8}", readable_request_id(parts))
    check_request_id(readable_request_id(parts))  # a valid request ID


async def test_a_queued_run_whose_queue_cannot_answer_is_still_queued_not_missing(
    temporal_client: Client, task_queue: str, emulator: Any, assistant_id: str, client: OpenAI
) -> None:
    """The worker goes away while a run waits in its thread's queue: the queue can't answer a
    query, but the handle enqueue_run gave knows that queue accepted it, so it is queued."""
    from openai import AsyncOpenAI

    from durable_assistants import worker
    from durable_assistants.tools import registry

    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    async with worker.WorkerGroup(worker.build_workers(temporal_client, model, registry, task_queue)):
        thread_id, first = await busy_thread(temporal_client, task_queue, assistant_id, client)
        waiting = RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[message("later")], tool_choice="none")
        queued = await enqueue_run(temporal_client, waiting, request_id=new_id("stranded"), task_queue=task_queue)
    await model.close()
    # No worker now: the queue's state query goes unanswered.
    assert await asyncio.wait_for(queued.status(), ANSWERS_WITHIN) == "queued"
    for workflow_id in (first.workflow_id, queue_workflow_id(thread_id)):  # the queued run never started
        await temporal_client.get_workflow_handle(workflow_id).terminate("test over")


def test_a_requests_fingerprint_leaves_out_what_is_at_its_default() -> None:
    """A field a later version adds, with a default, must not turn a retried request into a
    different one (an idempotency conflict across an upgrade): only what the caller set counts."""
    import hashlib

    from durable_assistants.client import request_fingerprint

    plain = RunRequest(assistant_id="asst_1", messages=[MessageInput(content="hi")])
    spelled_out = RunRequest(assistant_id="asst_1", messages=[MessageInput(content="hi")], mode="poll", approval={}, metadata=None)
    assert request_fingerprint(plain) == request_fingerprint(spelled_out)
    assert request_fingerprint(plain) == hashlib.sha256(b'{"assistant_id":"asst_1","messages":[{"content":"hi"}]}').hexdigest()
    assert request_fingerprint(plain) != request_fingerprint(plain.model_copy(update={"mode": "stream"}))
    # Where it runs is not part of it (a caller may name the thread the first enqueue created).
    assert request_fingerprint(plain) == request_fingerprint(plain.model_copy(update={"thread_id": "thread_1"}))
