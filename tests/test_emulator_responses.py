"""The emulator's Responses API through the real SDK over real HTTP: the response lifecycle
(foreground, background, streamed), function calls chained by ``previous_response_id``,
stream resumption, cancel, scripted failures, stored prompts and input items.

Every JSON body the SDK clients receive is checked against ``responses.yaml`` by the
``client``/``aclient`` fixtures; raw stream events are checked here event by event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import script
from tests.openapi_spec import validate_response_stream_event


def flat_tool(name: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """A strict function tool in the flat Responses shape, all properties required."""
    props = properties or {}
    return {
        "type": "function",
        "name": name,
        "description": f"The {name} tool.",
        "strict": True,
        "parameters": {"type": "object", "properties": props, "required": list(props), "additionalProperties": False},
    }


ADD = flat_tool("add", {"a": {"type": "integer"}, "b": {"type": "integer"}})
WEATHER = flat_tool("get_weather", {"city": {"type": "string", "examples": ["Paris"]}})
TOOLS = [ADD, WEATHER]

MESSAGE_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def stats(admin: httpx.Client) -> dict[str, Any]:
    return admin.get("/stats").json()


def wait_done(client: OpenAI, response_id: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        assert time.monotonic() < deadline, f"response {response_id} still {response.status}"
        time.sleep(0.02)


def wait_status(client: OpenAI, response_id: str, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while client.responses.retrieve(response_id).status != status:
        assert time.monotonic() < deadline, f"response {response_id} never became {status}"
        time.sleep(0.01)


def outputs_for(response: Any, output: str | None = None) -> list[dict[str, str]]:
    """A ``function_call_output`` for every function call of ``response``."""
    return [
        {"type": "function_call_output", "call_id": item.call_id, "output": output if output is not None else f"{item.name}:{item.arguments}"}
        for item in response.output
        if item.type == "function_call"
    ]


def sse(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a raw SSE body; comments come back as ('', ': ...')."""
    event, data = "", []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "", line
        elif line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and event:
            yield event, "\n".join(data)
            event, data = "", []


