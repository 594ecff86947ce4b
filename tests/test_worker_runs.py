"""The run workflow end to end: a real Temporal dev server, the emulator over HTTP, the real
SDK, in-process workers that replay every workflow task (``max_cached_workflows=0``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

import durable_assistants.tools.examples  # noqa: F401
import tests.worker_tools  # noqa: F401  (registers the test tools)
from durable_assistants import enqueue_run, worker
from durable_assistants.activities.assistants import AGENT_TAG_KEY, AssistantsBackend
from durable_assistants.activities.progress import TEXT_BATCHES
from durable_assistants.activities.tools import PROGRESS_EVENT_SECONDS
from durable_assistants.tools import registry
from durable_assistants.workflows import search_attributes as sa
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult
from durable_assistants.workflows.run import AssistantRunWorkflow
from tests.apis import Api, Seen
from tests.conftest import OutcomeHandle, eventually, script, workflow_outcome
from tests.worker_tools import HEAVY_QUEUE

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
    """A run started directly (no queue); its handle's result() is the RunResult of any outcome."""
    return OutcomeHandle.of(client, await client.start_workflow(
        AssistantRunWorkflow.run, request, id=f"run-{uuid.uuid4()}", task_queue=task_queue, result_type=RunResult
    ))


def _async(probe: Any) -> Any:
    async def call() -> Any:
        return probe()
    return call


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
    mode: str, api: Api, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, client: OpenAI
) -> None:
    context = api.new_context()
    request = api.request(["Weather?\n" + TWO_ROUNDS], context=context, mode=mode)
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()

    assert result.status == "completed" and result.rounds == 2 and result.thread_id == context
    assert result.backend == api.name
    if api.name == "responses":
        assert len(set(result.response_ids)) == 3 and result.run_id == result.response_ids[-1]
        # Every turn's response carries the run's one tag.
        key = f"{handle.id}/{(await handle.describe()).run_id}"
        assert [client.responses.retrieve(r).metadata["durable_assistants_key"] for r in result.response_ids] == [key] * 3
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
    assert api.seen(stats, result) == Seen(turns_created=api.turns(2), user_messages=1, rounds_submitted=2)
    if api.name == "assistants":
        assert stats["threads"][context] == {"user_messages_created": 1, "runs_created": 1, "assistant_messages_created": 1}


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_inline_tools_run_in_the_model_activity_one_activity_per_round(
    mode: str, api: Api, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client
) -> None:
    """Round 1 is all inline (one retried inside), round 2 mixes an inline and a normal tool:
    the inline calls cost no activity of their own; the log, outputs and progress are as for
    any tool."""
    rounds = [
        [{"name": "inline_lookup", "arguments": {"key": "a", "fail_first": 0}},
         {"name": "inline_lookup", "arguments": {"key": "b", "fail_first": 1}}],
        [{"name": "inline_lookup", "arguments": {"key": "c", "fail_first": 5}}, {"name": "structured", "arguments": {"n": 2}}],
    ]
    context = api.new_context()
    handle = await start(temporal_client, task_queue, api.request([script(rounds=rounds, reply="done")], context=context, mode=mode))
    result = await handle.result()
    events = await history_events(handle)

    assert result.status == "completed" and result.rounds == 2 and result.final_text == "done"
    by_key = {json.loads(r.arguments).get("key"): r for r in result.tool_calls if r.name == "inline_lookup"}
    assert json.loads(by_key["a"].output_preview) == {"key": "a", "value": "A", "tries": 1} and by_key["a"].attempts == 1
    assert json.loads(by_key["b"].output_preview) == {"key": "b", "value": "B", "tries": 2} and by_key["b"].attempts == 2
    assert by_key["c"].error == "lookup of c failed (try 3)" and by_key["c"].attempts == 3  # its max_attempts, then an error output
    assert [r.round for r in result.tool_calls] == [1, 1, 2, 2]
    # One activity per round: the inline calls ran inside start_run and the first submit.
    assert scheduled_activities(events) == ["start_run", "submit_tool_outputs", "structured", "submit_tool_outputs"]
    outputs = api.tool_outputs_seen(result)
    assert json.loads(outputs[0]) == {"key": "a", "value": "A", "tries": 1}
    assert outputs[1] == '{"key": "b", "value": "B", "tries": 2}'
    stats = admin.get("/stats").json()
    assert api.seen(stats, result) == Seen(turns_created=api.turns(2), user_messages=1, rounds_submitted=2)


