"""Servers that are not OpenAI: the emulator's compatibility switches, and the worker against them.

An independent Assistants implementation differs from OpenAI in ways the worker must survive
(issue 13, section 4; DESIGN.md, "Servers differ"). Each way is an emulator switch, off by
default (``compat`` in its config, ``--compat NAME`` on its command line; docs/emulator.md).
The first tests check that each switch does what it says on the wire; the rest run real
workers (Temporal dev server, the emulator over HTTP, the real SDK) against them and check,
from the emulator's counters, that each run ends as it should: one API run, one accepted
submit per round and no submit sent twice, tools run once; a cancel at ``requires_action``
ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from durable_assistants.activities import assistants as assistants_activities
from durable_assistants.emulator.config import COMPAT_SWITCHES
from durable_assistants.emulator.server import build_parser, compat_from_args, config_from_args
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult
from tests.conftest import answer_all, script
from tests.test_worker_lifecycle import slow_round, wait_for
from tests.test_worker_runs import TOOLS, start

pytestmark = pytest.mark.server  # one test starts the CLI as a process

REPO = Path(__file__).parent.parent
# Long enough for anything this file runs; the old worker waited forever in some of these.
ENDS_WITHIN = 45.0

TWO_ROUNDS = script(
    rounds=[
        [{"name": "get_weather", "arguments": {"city": "Oslo"}, "count": 2}],
        [{"name": "convert_temperature", "arguments": {"value": 20, "to": "fahrenheit"}}],
    ],
    reply="Report:\n{outputs}",
)
TWO_ROUNDS_TOOLS = ["get_weather", "get_weather", "convert_temperature"]


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def plain(emulator: Any, admin: httpx.Client) -> Iterator[OpenAI]:
    """An SDK client that does not check bodies against OpenAI's spec: these switches break it on purpose."""
    with OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", name="compat-test", tools=TOOLS).id  # type: ignore[arg-type]


def switch_on(admin: httpx.Client, *names: str, **settings: Any) -> None:
    admin.patch("/config", json={"compat": dict.fromkeys(names, True), **settings}).raise_for_status()


def request(assistant_id: str, text: str, **fields: Any) -> RunRequest:
    return RunRequest(assistant_id=assistant_id, messages=[MessageInput(content=text)], **fields)


async def ended(handle: WorkflowHandle[Any, RunResult], within: float = ENDS_WITHIN) -> RunResult:
    """The run's result; a run still open after ``within`` seconds fails the test (and is terminated)."""
    try:
        return await asyncio.wait_for(handle.result(), within)
    except TimeoutError:
        await handle.terminate(reason="test_compat_servers: the run did not end in time")
        raise AssertionError(f"the run did not end within {within:g} s") from None


def counters(admin: httpx.Client, result: RunResult) -> dict[str, int]:
    stats = admin.get("/stats").json()
    assert result.thread_id is not None
    run = stats["runs"].get(result.run_id, {})
    return {
        "runs_created": stats["threads"][result.thread_id].get("runs_created", 0),
        "user_messages": stats["threads"][result.thread_id].get("user_messages_created", 0),
        "submit_requests": stats["requests"].get("runs.submit_tool_outputs", 0),
        "submits_accepted": run.get("submits_accepted", 0),
        "submits_rejected": run.get("submits_rejected", 0),
    }


def assert_two_rounds_done_once(result: RunResult) -> None:
    assert result.status == "completed", result.failure
    assert result.rounds == 2
    assert [r.name for r in result.tool_calls] == TWO_ROUNDS_TOOLS  # each tool ran for one round, once
    assert [r.round for r in result.tool_calls] == [1, 1, 2]
    assert all(r.attempts == 1 and r.error is None for r in result.tool_calls)
    assert result.final_text is not None and result.final_text.startswith("Report:\n")
    assert result.final_text.count("- convert_temperature: 68.0") == 1


async def activity_attempts(handle: WorkflowHandle[Any, Any], name: str) -> list[int]:
    """The attempt number of each started ``name`` activity, in history order."""
    events = (await handle.fetch_history()).events
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == name
    ]


