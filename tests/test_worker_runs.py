"""The run workflow end to end: a real Temporal dev server, the emulator over HTTP, the real
SDK, in-process workers that replay every workflow task (``max_cached_workflows=0``)."""

from __future__ import annotations

import json
import uuid
from typing import Any, AsyncIterator

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

import tests.worker_tools  # noqa: F401  (registers the test tools)
import tools.examples  # noqa: F401
import worker
from tests.conftest import script
from tests.worker_tools import HEAVY_QUEUE
from tools import registry
from workflows.models import MessageInput, RunRequest, RunResult
from workflows.run import AssistantRunWorkflow

TOOLS = [t.schema() for t in registry]


@pytest.fixture
async def model(emulator) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    yield client
    await client.close()


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"max_cached_workflows": 0}  # every workflow task replays: non-determinism shows at once


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", name="worker-test", tools=TOOLS).id  # type: ignore[arg-type]


async def start(client: Client, task_queue: str, request: RunRequest | dict[str, Any]) -> WorkflowHandle[Any, RunResult]:
    return await client.start_workflow(
        AssistantRunWorkflow.run, request, id=f"run-{uuid.uuid4()}", task_queue=task_queue, result_type=RunResult
    )


async def history_events(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return (await handle.fetch_history()).events


def scheduled_activities(events: list[Any]) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


def message(content: str) -> MessageInput:
    return MessageInput(content=content)


TWO_ROUNDS = script(
    rounds=[
        [{"name": "get_weather", "arguments": {"city": "Oslo"}, "count": 3}, {"name": "city_population", "arguments": {"city": "Oslo"}}],
        [{"name": "convert_temperature", "arguments": {"value": 20, "to": "fahrenheit"}, "count": 2}],
    ],
    reply="Report:\n{outputs}",
)


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_multi_round_parallel_run_costs_one_activity_per_step(
    mode: str, temporal_client: Client, task_queue: str, workers: None, client: OpenAI, assistant_id: str, admin: httpx.Client
) -> None:
    thread = client.beta.threads.create()
    request = RunRequest(assistant_id=assistant_id, thread_id=thread.id, messages=[message("Weather?\n" + TWO_ROUNDS)], mode=mode)  # type: ignore[arg-type]
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()

    assert result.status == "completed" and result.rounds == 2 and result.thread_id == thread.id
    assert [r.name for r in result.tool_calls] == ["get_weather"] * 3 + ["city_population"] + ["convert_temperature"] * 2
    assert [r.round for r in result.tool_calls] == [1, 1, 1, 1, 2, 2]
    assert all(r.attempts == 1 and r.error is None for r in result.tool_calls)
    assert result.tool_calls[4].output_preview == "68.0"
    assert result.final_text is not None and result.final_text.startswith("Report:\n- get_weather: {")
    assert result.final_text.count("- convert_temperature: 68.0") == 2
    assert result.message_ids and result.usage is not None and result.usage.total_tokens > 0

    events = await history_events(handle)
    # 1 start + rounds × (tools + 1): 1 + (4 + 1) + (2 + 1); no timer, no activity per poll.
    assert scheduled_activities(events) == (
        ["start_run"] + ["get_weather"] * 3 + ["city_population", "submit_tool_outputs"]
        + ["convert_temperature"] * 2 + ["submit_tool_outputs"]
    )
    assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    summaries = [e.user_metadata.summary.data for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert any(b'get_weather({\\"city\\":\\"Oslo\\"})' in s or b'get_weather({"city":"Oslo"})' in s for s in summaries)

    stats = admin.get("/stats").json()
    assert stats["threads"][thread.id] == {"user_messages_created": 1, "runs_created": 1, "assistant_messages_created": 1}
    assert stats["runs"][result.run_id]["submits_accepted"] == 2


async def test_new_thread_gets_the_messages_once(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client, client: OpenAI
) -> None:
    request = RunRequest(
        assistant_id=assistant_id,
        messages=[message("first"), message("second @ no script")],
        tool_choice="none",
        thread_metadata={"team": "a"},
        metadata={"source": "test"},
    )
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    assert result.status == "completed" and result.final_text == "You said: second @ no script"
    assert scheduled_activities(await history_events(handle)) == ["create_thread", "start_run"]
    assert admin.get("/stats").json()["threads"][result.thread_id]["user_messages_created"] == 2
    assert client.beta.threads.retrieve(result.thread_id).metadata["team"] == "a"
    run = client.beta.threads.runs.retrieve(thread_id=result.thread_id, run_id=result.run_id)
    assert run.metadata["source"] == "test" and run.metadata["durable_assistants_key"].startswith(handle.id)


async def test_tool_problems_become_error_outputs_the_model_sees(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI
) -> None:
    calls = [
        {"name": "flaky", "arguments": {"succeed_on_attempt": 3}},
        {"name": "always_fails", "arguments": {"reason": "disk full"}},
        {"name": "permanent", "arguments": {"reason": "account closed"}},
        {"name": "no_such_tool", "arguments": {}},
        {"name": "get_weather", "raw_arguments": "{\"city\": "},
        {"name": "get_weather", "arguments": {"town": "Oslo"}},
        {"name": "structured", "arguments": {"n": 3}},
        {"name": "big_output", "arguments": {"size": 5000}},
    ]
    request = RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=[calls]))], output_cap_chars=100)
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    assert result.status == "completed"
    by_name = {(r.name, r.arguments): r for r in result.tool_calls}
    records = result.tool_calls
    assert records[0].attempts == 3 and records[0].output_preview == "ok on attempt 3" and records[0].error is None
    assert records[1].attempts == 2 and records[1].error == "disk full"
    assert records[2].attempts == 1 and records[2].error == "permanent: account closed"
    assert records[3].error.startswith("unknown tool 'no_such_tool'. Available tools: ") and records[3].attempts == 0
    assert "not a JSON object" in records[4].error and records[4].attempts == 0
    assert records[5].error.startswith("invalid arguments for get_weather: city: Field required")
    assert json.loads(records[6].output_preview) == {"n": 3, "squares": [0, 1, 4]}
    assert len(by_name[("big_output", '{"size":5000}')].output_preview) <= 100

    # What the model received, read back from the run's tool_calls step.
    steps = client.beta.threads.runs.steps.list(thread_id=result.thread_id, run_id=result.run_id, order="asc").data
    outputs = [c.function.output for c in steps[0].step_details.tool_calls]
    assert outputs[1] == "Error: tool always_fails failed: disk full"
    assert outputs[3].startswith("Error: unknown tool 'no_such_tool'")
    assert len(outputs[7]) == 100 and outputs[7].endswith("…[truncated 4900 of 5000 characters]"[-30:])
    # Unknown tools and unparsable arguments never reach an activity.
    activities = scheduled_activities(await history_events(handle))
    assert "no_such_tool" not in activities and activities.count("get_weather") == 1