async def test_a_run_with_no_thread_sends_its_messages_once(
    api: Api, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, client: OpenAI
) -> None:
    """Assistants: a new thread holds the messages. Responses: a new conversation does (the
    default ``responses_state``), tagged with the run's key like the thread."""
    extra: dict[str, Any] = {"thread_metadata": {"team": "a"}} if api.name == "assistants" else {}
    request = api.request(["first", "second @ no script"], tool_choice="none", metadata={"source": "test"}, **extra)
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    assert result.status == "completed" and result.final_text == "You said: second @ no script"
    expected = ["create_thread", "start_run"] if api.name == "assistants" else ["start_run"]
    assert scheduled_activities(await history_events(handle)) == expected
    assert api.seen(admin.get("/stats").json(), result) == Seen(turns_created=1, user_messages=2, rounds_submitted=0)
    tag = api.tag_of(result)
    assert tag["source"] == "test" and tag["durable_assistants_key"].startswith(handle.id)
    if api.name == "assistants":
        assert result.thread_id is not None and client.beta.threads.retrieve(result.thread_id).metadata["team"] == "a"
    else:
        assert result.thread_id is not None and result.thread_id.startswith("conv_") and result.response_ids == [result.run_id]
        conversation = client.conversations.retrieve(result.thread_id)
        assert conversation.metadata["durable_assistants_key"].startswith(handle.id)  # type: ignore[index]
        assert conversation.metadata["source"] == "test"  # type: ignore[index]


async def test_one_inline_agent_request_runs_on_either_api_by_configuration(
    api: Api, temporal_client: Client, task_queue: str, workers: None, client: OpenAI, model: AsyncOpenAI
) -> None:
    """No API field at all: model, instructions, messages. The worker's default backend (here the
    ``api`` under test) decides; on Assistants the worker makes the agent's assistant once."""
    request = RunRequest(
        model="gpt-4o",
        instructions="Answer with the tools' results.",
        messages=[message(script(rounds=[[{"name": "structured", "arguments": {"n": 2}}]], reply="Done:\n{outputs}"))],
    )
    first = await start(temporal_client, task_queue, request)
    result = await first.result()
    again = await (await start(temporal_client, task_queue, request)).result()

    for run in (result, again):
        assert run.status == "completed" and run.backend == api.name and run.rounds == 1
        assert run.final_text is not None and run.final_text.startswith("Done:\n- structured: ")
    assert scheduled_activities(await history_events(first)) == ["start_run", "structured", "submit_tool_outputs"]
    if api.name == "assistants":
        assert result.thread_id is not None and result.thread_id != again.thread_id  # a new thread each
        made = [a for a in client.beta.assistants.list(limit=100).data if (a.metadata or {}).get(AGENT_TAG_KEY)]
        assert len(made) == 1  # one assistant for the agent, reused
        assert made[0].model == "gpt-4o" and made[0].instructions == "Answer with the tools' results."
        assert sorted(t.function.name for t in made[0].tools) == sorted(t.name for t in registry)  # type: ignore[union-attr]
        run = client.beta.threads.runs.retrieve(thread_id=result.thread_id, run_id=result.run_id)
        assert run.assistant_id == made[0].id
        # Another worker (nothing remembered) finds the same assistant by its tag.
        assert await AssistantsBackend(model, registry).assistant_for(request) == made[0].id
    else:
        assert result.thread_id is not None and result.thread_id != again.thread_id  # a new conversation each
        assert len(result.response_ids) == 2


