"""Run streams: the SDK's AssistantEventHandler and stream helpers, and the raw SSE wire."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from openai import AssistantEventHandler, AsyncAssistantEventHandler, AsyncOpenAI, OpenAI

from tests.conftest import answer_all, script
from tests.openapi_spec import validate_stream_event

TOOL_ROUND = ["thread.run.step.created", "thread.run.step.in_progress"]
MESSAGE_EVENTS = [
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
]


class Recorder(AssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.tool_calls_created: list[str] = []
        self.text_done: list[str] = []

    def on_event(self, event: Any) -> None:
        self.events.append(event.event)

    def on_tool_call_created(self, tool_call: Any) -> None:
        self.tool_calls_created.append(tool_call.function.name)

    def on_text_done(self, text: Any) -> None:
        self.text_done.append(text.value)


def test_stream_a_tool_round_then_the_reply(client: OpenAI, assistant) -> None:
    content = "hi\n" + script(rounds=[[{"name": "add", "arguments": {"a": 1, "b": 2}, "count": 3}]], reply="sum={outputs}", chunk_chars=4)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])

    recorder = Recorder()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=recorder) as stream:
        stream.until_done()
        run = stream.get_final_run()
        steps = stream.get_final_run_steps()
    assert recorder.events == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        *TOOL_ROUND,
        "thread.run.step.delta",
        "thread.run.step.delta",
        "thread.run.step.delta",
        "thread.run.requires_action",
    ]
    assert run.status == "requires_action"
    assert recorder.tool_calls_created == ["add", "add", "add"]
    # The SDK assembled the step from its deltas: each call exactly once, arguments intact.
    assert [json.loads(c.function.arguments) for c in steps[0].step_details.tool_calls] == [{"a": 1, "b": 2}] * 3

    after = Recorder()
    with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run, "3"), event_handler=after
    ) as stream:
        stream.until_done()
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    expected_text = "sum=- add: 3\n- add: 3\n- add: 3"
    deltas = after.events.count("thread.message.delta")
    assert deltas == -(-len(expected_text) // 4)
    assert after.events == [
        "thread.run.step.completed",
        "thread.run.queued",
        "thread.run.in_progress",
        *MESSAGE_EVENTS,
        *["thread.message.delta"] * deltas,
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
    ]
    assert final.status == "completed" and final.usage is not None
    assert messages[0].content[0].text.value == expected_text == after.text_done[0]
    # What the stream built equals what the API stores.
    stored = client.beta.threads.messages.retrieve(thread_id=thread.id, message_id=messages[0].id)
    assert stored.content[0].text.value == expected_text and stored.status == "completed"


def test_text_deltas_follow_the_chunk_size(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": script(reply="abcdefghijkl", chunk_chars=5)}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        assert list(stream.text_deltas) == ["abcde", "fghij", "kl"]
        assert stream.get_final_run().status == "completed"


def test_create_and_run_stream_announces_the_thread_first(client: OpenAI, assistant) -> None:
    recorder = Recorder()
    with client.beta.threads.create_and_run_stream(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "hello"}]},
        tool_choice="none",
        event_handler=recorder,
    ) as stream:
        stream.until_done()
    assert recorder.events[:2] == ["thread.created", "thread.run.created"]
    assert recorder.events[-1] == "thread.run.completed"
    assert recorder.text_done == ["You said: hello"]


async def test_async_stream_with_submit(aclient: AsyncOpenAI) -> None:
    assistant = await aclient.beta.assistants.create(
        model="gpt-4o", tools=[{"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}]
    )
    thread = await aclient.beta.threads.create(messages=[{"role": "user", "content": "go"}])

    class Handler(AsyncAssistantEventHandler):
        def __init__(self) -> None:
            super().__init__()
            self.events: list[str] = []

        async def on_event(self, event: Any) -> None:
            self.events.append(event.event)

    handler = Handler()
    async with aclient.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
        await stream.until_done()
        run = await stream.get_final_run()
    assert run.status == "requires_action" and handler.events[-1] == "thread.run.requires_action"

    async with aclient.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run, "pong")
    ) as stream:
        text = "".join([delta async for delta in stream.text_deltas])
    assert text == "Here is what the 1 tool call returned:\n- ping: pong"


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a raw SSE body; comments come back as ('', ': ...')."""
    event, data = "", []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "", line
        elif line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
        elif line == "" and event:
            yield event, "\n".join(data)
            event, data = "", []


def test_raw_stream_matches_the_spec_event_by_event(emulator, client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": script(reply="ok then", chunk_chars=2)}])
    with httpx.stream(
        "POST",
        f"{emulator.base_url}/threads/{thread.id}/runs",
        json={"assistant_id": assistant.id, "stream": True},
        headers={"Authorization": "Bearer sk-test", "OpenAI-Beta": "assistants=v2"},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        events = list(sse_events(response))
    names = [name for name, _ in events]
    assert names[-2:] == ["thread.run.completed", "done"]
    assert events[-1] == ("done", "[DONE]")
    for name, data in events:
        validate_stream_event(name, data if name == "done" else json.loads(data))
    created = json.loads(events[0][1])
    assert created["status"] == "queued" and created["thread_id"] == thread.id


def test_idle_stream_sends_keepalive_comments_only(emulator, client: OpenAI, assistant, admin: httpx.Client) -> None:
    admin.patch("/config", json={"keepalive_seconds": 0.05}).raise_for_status()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": script(reply="late", turn_seconds=0.4)}])
    with httpx.stream(
        "POST", f"{emulator.base_url}/threads/{thread.id}/runs", json={"assistant_id": assistant.id, "stream": True}, timeout=30
    ) as response:
        events = list(sse_events(response))
    comments = [data for name, data in events if name == ""]
    assert comments and set(comments) == {": keep-alive"}
    assert [n for n, _ in events if n][-1] == "done"


def test_cancel_reaches_an_open_stream(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": script(reply="never", turn_seconds=30)}])
    recorder = Recorder()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=recorder) as stream:
        canceller = threading.Thread(
            target=lambda: (
                _wait_for_in_progress(client, thread.id),
                client.beta.threads.runs.cancel(thread_id=thread.id, run_id=client.beta.threads.runs.list(thread_id=thread.id).data[0].id),
            )
        )
        canceller.start()
        stream.until_done()
        canceller.join()
        run = stream.get_final_run()
    assert recorder.events[-2:] == ["thread.run.cancelling", "thread.run.cancelled"]
    assert run.status == "cancelled"


def _wait_for_in_progress(client: OpenAI, thread_id: str) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs = client.beta.threads.runs.list(thread_id=thread_id).data
        if runs and runs[0].status == "in_progress":
            return
        time.sleep(0.02)