def sse_events(response: httpx.Response) -> list[tuple[str, str]]:
    events, event, data = [], "", []
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
        elif line == "" and event:
            events.append((event, "\n".join(data)))
            event, data = "", []
    return events


def waiting_run(plain: OpenAI, assistant_id: str) -> Any:
    """A run at requires_action with one call of ``get_weather``."""
    rounds = [[{"name": "get_weather", "arguments": {"city": "Rome"}}]]
    thread = plain.beta.threads.create(messages=[{"role": "user", "content": script(rounds=rounds)}])
    return plain.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id, poll_interval_ms=20)


# ---------------------------------------------------------------------------- the switches themselves


def test_switches_are_off_by_default_and_a_patch_changes_only_those_it_names(admin: httpx.Client) -> None:
    assert admin.get("/config").json()["compat"] == dict.fromkeys(COMPAT_SWITCHES, False)
    admin.patch("/config", json={"compat": {"null_tools": True}}).raise_for_status()
    config = admin.patch("/config", json={"compat": {"no_expiry": True}}).json()
    assert [name for name, on in config["compat"].items() if on] == ["no_expiry", "null_tools"]
    refused = admin.patch("/config", json={"compat": {"no_such_switch": True}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "compat.no_such_switch"
    assert admin.get("/config").json()["compat"]["null_tools"] is True  # nothing half-applied


def test_the_command_line_names_switches() -> None:
    args = build_parser().parse_args(["--compat", "null_tools,no-expiry", "--compat", "repeat_submit_404"])
    assert config_from_args(args).compat.on() == ["repeat_submit_404", "no_expiry", "null_tools"]
    assert config_from_args(build_parser().parse_args(["--compat", "all"])).compat.on() == list(COMPAT_SWITCHES)
    assert config_from_args(build_parser().parse_args([])).compat.on() == []
    with pytest.raises(ValueError, match="unknown switch 'nope'"):
        compat_from_args(["nope"])


def test_completed_after_requires_action_and_a_stale_done_on_submit(emulator: Any, plain: OpenAI, admin: httpx.Client, assistant_id: str) -> None:
    switch_on(admin, "completed_after_requires_action", "stale_done_on_submit")
    thread = plain.beta.threads.create(messages=[{"role": "user", "content": script(rounds=[[{"name": "add", "arguments": {"a": 1, "b": 2}}]])}])
    with httpx.Client(base_url=emulator.base_url, timeout=30) as http:
        with http.stream("POST", f"/threads/{thread.id}/runs", json={"assistant_id": assistant_id, "stream": True}) as response:
            events = sse_events(response)
        names = [e for e, _ in events]
        # After requires_action: a `completed` event whose run still waits for its tools, then done.
        assert names[-3:] == ["thread.run.requires_action", "thread.run.completed", "done"]
        stale = json.loads(events[-2][1])
        assert stale["status"] == "requires_action"
        run_id, call_id = stale["id"], stale["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
        body = {"tool_outputs": [{"tool_call_id": call_id, "output": "3"}], "stream": True}
        with http.stream("POST", f"/threads/{thread.id}/runs/{run_id}/submit_tool_outputs", json=body) as response:
            replayed = sse_events(response)
    # The submit's stream replays that tail and nothing of its own; the submit took effect.
    assert [e for e, _ in replayed] == ["thread.run.completed", "done"]
    assert json.loads(replayed[0][1])["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"] == call_id
    assert admin.get("/stats").json()["runs"][run_id]["submits_accepted"] == 1
    run = plain.beta.threads.runs.poll(run_id, thread_id=thread.id, poll_interval_ms=20)
    assert run.status == "completed"


def test_a_stale_done_alone_is_all_a_submit_stream_sends(emulator: Any, plain: OpenAI, admin: httpx.Client, assistant_id: str) -> None:
    switch_on(admin, "stale_done_on_submit")
    run = waiting_run(plain, assistant_id)
    with httpx.Client(base_url=emulator.base_url, timeout=30) as http:
        body = {"tool_outputs": answer_all(run), "stream": True}
        with http.stream("POST", f"/threads/{run.thread_id}/runs/{run.id}/submit_tool_outputs", json=body) as response:
            assert [e for e, _ in sse_events(response)] == ["done"]
    assert plain.beta.threads.runs.poll(run.id, thread_id=run.thread_id, poll_interval_ms=20).status == "completed"


def test_repeat_submit_404_and_unknown_call_500(plain: OpenAI, admin: httpx.Client, assistant_id: str) -> None:
    switch_on(admin, "repeat_submit_404", "unknown_call_500")
    run = waiting_run(plain, assistant_id)
    runs = plain.beta.threads.runs
    with pytest.raises(openai.InternalServerError):
        runs.submit_tool_outputs(run.id, thread_id=run.thread_id, tool_outputs=[{"tool_call_id": "call_nope", "output": "x"}])
    runs.submit_tool_outputs(run.id, thread_id=run.thread_id, tool_outputs=answer_all(run))
    with pytest.raises(openai.NotFoundError):
        runs.submit_tool_outputs(run.id, thread_id=run.thread_id, tool_outputs=answer_all(run))
    counted = admin.get("/stats").json()["runs"][run.id]
    assert (counted["submits_accepted"], counted["submits_rejected"]) == (1, 2)


def test_cancel_only_in_progress(plain: OpenAI, admin: httpx.Client, assistant_id: str) -> None:
    switch_on(admin, "cancel_only_in_progress")
    run = waiting_run(plain, assistant_id)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'requires_action'"):
        plain.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)
    assert plain.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id).status == "requires_action"
    # In progress, it cancels.
    plain.beta.threads.runs.submit_tool_outputs(run.id, thread_id=run.thread_id, tool_outputs=answer_all(run))
    admin.patch("/config", json={"turn_seconds": 2}).raise_for_status()
    slow = plain.beta.threads.runs.create(
        thread_id=plain.beta.threads.create().id, assistant_id=assistant_id, tool_choice="none", additional_messages=[{"role": "user", "content": "hi"}]
    )
    deadline = time.monotonic() + 10
    while plain.beta.threads.runs.retrieve(slow.id, thread_id=slow.thread_id).status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert plain.beta.threads.runs.cancel(slow.id, thread_id=slow.thread_id).status == "cancelling"


def test_no_expiry(plain: OpenAI, admin: httpx.Client, assistant_id: str) -> None:
    switch_on(admin, "no_expiry", expiry_seconds=0.5)
    run = waiting_run(plain, assistant_id)
    assert run.expires_at is None
    time.sleep(1.0)  # twice expiry_seconds: an OpenAI-like run would have expired
    assert plain.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id).status == "requires_action"