async def test_tool_problems_become_error_outputs_the_model_sees(
    api: Api, temporal_client: Client, task_queue: str, workers: None
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
    request = api.request([script(rounds=[calls])], output_cap_chars=100)
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

    # What the model received, read back from the API (the run's step; the next response's input).
    outputs = api.tool_outputs_seen(result)
    assert outputs[1] == "Error: tool always_fails failed: disk full"
    assert outputs[3].startswith("Error: unknown tool 'no_such_tool'")
    assert len(outputs[7]) == 100 and outputs[7].endswith("…[truncated 4900 of 5000 characters]"[-30:])
    # Unknown tools and unparsable arguments never reach an activity.
    activities = scheduled_activities(await history_events(handle))
    assert "no_such_tool" not in activities and activities.count("get_weather") == 1


async def test_run_status_tells_running_tools_from_outputs_waiting_to_be_submitted(
    api: Api, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, tmp_path: Path
) -> None:
    """RunStatus: running_tools while the round's tools run; requires_action once their outputs
    wait to be submitted (here: the model API refuses the submit for a while)."""
    marker = tmp_path / "started"
    submit = "runs.submit_tool_outputs" if api.name == "assistants" else "responses.create"
    rounds = [[{"name": "slow", "arguments": {"seconds": 3, "marker": str(marker)}}]]
    handle = await start(temporal_client, task_queue, api.request([script(rounds=rounds, reply="done")]))

    async def run_status() -> Any:
        return {p.key.name: p.value for p in (await handle.describe()).typed_search_attributes}.get("RunStatus")

    await eventually(_async(marker.exists), bool, "the tool to start")
    await eventually(run_status, lambda s: s == "running_tools", "RunStatus running_tools")
    # Submits fail from now on (for Responses the next turn's create is the submit; the first turn's is done).
    admin.post("/faults", json={"operation": submit, "rate": 1.0, "status": 500}).raise_for_status()
    await eventually(run_status, lambda s: s == "requires_action", "RunStatus requires_action")
    admin.delete("/faults").raise_for_status()
    result = await handle.result()
    assert result.status == "completed" and result.final_text == "done"
    assert await run_status() == "completed"


@pytest.mark.parametrize(("tool_name", "override"), [("critical", None), ("always_fails", "fail_run")])
async def test_fail_run_policy_stops_the_run(
    tool_name: str, override: str | None, api: Api, temporal_client: Client, task_queue: str, workers: None
) -> None:
    rounds = [[{"name": tool_name, "arguments": {"reason": "boom"}}, {"name": "structured", "arguments": {"n": 1}}]]
    context = api.new_context()
    request = api.request([script(rounds=rounds)], context=context, tool_failure=override)
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    assert result.status == "failed" and result.failure == f"tool {tool_name} failed: boom"
    assert api.api_status(result) == api.status_after_stop
    # The workflow's status is the outcome: Failed, the RunResult in the failure's details.
    status, failure_type, details = await workflow_outcome(temporal_client, handle.id)
    assert (status, failure_type) == ("FAILED", "RunFailed")
    assert details is not None and RunResult.model_validate(details) == result
    described = await handle.describe()
    assert {p.key.name: p.value for p in described.typed_search_attributes}["RunStatus"] == "failed"
    # Assistants: the run is cancelled. Responses: the response had ended, but the
    # conversation gets an output for each call it left unanswered.
    assert scheduled_activities(await history_events(handle)).count("cancel_run") == 1
    # Either way the thread or conversation is left fit for the next run.
    after = await (await start(temporal_client, task_queue, api.request([script(reply="still here")], context=context))).result()
    assert after.status == "completed" and after.final_text == "still here"


async def test_tool_on_its_own_task_queue(api: Api, temporal_client: Client, task_queue: str, workers: None) -> None:
    request = api.request([script(rounds=[[{"name": "heavy", "arguments": {"n": 21}}]])])
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
    ("api", "operation", "fault"),
    [
        ("assistants", "runs.create", {"action": "drop", "when": "after"}),
        ("assistants", "runs.create", {"action": "delay", "delay_seconds": 6, "when": "after"}),  # past the client's 5 s timeout
        ("assistants", "messages.create", {"action": "error", "status": 500, "when": "after"}),
        ("assistants", "runs.submit_tool_outputs", {"action": "drop", "when": "after"}),
        ("assistants", "runs.retrieve", {"action": "error", "status": 429, "retry_after_ms": 300}),
        # The first turn's create took effect but its reply was lost: the retry finds the
        # message in the conversation after the recorded head and adopts that response's outcome.
        ("responses", "responses.create", {"action": "drop", "when": "after"}),
        ("responses", "responses.create", {"action": "delay", "delay_seconds": 6, "when": "after"}),
        # The round's outputs landed (reply lost): found by call_id, not sent again.
        ("responses", "responses.create", {"action": "drop", "when": "after", "nth": 2}),
        # A read fails after the create: the retry adopts the response ID its heartbeat recorded.
        ("responses", "responses.retrieve", {"action": "error", "status": 429, "retry_after_ms": 300}),
        ("responses", "conversations.items.list", {"action": "error", "status": 500}),
    ],
    indirect=["api"],
)
async def test_retried_activities_never_duplicate_messages_runs_or_submits(
    api: Api,
    operation: str,
    fault: dict[str, Any],
    temporal_client: Client,
    task_queue: str,
    workers: None,
    admin: httpx.Client,
) -> None:
    context = api.new_context()
    admin.post("/faults", json={"operation": operation, "nth": 1, **fault}).raise_for_status()
    rounds = [[{"name": "structured", "arguments": {"n": 2}}]]
    request = api.request(["a", script(rounds=rounds)], context=context)
    result = await (await start(temporal_client, task_queue, request)).result()

    assert result.status == "completed"
    assert result.final_text is not None and "squares" in result.final_text
    stats = admin.get("/stats").json()
    assert stats["faults_fired"] == {operation: 1}
    assert api.seen(stats, result) == Seen(turns_created=api.turns(1), user_messages=2, rounds_submitted=1)
    if operation == "runs.submit_tool_outputs":
        # The retry's submit is refused (the first landed) and recognised as done.
        assert stats["runs"][result.run_id]["submits_rejected"] == 1
    if api.name == "responses":
        # No item went into the conversation twice.
        assert stats["threads"][context]["items_added"] == 5  # two messages, the call, its output, the reply


