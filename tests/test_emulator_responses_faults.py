"""Bad requests to the Responses and Conversations APIs (a 400 that names the parameter and
the value, with nothing created), function-call bookkeeping errors, and the emulator's
faults and counters on the new operations."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import script
from tests.test_emulator_responses import ADD, TOOLS, outputs_for, stats, wait_done, wait_status


def add_fault(admin: httpx.Client, **rule: Any) -> dict[str, Any]:
    response = admin.post("/faults", json=rule)
    assert response.status_code == 200, response.text
    return response.json()


def nothing_created(admin: httpx.Client) -> None:
    counters = stats(admin)
    assert counters["runs"] == {} and "responses_created" not in counters["totals"]


# ---------------------------------------------------------------------------- bad input


BAD_CREATES = [
    ({"input": 5}, "input", "expected a string or an array of input items, but got an integer"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role", "'wizard'"),
    ({"input": ["hi"]}, "input[0]", "expected an object"),
    ({"input": [{"content": "x"}]}, "input[0].type", "Missing required parameter"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "got an integer"),
    ({"input": [{"role": "user", "content": [{"type": "input_txt", "text": "x"}]}]}, "input[0].content[0].type", "'input_txt'"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 7}]}]}, "input[0].content[0].text", "got 7"),
    ({"input": [{"type": "function_call_output", "call_id": "call_1"}]}, "input[0].output", "Missing required parameter"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "Missing required parameter"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", "'reasoning'"),
    ({"tools": [{"type": "function", "function": {"name": "add"}}]}, "tools[0]", "flat function tools"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "'web_search'"),
    ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name", "'bad name'"),
    ({"tool_choice": "sometimes"}, "tool_choice", "'sometimes'"),
    ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice", "'nope'"),
    ({"temperature": 3}, "temperature", "3"),
    ({"max_output_tokens": 5}, "max_output_tokens", "got 5"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "17 properties"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k", "length 513"),
    ({"colour": "red"}, "colour", "Unrecognized request argument supplied: colour"),
    ({"background": True, "store": False}, "store", "Background responses must be stored"),
    ({"stream": "yes"}, "stream", "expected a boolean, but got a string"),
    ({"model": None}, "model", "Missing required parameter: 'model'"),
    ({"input": "x\n@emulator {not json"}, "input", "invalid emulator script in input[0]"),
    ({"input": "x\n@emulator no-such-scenario"}, "input", "'no-such-scenario'"),
]


@pytest.mark.parametrize(("change", "param", "fragment"), BAD_CREATES, ids=[c[1] + ":" + c[2][:20] for c in BAD_CREATES])
def test_bad_create_is_a_clear_400(client: OpenAI, admin: httpx.Client, change: dict[str, Any], param: str, fragment: str) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "input": "hi", **change}
    if body["model"] is None:
        del body["model"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.post("/responses", body=body, cast_to=dict)
    error = refused.value.body
    assert error["param"] == param and fragment in error["message"], error
    assert error["type"] == "invalid_request_error"
    nothing_created(admin)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"items": "hello"}, "items", "expected an array of input items"),
        ({"items": [{"role": "user", "content": "x"}] * 21}, "items", "maximum length 20"),
        ({"items": [{"role": "nobody", "content": "x"}]}, "items[0].role", "'nobody'"),
        ({"metadata": {"a": 1}}, "metadata.a", "got 1"),
    ],
)
def test_bad_conversation_create_is_a_clear_400(client: OpenAI, admin: httpx.Client, body: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.post("/conversations", body=body, cast_to=dict)
    assert refused.value.body["param"] == param and fragment in refused.value.body["message"]
    assert stats(admin)["threads"] == {}


def test_items_create_needs_items(client: OpenAI, admin: httpx.Client) -> None:
    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as refused:
        client.post(f"/conversations/{conversation.id}/items", body={}, cast_to=dict)
    assert refused.value.body["param"] == "items" and refused.value.body["code"] == "missing_required_parameter"
    with pytest.raises(openai.BadRequestError) as typed:
        client.post(f"/conversations/{conversation.id}/items", body={"items": [{"type": "function_call", "name": "x"}]}, cast_to=dict)
    assert typed.value.body["param"].startswith("items[0].")


def test_bad_stream_query_is_a_400(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="x", background=True)
    with pytest.raises(openai.BadRequestError) as refused:
        client.get(f"/responses/{response.id}", options={"params": {"stream": "maybe"}}, cast_to=dict)
    assert refused.value.body["param"] == "stream" and "'maybe'" in refused.value.message
    with pytest.raises(openai.BadRequestError) as after:
        client.get(f"/responses/{response.id}", options={"params": {"stream": "true", "starting_after": "x"}}, cast_to=dict)
    assert after.value.body["param"] == "starting_after"


def test_unknown_previous_response_is_a_404(client: OpenAI, admin: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="gpt-4o", previous_response_id="resp_nope", input="x")
    assert missing.value.message.endswith("Previous response with id 'resp_nope' not found.")
    assert missing.value.body["param"] == "previous_response_id"
    nothing_created(admin)


def test_previous_response_still_running_is_a_400(client: OpenAI) -> None:
    running = client.responses.create(model="gpt-4o", input="x\n" + script(reply="slow", turn_seconds=30), background=True)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4o", previous_response_id=running.id, input="next")
    assert refused.value.body["param"] == "previous_response_id" and running.id in refused.value.message


# ---------------------------------------------------------------------------- function call bookkeeping


def test_output_for_an_unknown_call_is_a_400(client: OpenAI, admin: httpx.Client) -> None:
    first = client.responses.create(model="gpt-4o", input="x", tools=[ADD])
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="gpt-4o",
            previous_response_id=first.id,
            input=[*outputs_for(first, "1"), {"type": "function_call_output", "call_id": "call_nope", "output": "?"}],
            tools=[ADD],
        )
    assert refused.value.message.endswith("No tool call found for function call output with call_id call_nope.")
    assert refused.value.body["param"] == "input"
    assert list(stats(admin)["runs"]) == [first.id]  # nothing created


def test_every_call_needs_its_output(client: OpenAI) -> None:
    first = client.responses.create(model="gpt-4o", input="x", tools=TOOLS)
    add_call, weather_call = first.output

    with pytest.raises(openai.BadRequestError) as partial:
        client.responses.create(model="gpt-4o", previous_response_id=first.id, input=outputs_for(first)[:1], tools=TOOLS)
    assert partial.value.message.endswith(f"No tool output found for function call {weather_call.call_id}.")

    with pytest.raises(openai.BadRequestError) as ignored:
        client.responses.create(model="gpt-4o", previous_response_id=first.id, input="never mind", tools=TOOLS)
    assert ignored.value.message.endswith(f"No tool output found for function call {add_call.call_id}.")

    # Answering them all works, and a client may resend the calls themselves (stateless style).
    stateless = client.responses.create(
        model="gpt-4o",
        input=[
            {"role": "user", "content": "x"},
            *[{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in first.output],
            *outputs_for(first, "done"),
        ],
        tools=TOOLS,
    )
    assert stateless.output_text == "Here is what the 2 tool calls returned:\n- add: done\n- get_weather: done"


def test_unanswered_calls_on_a_conversation(client: OpenAI) -> None:
    conversation = client.conversations.create()
    first = client.responses.create(model="gpt-4o", conversation=conversation.id, input="x", tools=[ADD])
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4o", conversation=conversation.id, input="something else", tools=[ADD])
    assert refused.value.message.endswith(f"No tool output found for function call {first.output[0].call_id}.")
    # The refused input did not reach the conversation.
    assert [i.type for i in client.conversations.items.list(conversation.id, order="asc").data] == ["message", "function_call"]


# ---------------------------------------------------------------------------- faults


def test_drop_after_create_leaves_the_response(client: OpenAI, admin: httpx.Client) -> None:
    """The idempotency case: the client saw a broken connection, the server did the work."""
    conversation = client.conversations.create()
    add_fault(admin, operation="responses.create", action="drop", when="after", nth=1)

    with pytest.raises(openai.APIConnectionError):
        client.responses.create(model="gpt-4o", conversation=conversation.id, input="once", background=True)

    counters = stats(admin)
    [response_id] = counters["runs"]
    assert counters["runs"][response_id]["responses_created"] == 1
    assert counters["threads"][conversation.id] == {"responses_created": 1, "items_added": 1}
    assert counters["responses"] == {"conversations.create 200": 1, "responses.create dropped": 1}
    assert wait_done(client, response_id).output_text == "You said: once"
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(i.role, i.content[0].text) for i in items] == [("user", "once"), ("assistant", "You said: once")]


def test_drop_after_a_streamed_create_discards_the_stream(client: OpenAI, admin: httpx.Client) -> None:
    add_fault(admin, operation="responses.create", action="drop", when="after", nth=1)
    with pytest.raises(openai.APIConnectionError):
        with client.responses.stream(model="gpt-4o", input="streamed") as stream:
            stream.until_done()
    [response_id] = stats(admin)["runs"]
    # A foreground stream whose client is gone still runs to its end.
    deadline = time.monotonic() + 10
    while "ended_completed" not in stats(admin)["runs"][response_id]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stats(admin)["runs"][response_id] == {"responses_created": 1, "ended_completed": 1}
    assert client.responses.retrieve(response_id).output_text == "You said: streamed"


def test_error_after_a_background_stream_create(client: OpenAI, admin: httpx.Client) -> None:
    add_fault(admin, operation="responses.create", status=500, when="after", nth=1)
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4o", input="x", background=True, stream=True)
    [response_id] = stats(admin)["runs"]
    # The stream was never sent, but the response ran and its events can be read.
    with client.responses.stream(response_id=response_id) as stream:
        assert stream.get_final_response().output_text == "You said: x"


def test_rate_limit_before_create_then_sdk_retry_makes_one_response(client: OpenAI, admin: httpx.Client) -> None:
    add_fault(admin, operation="responses.create", status=429, retry_after_ms=30, nth=1)
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.with_raw_response.create(model="gpt-4o", input="x")
    assert limited.value.response.headers["retry-after-ms"] == "30"
    nothing_created(admin)

    add_fault(admin, operation="responses.create", status=500, nth=1)
    response = client.with_options(max_retries=1).responses.create(model="gpt-4o", input="retried")
    assert response.output_text == "You said: retried"
    counters = stats(admin)
    assert counters["responses"] == {"responses.create 429": 1, "responses.create 500": 1, "responses.create 200": 1}
    assert counters["totals"]["responses_created"] == 1


def test_faults_on_reads_and_conversation_operations(client: OpenAI, admin: httpx.Client) -> None:
    response = client.responses.create(model="gpt-4o", input="x", background=True)
    add_fault(admin, operation="responses.retrieve", status=503, nth=1)
    with pytest.raises(openai.InternalServerError):
        client.responses.retrieve(response.id)
    assert wait_done(client, response.id).status == "completed"

    add_fault(admin, operation="conversations.items.create", status=500, when="after", nth=1)
    conversation = client.conversations.create()
    with pytest.raises(openai.InternalServerError):
        client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "written once"}])
    assert [i.content[0].text for i in client.conversations.items.list(conversation.id).data] == ["written once"]
    assert stats(admin)["threads"][conversation.id] == {"items_added": 1}

    add_fault(admin, operation="conversations.items.list", action="delay", delay_seconds=0.05, nth=1)
    assert len(client.conversations.items.list(conversation.id).data) == 1
    assert stats(admin)["faults_fired"] == {"responses.retrieve": 1, "conversations.items.create": 1, "conversations.items.list": 1}


def test_drop_after_a_stream_retrieve(client: OpenAI, admin: httpx.Client) -> None:
    response = client.responses.create(model="gpt-4o", input="x\n" + script(reply="slow", turn_seconds=0.2), background=True)
    add_fault(admin, operation="responses.retrieve", action="drop", when="after", nth=1)
    with pytest.raises(openai.APIConnectionError):
        with client.responses.stream(response_id=response.id) as stream:
            stream.until_done()
    assert wait_done(client, response.id).output_text == "slow"


def test_cancel_fault_before_leaves_the_response_running(client: OpenAI, admin: httpx.Client) -> None:
    response = client.responses.create(model="gpt-4o", input="x\n" + script(reply="r", turn_seconds=30), background=True)
    wait_status(client, response.id, "in_progress")
    add_fault(admin, operation="responses.cancel", status=500, nth=1)
    with pytest.raises(openai.InternalServerError):
        client.responses.cancel(response.id)
    assert client.responses.retrieve(response.id).status == "in_progress"
    assert client.responses.cancel(response.id).status == "cancelled"


def test_fault_rules_know_the_new_operations(admin: httpx.Client) -> None:
    message = admin.post("/faults", json={"operation": "nope"}).json()["error"]["message"]
    for operation in (
        "responses.create",
        "responses.retrieve",
        "responses.cancel",
        "responses.delete",
        "responses.input_items.list",
        "conversations.create",
        "conversations.retrieve",
        "conversations.update",
        "conversations.delete",
        "conversations.items.create",
        "conversations.items.list",
        "conversations.items.retrieve",
        "conversations.items.delete",
    ):
        assert operation in message
    assert add_fault(admin, operation="conversations.items.create", status=500)["operation"] == "conversations.items.create"


def test_every_answer_carries_a_request_id(client: OpenAI) -> None:
    created = client.responses.with_raw_response.create(model="gpt-4o", input="x")
    assert created.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.NotFoundError) as missing:
        client.conversations.retrieve("conv_nope")
    assert missing.value.request_id is not None and missing.value.request_id.startswith("req_")