@pytest.mark.parametrize(("tool_name", "override"), [("critical", None), ("always_fails", "fail_run")])
async def test_fail_run_policy_stops_the_run(
    tool_name: str, override: str | None, temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI
) -> None:
    rounds = [[{"name": tool_name, "arguments": {"reason": "boom"}}, {"name": "structured", "arguments": {"n": 1}}]]
    request = RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=rounds))], tool_failure=override)  # type: ignore[arg-type]
    result = await (await start(temporal_client, task_queue, request)).result()
    assert result.status == "failed" and result.failure == f"tool {tool_name} failed: boom"
    api_run = client.beta.threads.runs.retrieve(thread_id=result.thread_id, run_id=result.run_id)
    assert api_run.status == "cancelled"


async def test_tool_on_its_own_task_queue(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str
) -> None:
    request = RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=[[{"name": "heavy", "arguments": {"n": 21}}]]))])
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    assert result.tool_calls[0].output_preview == "42"
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in await history_events(handle)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [a.task_queue.name for a in scheduled if a.activity_type.name == "heavy"] == [HEAVY_QUEUE]


@pytest.mark.parametrize(
    ("operation", "fault"),
    [
        ("runs.create", {"action": "drop", "when": "after"}),
        ("runs.create", {"action": "delay", "delay_seconds": 6, "when": "after"}),  # beyond the client's 5 s timeout
        ("messages.create", {"action": "error", "status": 500, "when": "after"}),
        ("runs.submit_tool_outputs", {"action": "drop", "when": "after"}),
        ("runs.retrieve", {"action": "error", "status": 429, "retry_after_ms": 300}),
    ],
)
async def test_retried_activities_never_duplicate_messages_runs_or_submits(
    operation: str,
    fault: dict[str, Any],
    temporal_client: Client,
    task_queue: str,
    workers: None,
    assistant_id: str,
    client: OpenAI,
    admin: httpx.Client,
) -> None:
    thread = client.beta.threads.create()
    admin.post("/faults", json={"operation": operation, "nth": 1, **fault}).raise_for_status()
    rounds = [[{"name": "structured", "arguments": {"n": 2}}]]
    request = RunRequest(
        assistant_id=assistant_id, thread_id=thread.id, messages=[message("a"), message(script(rounds=rounds))]
    )
    result = await (await start(temporal_client, task_queue, request)).result()

    assert result.status == "completed"
    stats = admin.get("/stats").json()
    assert stats["faults_fired"] == {operation: 1}
    assert stats["threads"][thread.id]["runs_created"] == 1
    assert stats["threads"][thread.id]["user_messages_created"] == 2
    assert stats["runs"][result.run_id]["submits_accepted"] == 1
    if operation == "runs.submit_tool_outputs":
        # The retry's submit is refused (the first landed) and recognised as done.
        assert stats["runs"][result.run_id]["submits_rejected"] == 1