async def test_a_stream_cut_mid_turn_is_resumed_without_repeating_text(
    api: Api, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client
) -> None:
    """Both in the same activity attempt. Responses: the stream is read again after the last
    event seen (``starting_after``). Assistants (a run stream cannot be resumed): the run the
    stream announced is polled to its end."""
    create = "runs.create" if api.name == "assistants" else "responses.create"
    admin.post("/faults", json={"operation": create, "nth": 1, "action": "cut", "after_events": 6}).raise_for_status()
    reply = "The quick brown fox jumps over the lazy dog, twice: the quick brown fox jumps over the lazy dog."
    request = api.request([script(reply=reply, chunk_chars=4)], mode="stream", tool_choice="none")
    handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
    result = await handle.result()
    texts = [e async for e in handle.progress() if e.kind == "text"]
    streamed = "".join(e.text or "" for e in texts)

    assert result.status == "completed" and result.final_text == reply
    assert reply.startswith(streamed)  # never a delta twice
    stats = admin.get("/stats").json()
    assert stats["faults_fired"] == {create: 1}
    assert api.seen(stats, result).turns_created == 1
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in await history_events(temporal_client.get_workflow_handle(handle.workflow_id))
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert attempts and set(attempts) == {1}  # nothing was retried
    if api.name == "assistants":
        assert stats["requests"]["runs.retrieve"] >= 1
    else:
        assert streamed == reply  # every delta, once: the rest came from the resumed stream
        assert {e.run_id for e in texts} == {result.run_id}
        sequences = [e.sequence for e in texts]
        assert all(isinstance(n, int) for n in sequences) and sequences == sorted(set(sequences))  # type: ignore[type-var]
        assert stats["requests"]["responses.retrieve"] >= 1


async def test_a_long_streamed_reply_costs_a_bounded_number_of_signals(
    api: Api, temporal_client: Client, task_queue: str, workers: None
) -> None:
    """Text batches are paced (activities/progress.py): an 8 s reply, which at a flat 250 ms
    cost 32 signals (each also a workflow task), costs at most TEXT_BATCHES + 1 of them, and
    still streams live: several batches reach the workflow before the turn ends."""
    reply = "Streamed slowly, word by word. " * 16  # 496 characters at 60 a second
    request = api.request([script(reply=reply, chunk_chars=4, chars_per_second=60)], mode="stream", tool_choice="none")
    handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
    result = await handle.result()
    texts = [e async for e in handle.progress() if e.kind == "text"]

    assert result.status == "completed" and result.final_text == reply
    assert "".join(e.text or "" for e in texts) == reply and len(texts) == len(reply) // 4  # every delta, once
    events = await history_events(temporal_client.get_workflow_handle(handle.workflow_id))
    signals = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    start = next(
        e.event_id for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "start_run"
    )
    turn_ended = next(
        e.event_id for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id == start
    )
    assert 3 <= len(signals) <= TEXT_BATCHES + 1, [e.event_time.ToDatetime() for e in signals]
    assert len([e for e in signals if e.event_id < turn_ended]) >= 3  # live, not all at the end


async def test_a_quick_streamed_turns_text_comes_with_its_result_not_as_a_signal(
    api: Api, temporal_client: Client, task_queue: str, workers: None
) -> None:
    """A turn that ends before the first text batch is due hands its text back with the
    activity's result: followers get every delta, and the run has no signal (and no workflow
    task) for it. Before, the text went as a signal just before the result."""
    reply = "A quick reply in a few deltas."
    request = api.request([script(reply=reply, chunk_chars=4)], mode="stream", tool_choice="none")
    handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
    result = await handle.result()
    texts = [e async for e in handle.progress() if e.kind == "text"]

    assert result.final_text == reply and "".join(e.text or "" for e in texts) == reply
    events = await history_events(temporal_client.get_workflow_handle(handle.workflow_id))
    assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]