def test_null_tools(plain: OpenAI, admin: httpx.Client, emulator: Any) -> None:
    switch_on(admin, "null_tools")
    bare = plain.beta.assistants.create(model="gpt-4o")
    with_tools = plain.beta.assistants.create(model="gpt-4o", tools=TOOLS)  # type: ignore[arg-type]
    with httpx.Client(base_url=emulator.base_url, timeout=30) as http:
        assert http.get(f"/assistants/{bare.id}").json()["tools"] is None
        assert len(http.get(f"/assistants/{with_tools.id}").json()["tools"]) == len(TOOLS)
        listed = {a["id"]: a["tools"] for a in http.get("/assistants").json()["data"]}
    assert listed[bare.id] is None and len(listed[with_tools.id]) == len(TOOLS)


def test_no_poll_after_header(emulator: Any, plain: OpenAI, admin: httpx.Client, assistant_id: str) -> None:
    admin.patch("/config", json={"turn_seconds": 2}).raise_for_status()
    run = plain.beta.threads.runs.create(
        thread_id=plain.beta.threads.create().id, assistant_id=assistant_id, tool_choice="none", additional_messages=[{"role": "user", "content": "hi"}]
    )
    read = plain.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id)
    assert read.headers.get("openai-poll-after-ms") is not None  # the default, as OpenAI
    switch_on(admin, "no_poll_after_header")
    read = plain.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id)
    assert read.parse().status in ("queued", "in_progress") and read.headers.get("openai-poll-after-ms") is None