def raw_events(emulator: Any, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The events of a raw response stream, each checked against the spec."""
    with httpx.stream(method, f"{emulator.base_url}{path}", headers={"Authorization": "Bearer sk-test"}, timeout=30, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for name, data in sse(response):
            if not name:
                continue
            body = json.loads(data)
            validate_response_stream_event(name, body)
            events.append(body)
    return events


# ---------------------------------------------------------------------------- foreground and background


def test_foreground_response_answers_when_completed(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="hello", instructions="Be brief.", metadata={"k": "v"})

    assert response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_") and response.background is False
    assert response.output_text == "You said: hello"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_")
    assert response.instructions == "Be brief." and response.metadata == {"k": "v"}
    assert response.tool_choice == "auto" and response.tools == [] and response.parallel_tool_calls is True
    assert response.completed_at is not None and response.error is None and response.incomplete_details is None
    usage = response.usage
    assert usage is not None and usage.output_tokens > 0 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0

    raw = client.responses.with_raw_response.retrieve(response.id)
    assert "openai-poll-after-ms" not in raw.headers  # terminal: nothing to poll for
    assert raw.parse().model_dump() == response.model_dump()


def test_background_response_is_queued_then_completes(client: OpenAI, admin: httpx.Client) -> None:
    admin.patch("/config", json={"queue_seconds": 1.0}).raise_for_status()
    response = client.responses.create(model="gpt-4o", input="later", background=True)
    assert response.status == "queued" and response.background is True and response.usage is None

    raw = client.responses.with_raw_response.retrieve(response.id)
    assert raw.parse().status == "queued"
    assert raw.headers["openai-poll-after-ms"] == "20"  # the session emulator's --poll-after-ms

    done = wait_done(client, response.id)
    assert done.status == "completed" and done.output_text == "You said: later" and done.usage is not None
    assert "openai-poll-after-ms" not in client.responses.with_raw_response.retrieve(response.id).headers


def test_function_calls_end_the_response_completed(client: OpenAI, admin: httpx.Client) -> None:
    response = client.responses.create(model="gpt-4o", input="Paris", tools=TOOLS)

    # No requires_action on this API: the calls are the output of a completed response.
    assert response.status == "completed" and response.output_text == ""
    calls = response.output
    assert [c.type for c in calls] == ["function_call", "function_call"]
    assert [c.name for c in calls] == ["add", "get_weather"]
    assert [json.loads(c.arguments) for c in calls] == [{"a": 1, "b": 1}, {"city": "Paris"}]
    assert all(c.status == "completed" and c.id.startswith("fc_") and c.call_id.startswith("call_") for c in calls)
    assert len({c.call_id for c in calls}) == 2
    assert response.tools[0].name == "add" and response.tools[0].strict is True
    assert stats(admin)["runs"][response.id] == {"responses_created": 1, "ended_completed": 1}


def test_one_call_per_response_without_parallel_tool_calls(client: OpenAI, admin: httpx.Client) -> None:
    first = client.responses.create(model="gpt-4o", input="Rome", tools=TOOLS, parallel_tool_calls=False)
    assert [c.name for c in first.output] == ["add"]

    second = client.responses.create(
        model="gpt-4o", previous_response_id=first.id, input=outputs_for(first, "2"), tools=TOOLS, parallel_tool_calls=False
    )
    assert second.previous_response_id == first.id
    assert [c.name for c in second.output] == ["get_weather"]
    assert json.loads(second.output[0].arguments) == {"city": "Paris"}  # the schema's first example

    third = client.responses.create(
        model="gpt-4o", previous_response_id=second.id, input=outputs_for(second, "sunny"), tools=TOOLS, parallel_tool_calls=False
    )
    assert third.output_text == "Here is what the 2 tool calls returned:\n- add: 2\n- get_weather: sunny"

    runs = stats(admin)["runs"]
    assert runs[first.id] == {"responses_created": 1, "ended_completed": 1}
    assert runs[second.id] == runs[third.id] == {"responses_created": 1, "function_call_outputs_accepted": 1, "ended_completed": 1}
    assert stats(admin)["totals"]["responses_created"] == 3


def test_scripted_parallel_rounds_over_a_previous_response_chain(client: OpenAI) -> None:
    content = "go\n" + script(
        rounds=[[{"name": "add", "arguments": {"a": 2, "b": 3}, "count": 3}], [{"name": "get_weather", "arguments": {"city": "Oslo"}}]],
        reply="done: {outputs}",
    )
    first = client.responses.create(model="gpt-4o", input=[{"role": "user", "content": content}], tools=TOOLS)
    assert [(c.name, c.arguments) for c in first.output] == [("add", '{"a":2,"b":3}')] * 3
    assert len({c.call_id for c in first.output}) == 3

    second = client.responses.create(model="gpt-4o", previous_response_id=first.id, input=outputs_for(first, "5"), tools=TOOLS)
    assert [c.name for c in second.output] == ["get_weather"]

    third = client.responses.create(model="gpt-4o", previous_response_id=second.id, input=outputs_for(second, "cold"), tools=TOOLS)
    assert third.output_text == "done: - add: 5\n- add: 5\n- add: 5\n- get_weather: cold"


def test_instructions_are_not_inherited_along_the_chain(client: OpenAI) -> None:
    first = client.responses.create(model="gpt-4o", input="one", instructions="Be brief.")
    second = client.responses.create(model="gpt-4o", previous_response_id=first.id, input="two")
    assert first.instructions == "Be brief." and second.instructions is None
    assert second.output_text == "You said: two"


def test_input_in_every_shape_reaches_the_model(client: OpenAI) -> None:
    response = client.responses.create(
        model="gpt-4o",
        input=[
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "earlier answer"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "newest"}]},
        ],
    )
    assert response.output_text == "You said: newest"
    items = client.responses.input_items.list(response.id, order="asc").data
    assert [(i.type, i.role) for i in items] == [("message", "developer"), ("message", "user"), ("message", "assistant"), ("message", "user")]
    assert items[0].content[0].type == "input_text" and items[0].content[0].text == "Answer in English."
    assert items[2].content[0].type == "output_text" and items[2].content[0].text == "earlier answer"
    assert all(i.status == "completed" and i.id.startswith("msg_") for i in items)


def test_metadata_scenario_scripts_the_response(client: OpenAI, admin: httpx.Client) -> None:
    assert admin.put("/scenarios/echo", json={"reply": "scenario says {user}"}).status_code == 200
    response = client.responses.create(model="gpt-4o", input="hi", metadata={"emulator_scenario": "echo"})
    assert response.output_text == "scenario says hi"
    default = client.responses.create(model="gpt-4o", input="hi")
    assert default.output_text == "You said: hi"


# ---------------------------------------------------------------------------- failures and limits


def test_scripted_failure(client: OpenAI) -> None:
    response = client.responses.create(
        model="gpt-4o", input="x\n" + script(end="failed", error_code="rate_limit_exceeded", error_message="slow down")
    )
    assert response.status == "failed" and response.output == []
    assert response.error is not None and (response.error.code, response.error.message) == ("rate_limit_exceeded", "slow down")
    assert response.completed_at is None and response.usage is not None


def test_max_output_tokens_makes_the_response_incomplete(client: OpenAI, admin: httpx.Client) -> None:
    long_text = "word " * 40
    response = client.responses.create(model="gpt-4o", input="x\n" + script(reply=long_text), max_output_tokens=16)
    assert response.status == "incomplete" and response.max_output_tokens == 16
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    assert response.output_text == long_text[: 16 * 4]
    assert stats(admin)["runs"][response.id]["ended_incomplete"] == 1


def test_scripted_incomplete(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x\n" + script(reply="abcdefgh", end="incomplete"))
    assert response.status == "incomplete" and response.output_text == "abcd"
    assert response.incomplete_details.reason == "max_output_tokens"


# ---------------------------------------------------------------------------- streaming


def test_stream_helper_parses_a_foreground_stream(client: OpenAI) -> None:
    with client.responses.stream(model="gpt-4o", input="x\n" + script(reply="abcdefghij", chunk_chars=4)) as stream:
        events = list(stream)
        final = stream.get_final_response()
    names = [e.type for e in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["abcd", "efgh", "ij"]
    assert events[0].response.status == "in_progress"
    assert final.status == "completed" and final.output_text == "abcdefghij"
    # What the stream built is what the API stores.
    assert client.responses.retrieve(final.id).output_text == "abcdefghij"


def test_stream_of_function_calls(client: OpenAI) -> None:
    content = "x\n" + script(rounds=[[{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", "arguments": {"city": "Lima"}}]], chunk_chars=5)
    with client.responses.stream(model="gpt-4o", input=content, tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    names = [e.type for e in events]
    per_call = lambda deltas: [  # noqa: E731
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    # '{"a":1,"b":2}' is 13 characters (3 deltas of 5), '{"city":"Lima"}' 15 (3 deltas).
    assert names == ["response.created", "response.in_progress", *per_call(3), *per_call(3), "response.completed"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [(e.name, e.arguments, e.output_index) for e in done] == [("add", '{"a":1,"b":2}', 0), ("get_weather", '{"city":"Lima"}', 1)]
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [e.item.arguments for e in added] == ["", ""] and [e.item.status for e in added] == ["in_progress"] * 2
    assert [(c.name, c.arguments) for c in final.output] == [("add", '{"a":1,"b":2}'), ("get_weather", '{"city":"Lima"}')]
    assert final.status == "completed"


def test_background_stream_on_the_wire_matches_the_spec(emulator: Any, client: OpenAI) -> None:
    body = {
        "model": "gpt-4o",
        "input": "x\n" + script(rounds=[[{"name": "add", "arguments": {"a": 1, "b": 1}}]], chunk_chars=3),
        "tools": TOOLS,
        "background": True,
        "stream": True,
    }
    events = raw_events(emulator, "POST", "/responses", json=body)
    names = [e["type"] for e in events]
    assert names[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "queued" and events[2]["response"]["status"] == "in_progress"

    body = {"model": "gpt-4o", "input": "x\n" + script(reply="ok"), "stream": True, "background": True}
    reply = raw_events(emulator, "POST", "/responses", json=body)
    assert [e["type"] for e in reply] == ["response.created", "response.queued", "response.in_progress", *MESSAGE_EVENTS, "response.completed"]
    # Each event carries the type it is sent under; no `[DONE]` ends a response stream.
    assert all(e["type"] for e in reply)


def test_retrieve_stream_resumes_after_a_sequence_number(emulator: Any, client: OpenAI) -> None:
    content = "x\n" + script(reply="the quick brown fox", chunk_chars=3, chars_per_second=150)
    stream = client.responses.create(model="gpt-4o", input=content, background=True, stream=True)
    seen = []
    for event in stream:
        seen.append(event)
        if len(seen) == 5:
            break
    stream.close()  # the connection drops mid-stream
    response_id = seen[0].response.id
    assert [e.sequence_number for e in seen] == [0, 1, 2, 3, 4]

    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=4))
    assert resumed[0].sequence_number == 5
    assert [e.sequence_number for e in resumed] == list(range(5, 5 + len(resumed)))
    assert resumed[-1].type == "response.completed"

    # Read again from the start (the response has ended): exactly the same events.
    everything = raw_events(emulator, "GET", f"/responses/{response_id}", params={"stream": "true"})
    assert [e["type"] for e in everything] == [e.type for e in seen + resumed]
    text = "".join(e["delta"] for e in everything if e["type"] == "response.output_text.delta")
    assert text == "the quick brown fox"

    # Past the end: nothing to send, the stream just ends.
    assert raw_events(emulator, "GET", f"/responses/{response_id}", params={"stream": "true", "starting_after": 999}) == []


def test_stream_helper_reads_an_existing_response(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x\n" + script(reply="resumable", chunk_chars=2, turn_seconds=0.1), background=True)
    with client.responses.stream(response_id=response.id, starting_after=3) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert events[0].sequence_number == 4 and events[-1].type == "response.completed"
    assert final.id == response.id and final.output_text == "resumable"


def test_live_retrieve_stream_continues_until_the_end(emulator: Any, client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x\n" + script(reply="slowly", turn_seconds=0.3), background=True)
    events = raw_events(emulator, "GET", f"/responses/{response.id}", params={"stream": "true", "starting_after": 0})
    assert events[0]["sequence_number"] == 1 and events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "slowly"


def test_foreground_response_cannot_be_streamed_again(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.retrieve(response.id, stream=True)
    assert refused.value.body["param"] == "stream"
    assert "background" in refused.value.message


async def test_async_background_stream(aclient: AsyncOpenAI) -> None:
    async with aclient.responses.stream(model="gpt-4o", input="async hello", background=True) as stream:
        names = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert names[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert final.output_text == "You said: async hello"
    stored = await aclient.responses.retrieve(final.id)
    assert stored.status == "completed" and stored.output_text == final.output_text


def test_idle_stream_sends_keepalive_comments(emulator: Any, client: OpenAI, admin: httpx.Client) -> None:
    admin.patch("/config", json={"keepalive_seconds": 0.05}).raise_for_status()
    body = {"model": "gpt-4o", "input": "x\n" + script(reply="late", turn_seconds=0.3), "stream": True}
    with httpx.stream("POST", f"{emulator.base_url}/responses", json=body, timeout=30) as response:
        lines = list(sse(response))
    comments = [data for name, data in lines if not name]
    assert comments and set(comments) == {": keep-alive"}
    assert [name for name, _ in lines if name][-1] == "response.completed"


# ---------------------------------------------------------------------------- cancel


def test_cancel_a_background_response_in_progress(emulator: Any, client: OpenAI, admin: httpx.Client) -> None:
    response = client.responses.create(model="gpt-4o", input="x\n" + script(reply="never", turn_seconds=30), background=True)
    wait_status(client, response.id, "in_progress")
    events: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: events.extend(raw_events(emulator, "GET", f"/responses/{response.id}", params={"stream": "true"}))
    )
    reader.start()
    time.sleep(0.1)  # let the reader subscribe

    cancelled = client.responses.cancel(response.id)
    reader.join(10)
    assert cancelled.status == "cancelled" and cancelled.usage is None and cancelled.completed_at is None
    assert client.responses.retrieve(response.id).status == "cancelled"
    # The open stream ends with the spec's closest terminal event, carrying the status.
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "cancelled"
    assert [e["type"] for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]

    again = client.responses.cancel(response.id)  # cancelling a cancelled response is no error
    assert again.status == "cancelled"
    assert stats(admin)["runs"][response.id] == {"responses_created": 1, "ended_cancelled": 1}


def test_cancel_a_queued_response(client: OpenAI, admin: httpx.Client) -> None:
    admin.patch("/config", json={"queue_seconds": 30}).raise_for_status()
    response = client.responses.create(model="gpt-4o", input="x", background=True)
    assert client.responses.cancel(response.id).status == "cancelled"


def test_only_background_responses_in_flight_can_be_cancelled(client: OpenAI) -> None:
    foreground = client.responses.create(model="gpt-4o", input="x")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(foreground.id)
    assert "background" in refused.value.message

    finished = client.responses.create(model="gpt-4o", input="x", background=True)
    wait_done(client, finished.id)
    with pytest.raises(openai.BadRequestError) as too_late:
        client.responses.cancel(finished.id)
    assert too_late.value.message.endswith("Cannot cancel a completed response.")
    assert client.responses.retrieve(finished.id).status == "completed"

    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.cancel("resp_nope")
    assert missing.value.message.endswith("Response with id 'resp_nope' not found.")


# ---------------------------------------------------------------------------- stored prompts


def test_stored_prompt_versions(client: OpenAI, admin: httpx.Client) -> None:
    first = admin.put("/prompts/pmpt_demo", json={"version": "1", "instructions": "Talk like {{persona}}.", "model": "gpt-4o"})
    assert first.status_code == 200 and first.json()["id"] == "pmpt_demo"
    second = admin.put("/prompts/pmpt_demo", json={"instructions": "v2 for {{persona}}", "model": "gpt-4.1", "tools": [WEATHER]})
    assert second.json()["version"] == "2"
    listed = admin.get("/prompts").json()
    assert listed["pmpt_demo"]["latest"] == "2" and [v["version"] for v in listed["pmpt_demo"]["versions"]] == ["1", "2"]

    latest = client.responses.create(prompt={"id": "pmpt_demo", "variables": {"persona": "a pirate"}}, input="Lima")
    assert (latest.model, latest.instructions) == ("gpt-4.1-2025-04-14", "v2 for a pirate")  # the snapshot, as OpenAI echoed it
    assert [t.name for t in latest.tools] == ["get_weather"] and latest.output[0].type == "function_call"
    assert latest.prompt.id == "pmpt_demo" and latest.prompt.version == "2"
    assert latest.prompt.variables == {"persona": "a pirate"}

    pinned = client.responses.create(prompt={"id": "pmpt_demo", "version": "1", "variables": {"persona": "a poet"}}, input="hi")
    assert (pinned.model, pinned.instructions, pinned.tools) == ("gpt-4o-2024-08-06", "Talk like a poet.", [])

    # What the request sets wins over the prompt.
    overridden = client.responses.create(prompt={"id": "pmpt_demo"}, model="gpt-4o-mini", instructions="Mine.", tools=[], input="hi")
    assert (overridden.model, overridden.instructions, overridden.tools) == ("gpt-4o-mini-2024-07-18", "Mine.", [])

    with pytest.raises(openai.NotFoundError) as no_prompt:
        client.responses.create(prompt={"id": "pmpt_nope"}, input="hi")
    assert no_prompt.value.body["param"] == "prompt.id"
    with pytest.raises(openai.NotFoundError) as no_version:
        client.responses.create(prompt={"id": "pmpt_demo", "version": "9"}, input="hi")
    assert no_version.value.body["param"] == "prompt.version" and "'9'" in no_version.value.message


def test_bad_prompt_definitions_are_refused(admin: httpx.Client) -> None:
    bad_tool = admin.put("/prompts/p", json={"tools": [{"type": "function", "function": {"name": "x"}}]})
    assert bad_tool.status_code == 400 and bad_tool.json()["error"]["param"] == "tools[0]"
    unknown = admin.put("/prompts/p", json={"colour": "red"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
    assert admin.get("/prompts").json() == {}
    assert admin.delete("/prompts/p").status_code == 404


# ---------------------------------------------------------------------------- input items and delete


def test_input_items_pagination(client: OpenAI) -> None:
    texts = [f"message {i}" for i in range(5)]
    response = client.responses.create(model="gpt-4o", input=[{"role": "user", "content": t} for t in texts])
    assert response.output_text == "You said: message 4"

    newest_first = client.responses.input_items.list(response.id)
    assert [i.content[0].text for i in newest_first.data] == texts[::-1]  # default order: desc

    page = client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [i.content[0].text for i in page.data] == texts[:2] and page.has_more is True
    following = client.responses.input_items.list(response.id, limit=2, order="asc", after=page.last_id)
    assert [i.content[0].text for i in following.data] == texts[2:4]
    assert [i.content[0].text for i in client.responses.input_items.list(response.id, limit=2, order="asc")] == texts  # auto-paging


def test_input_items_are_this_responses_own(client: OpenAI) -> None:
    first = client.responses.create(model="gpt-4o", input="one", tools=[ADD])
    second = client.responses.create(model="gpt-4o", previous_response_id=first.id, input=outputs_for(first, "2"), tools=[ADD])
    items = client.responses.input_items.list(second.id).data
    assert [(i.type, i.call_id, i.output) for i in items] == [("function_call_output", first.output[0].call_id, "2")]
    assert items[0].status == "completed" and items[0].id


def test_delete_a_response(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x")
    assert client.responses.delete(response.id) is None  # the SDK returns nothing
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(response.id)
    with pytest.raises(openai.NotFoundError) as again:
        client.responses.delete(response.id)
    assert again.value.message.endswith(f"Response with id '{response.id}' not found.")


def test_delete_body_on_the_wire(emulator: Any, client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x")
    deleted = httpx.delete(f"{emulator.base_url}/responses/{response.id}", timeout=10)
    assert deleted.status_code == 200 and deleted.json() == {"id": response.id, "object": "response.deleted", "deleted": True}


def test_unstored_response_is_not_kept(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x", store=False)
    assert response.status == "completed" and response.output_text == "You said: x"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as chained:
        client.responses.create(model="gpt-4o", previous_response_id=response.id, input="y")
    assert chained.value.body["param"] == "previous_response_id"


def test_reset_ends_a_foreground_response_that_is_waited_for(client: OpenAI, admin: httpx.Client) -> None:
    answers: list[Any] = []
    waiter = threading.Thread(
        target=lambda: answers.append(client.responses.create(model="gpt-4o", input="x\n" + script(reply="r", turn_seconds=30)))
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while not stats(admin)["runs"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    admin.post("/reset").raise_for_status()
    waiter.join(10)
    assert not waiter.is_alive() and answers[0].status == "cancelled"


def test_reset_forgets_responses_conversations_and_prompts(client: OpenAI, admin: httpx.Client) -> None:
    response = client.responses.create(model="gpt-4o", input="x")
    conversation = client.conversations.create()
    admin.put("/prompts/p", json={"model": "gpt-4o"}).raise_for_status()
    admin.post("/reset").raise_for_status()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)
    assert admin.get("/prompts").json() == {}
    assert stats(admin)["runs"] == {}