async def test_a_tool_reporting_progress_often_costs_few_history_events(
    temporal_client: Client, task_queue: str, workers: None
) -> None:
    """`slow` reports progress every 50 ms for 7 s. Its heartbeats carry every report to the
    UI at once; followers get the newest every PROGRESS_EVENT_SECONDS and the last one at the
    end: a handful of signals, where each report once cost one (about 30 here)."""
    rounds = [[{"name": "slow", "arguments": {"seconds": 7, "marker": ""}}]]
    request = RunRequest(backend="responses", model="gpt-4o", messages=[message(script(rounds=rounds))])
    handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
    result = await handle.result()
    assert result.status == "completed" and result.tool_calls[0].output_preview == "slept 7.0"
    progress = [e async for e in handle.progress() if e.kind == "tool_progress"]
    assert 2 <= len(progress) <= 7 / PROGRESS_EVENT_SECONDS + 2, [e.progress for e in progress]
    assert progress[-1].progress["elapsed"] >= 6.9  # the last report, whatever the pace
    events = await history_events(temporal_client.get_workflow_handle(handle.workflow_id))
    signals = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert len(signals) <= 7 / PROGRESS_EVENT_SECONDS + 2


async def test_a_lost_create_reply_on_a_response_chain_leaves_one_orphan(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, client: OpenAI
) -> None:
    """What is NOT guaranteed (README) when a run asks for a chain: with no conversation to
    inspect, a create whose reply was lost is created again. The run is still right; the first
    response is an orphan branch."""
    admin.post("/faults", json={"operation": "responses.create", "nth": 1, "action": "drop", "when": "after"}).raise_for_status()
    request = RunRequest(
        backend="responses", model="gpt-4o", responses_state="chain",
        messages=[message(script(rounds=[[{"name": "structured", "arguments": {"n": 2}}]]))],
    )
    result = await (await start(temporal_client, task_queue, request)).result()
    assert result.status == "completed" and result.rounds == 1
    created = [rid for rid, c in admin.get("/stats").json()["runs"].items() if c.get("responses_created")]
    orphans = sorted(set(created) - set(result.response_ids))
    assert len(created) == 3 and len(orphans) == 1
    orphan = client.responses.retrieve(orphans[0])
    assert orphan.status == "completed" and orphan.previous_response_id is None
    assert result.thread_id is None


async def test_a_lost_create_reply_on_a_new_response_run_makes_no_second_response(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, client: OpenAI
) -> None:
    """The default for a run that continues nothing: a conversation of its own. The first
    create's reply is lost (its response runs), and so is the reply of the conversation's
    create: the retry finds its input in the recorded conversation and adopts that response's
    outcome; the lost conversation is an empty orphan. Every response belongs to the run."""
    conversations_before = admin.get("/health").json()["conversations"]
    for operation in ("conversations.create", "responses.create"):
        admin.post("/faults", json={"operation": operation, "nth": 1, "action": "drop", "when": "after"}).raise_for_status()
    request = RunRequest(backend="responses", model="gpt-4o", messages=[message(script(rounds=[[{"name": "structured", "arguments": {"n": 2}}]]))])
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    assert result.status == "completed" and result.rounds == 1
    stats = admin.get("/stats").json()
    assert stats["faults_fired"] == {"conversations.create": 1, "responses.create": 1}
    created = [rid for rid, c in stats["runs"].items() if c.get("responses_created")]
    assert len(created) == 2  # one per turn, no orphan
    # The adopted turn's response ID is not known (no API lists responses; its outcome came from
    # the items): absent, not a placeholder, in the result and in the search attributes.
    assert set(result.response_ids) <= set(created) and len(result.response_ids) == 1, result.response_ids
    assert result.run_id == result.response_ids[-1]
    assert (await handle.describe()).typed_search_attributes.get(sa.RUN_ID) == result.run_id
    assert [t.id for t in result.cost.turns] == [None, result.run_id] or [t.id for t in result.cost.turns] == [result.run_id], result.cost
    items = client.conversations.items.list(result.thread_id, order="asc", limit=100).data  # type: ignore[arg-type]
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message"]
    # Two conversations: the run's, and an empty one whose create reply was lost.
    assert admin.get("/health").json()["conversations"] == conversations_before + 2


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
        (RunRequest(messages=[message("hi")]), "the assistants backend needs an assistant_id, or a model"),
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