# ---------------------------------------------------------------------------- the worker against them


@pytest.mark.parametrize(
    "switches",
    [
        # The server seen in the field: the stale tail it replays is the `thread.run.completed`
        # (run still at requires_action, with the round's calls) it sent after requires_action.
        pytest.param(["completed_after_requires_action", "stale_done_on_submit"], id="completed_after_requires_action"),
        pytest.param(["stale_done_on_submit"], id="stale_done_on_submit"),
    ],
)
async def test_a_submit_stream_with_no_fresh_run_event_polls_the_run(
    switches: list[str], temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, assistant_id: str
) -> None:
    switch_on(admin, *switches)
    handle = await start(temporal_client, task_queue, request(assistant_id, "Weather?\n" + TWO_ROUNDS, mode="stream"))
    result = await ended(handle)

    assert_two_rounds_done_once(result)
    # Each round's outputs were posted once: no retried submit, no stale round taken for a new one.
    assert counters(admin, result) == {
        "runs_created": 1, "user_messages": 1, "submit_requests": 2, "submits_accepted": 2, "submits_rejected": 0,
    }
    assert await activity_attempts(handle, "submit_tool_outputs") == [1, 1]


async def test_a_repeated_submit_answered_404_is_recognised_from_the_run(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, assistant_id: str
) -> None:
    switch_on(admin, "repeat_submit_404")
    # The first submit lands but its reply is lost: the activity's retry repeats it.
    admin.post("/faults", json={"operation": "runs.submit_tool_outputs", "nth": 1, "action": "drop", "when": "after"}).raise_for_status()
    text = script(rounds=[[{"name": "structured", "arguments": {"n": 2}}]])
    handle = await start(temporal_client, task_queue, request(assistant_id, text))
    result = await ended(handle)

    assert result.status == "completed", result.failure
    assert [r.name for r in result.tool_calls] == ["structured"] and result.rounds == 1
    assert counters(admin, result) == {
        "runs_created": 1, "user_messages": 1, "submit_requests": 2, "submits_accepted": 1, "submits_rejected": 1,
    }
    assert admin.get("/stats").json()["responses"]["runs.submit_tool_outputs 404"] == 1


async def test_a_repeated_submit_answered_500_after_the_run_moved_on_is_recognised(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, assistant_id: str
) -> None:
    switch_on(admin, "unknown_call_500")
    # The first round's submit lands, its reply is lost; by the retry the run waits for round
    # two, so the repeat names calls it no longer knows: this server answers 500 (retryable).
    admin.post("/faults", json={"operation": "runs.submit_tool_outputs", "nth": 1, "action": "drop", "when": "after"}).raise_for_status()
    handle = await start(temporal_client, task_queue, request(assistant_id, "Weather?\n" + TWO_ROUNDS))
    result = await ended(handle)

    assert_two_rounds_done_once(result)
    assert counters(admin, result) == {
        "runs_created": 1, "user_messages": 1, "submit_requests": 3, "submits_accepted": 2, "submits_rejected": 1,
    }
    assert admin.get("/stats").json()["responses"]["runs.submit_tool_outputs 500"] == 1