async def test_bad_requests_fail_fast_before_anything_is_created(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client
) -> None:
    threads_before = admin.get("/health").json()["threads"]
    cases = [
        (RunRequest(assistant_id="asst_missing", messages=[message("hi")]), "No assistant found with id 'asst_missing'"),
        (RunRequest(assistant_id=assistant_id, thread_id="thread_missing", messages=[message("hi")]), "No thread found with id 'thread_missing'"),
        ({"assistant_id": assistant_id, "temperature": 9}, "temperature"),
        ({"assistant": "typo"}, "Extra inputs are not permitted"),
        ({"assistant_id": assistant_id, "conversation_id": "conv_1"}, "a request speaks one of them"),
        ({"backend": "responses", "messages": [{"content": "hi"}]}, "needs a model or a stored prompt"),
        # Names no API: the worker's default (assistants) takes it, and says what is missing.
        (RunRequest(model="gpt-4o", messages=[message("hi")]), "the assistants backend needs an assistant_id"),
    ]
    for request, fragment in cases:
        handle = await start(temporal_client, task_queue, request)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError), cause
        assert fragment in str(cause.message), cause.message
        if isinstance(request, RunRequest):
            assert cause.non_retryable
    assert admin.get("/health").json()["threads"] == threads_before


async def test_a_worker_for_just_the_heavy_queue(
    temporal_client: Client, model: AsyncOpenAI, task_queue: str, assistant_id: str, admin
) -> None:
    main_only = worker.build_workers(temporal_client, model, registry, task_queue, queues=[task_queue])
    heavy_only = worker.build_workers(temporal_client, model, registry, task_queue, queues=[HEAVY_QUEUE])
    assert [w.task_queue for w in main_only] == [task_queue] and [w.task_queue for w in heavy_only] == [HEAVY_QUEUE]
    with pytest.raises(ValueError, match="no registered tool uses task queue\\(s\\) nowhere"):
        worker.build_workers(temporal_client, model, registry, task_queue, queues=["nowhere"])

    request = RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=[[{"name": "heavy", "arguments": {"n": 5}}]]))])
    async with worker.WorkerGroup(main_only + heavy_only):
        result = await (await start(temporal_client, task_queue, request)).result()
    assert result.tool_calls[0].output_preview == "10"