@pytest.mark.parametrize(
    ("switches", "stop"),
    [
        pytest.param(["cancel_only_in_progress"], "cancel", id="cancel_only_in_progress-cancel"),
        pytest.param(["cancel_only_in_progress"], "fail_run", id="cancel_only_in_progress-fail_run"),
        # The server seen in the field also never expires runs: nothing ends the wait but the worker.
        pytest.param(["cancel_only_in_progress", "no_expiry"], "cancel", id="no_expiry-cancel"),
    ],
)
async def test_a_run_stopped_at_requires_action_ends_on_a_server_that_cancels_only_in_progress_runs(
    switches: list[str],
    stop: str,
    temporal_client: Client,
    task_queue: str,
    workers: None,
    admin: httpx.Client,
    plain: OpenAI,
    assistant_id: str,
    tmp_path: Path,
) -> None:
    switch_on(admin, *switches)
    marker = tmp_path / "started"
    # Turns of 2 s: the cancel that follows the answered calls meets the run in progress.
    if stop == "cancel":
        text = script(rounds=slow_round(60, marker), turn_seconds=2.0)
    else:
        text = script(rounds=[[{"name": "critical", "arguments": {"reason": "boom"}}, {"name": "structured", "arguments": {"n": 1}}]], turn_seconds=2.0)
    handle = await start(temporal_client, task_queue, request(assistant_id, text))
    if stop == "cancel":
        await wait_for(marker.exists, "the slow tool to start")
        await handle.cancel()
    result = await ended(handle)

    if stop == "cancel":
        assert result.status == "cancelled" and result.failure == "the workflow was cancelled"
    else:
        assert result.status == "failed" and result.failure == "tool critical failed: boom"
    assert result.thread_id is not None
    api_run = plain.beta.threads.runs.retrieve(result.run_id, thread_id=result.thread_id)
    assert api_run.status == "cancelled"
    if "no_expiry" in switches:
        assert api_run.expires_at is None
    # The pending calls were answered once, with errors, then the run was cancelled.
    steps = plain.beta.threads.runs.steps.list(result.run_id, thread_id=result.thread_id, order="asc").data
    outputs = [c.function.output for c in steps[0].step_details.tool_calls]  # type: ignore[union-attr]
    assert len(outputs) == 2 and all(o.startswith("Error: the run stopped before this call was answered: ") for o in outputs)
    stats = admin.get("/stats").json()
    assert counters(admin, result) == {
        "runs_created": 1, "user_messages": 1, "submit_requests": 1, "submits_accepted": 1, "submits_rejected": 0,
    }
    assert stats["responses"].get("runs.cancel 400", 0) >= 1 and stats["responses"]["runs.cancel 200"] == 1
    # The thread is free for the next run.
    after = await ended(await start(temporal_client, task_queue, RunRequest(
        assistant_id=assistant_id, thread_id=result.thread_id, messages=[MessageInput(content=script(reply="still here"))]
    )))
    assert after.status == "completed" and after.final_text == "still here"


async def test_a_run_that_will_not_stop_ends_the_workflow_within_the_bound_saying_so(
    temporal_client: Client,
    task_queue: str,
    workers: None,
    admin: httpx.Client,
    plain: OpenAI,
    assistant_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that cancels only in-progress runs, never expires them, and refuses the error
    outputs too: nothing will stop the run. The worker gives up after its bound (3 s here, by
    the in-process workers' module constant) and the run ends saying what it left behind."""
    monkeypatch.setattr(assistants_activities, "CANCEL_BOUND_SECONDS", 3.0)
    switch_on(admin, "cancel_only_in_progress", "no_expiry")
    admin.post("/faults", json={"operation": "runs.submit_tool_outputs", "action": "error", "status": 400}).raise_for_status()
    text = script(rounds=[[{"name": "critical", "arguments": {"reason": "boom"}}]])
    result = await ended(await start(temporal_client, task_queue, request(assistant_id, text)))

    assert result.status == "failed" and result.failure is not None
    assert result.failure.startswith("tool critical failed: boom; stopping it failed (run ")
    assert "did not stop within 3 s of cancelling it; it is requires_action" in result.failure
    assert result.thread_id is not None
    assert plain.beta.threads.runs.retrieve(result.run_id, thread_id=result.thread_id).status == "requires_action"
    # The calls were offered their error outputs once, not in a tight loop.
    assert admin.get("/stats").json()["requests"]["runs.submit_tool_outputs"] == 1


async def test_sync_tools_then_a_run_on_an_assistant_sent_with_null_tools(
    emulator: Any, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, plain: OpenAI
) -> None:
    switch_on(admin, "null_tools")
    bare = plain.beta.assistants.create(model="gpt-4o", name="no tools yet")
    assert bare.tools is None
    env = {**os.environ, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-test"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable_assistants.cli", "sync-tools", "--assistant", bare.id, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "missing on the assistant: city_population, compile_report, convert_temperature, get_weather" in out.decode()
    synced = plain.beta.assistants.retrieve(bare.id).tools or []
    assert sorted(t.function.name for t in synced if t.type == "function") == [
        "city_population", "compile_report", "convert_temperature", "get_weather"
    ]

    text = script(rounds=[[{"name": "get_weather", "arguments": {"city": "Oslo"}}]])
    result = await ended(await start(temporal_client, task_queue, request(bare.id, text)))
    assert result.status == "completed" and [r.name for r in result.tool_calls] == ["get_weather"]
    assert counters(admin, result) == {
        "runs_created": 1, "user_messages": 1, "submit_requests": 1, "submits_accepted": 1, "submits_rejected": 0,
    }


async def test_without_poll_after_headers_the_worker_backs_off_from_a_short_first_read(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, assistant_id: str
) -> None:
    """A timed check, with wide margins. Each model turn takes 0.2 s. Polling a flat second
    (the old behaviour without the header: reads at 0.05 s, then every 1 s) sees each turn
    no earlier than 1.05 s after it began, so the three model activities (start, two submits)
    take at least 3.15 s together; the backoff (reads at 0.05, 0.125, 0.24, ... s) sees each
    within about 0.3 s."""
    switch_on(admin, "no_poll_after_header")
    text = script(
        rounds=[[{"name": "get_weather", "arguments": {"city": "Oslo"}, "count": 2}],
                [{"name": "convert_temperature", "arguments": {"value": 20, "to": "fahrenheit"}}]],
        reply="Report:\n{outputs}",
        turn_seconds=0.2,
    )
    handle = await start(temporal_client, task_queue, request(assistant_id, "Weather?\n" + text))
    result = await ended(handle)
    assert_two_rounds_done_once(result)
    assert counters(admin, result) == {
        "runs_created": 1, "user_messages": 1, "submit_requests": 2, "submits_accepted": 2, "submits_rejected": 0,
    }

    events = (await handle.fetch_history()).events
    started = {
        e.event_id: e.event_time.ToDatetime()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    scheduled_of = {
        e.event_id: e.activity_task_started_event_attributes.scheduled_event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    model_seconds = [
        (e.event_time.ToDatetime() - started[a.started_event_id]).total_seconds()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        for a in [e.activity_task_completed_event_attributes]
        if names[scheduled_of[a.started_event_id]] in ("start_run", "submit_tool_outputs")
    ]
    assert len(model_seconds) == 3
    assert sum(model_seconds) < 2.4, model_seconds


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_every_switch_at_once(
    mode: str, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, assistant_id: str
) -> None:
    switch_on(admin, *COMPAT_SWITCHES)
    # And the first round's submit lands but its reply is lost.
    admin.post("/faults", json={"operation": "runs.submit_tool_outputs", "nth": 1, "action": "drop", "when": "after"}).raise_for_status()
    handle = await start(temporal_client, task_queue, request(assistant_id, "Weather?\n" + TWO_ROUNDS, mode=mode))
    result = await ended(handle)

    assert_two_rounds_done_once(result)
    # Poll: the retry repeats the submit, refused (500: the run waits for round two) and
    # recognised. Stream: the reply that broke was a stream, so the run it knows is polled
    # in the same attempt and nothing is sent again.
    repeats = 1 if mode == "poll" else 0
    assert counters(admin, result) == {
        "runs_created": 1, "user_messages": 1, "submit_requests": 2 + repeats, "submits_accepted": 2, "submits_rejected": repeats,
    }
    # (History keeps the started event of the last attempt only.)
    assert await activity_attempts(handle, "submit_tool_outputs") == ([2, 1] if mode == "poll" else [1, 1])
