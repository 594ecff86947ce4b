"""The emulator's Responses-API compatibility switches, on the wire: each one off (the
emulator behaves as OpenAI does) and on (it behaves like an OpenAI-compatible gateway in front
of a chat-completions model, which is not OpenAI), through the real SDK over real HTTP, with
raw httpx where the SDK hides the shape. The switches and what they do: ``emulator/config.py``
(``CompatConfig``) and docs/emulator.md.

Bodies these switches send may break the pinned OpenAI spec on purpose (no ``background``
key, 500s), so most tests use ``plain``, an SDK client that does not check them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from durable_assistants.emulator.config import COMPAT_SWITCHES, CompatConfig
from durable_assistants.emulator.server import build_parser, config_from_args
from tests.conftest import script

RESPONSES_SWITCHES = [
    "responses_background_ignored",
    "responses_retrieve_unsupported",
    "responses_cancel_unsupported",
    "responses_background_stream_as_json",
    "previous_response_id_ignored",
    "conversations_absent",
    "unknown_response_400",
    "long_response_ids",
]
NOT_SUPPORTED = {"error": {"message": "not supported", "type": "server_error", "param": None, "code": None}}
NOT_FOUND = {"error": {"message": "Not Found", "type": "invalid_request_error", "param": None, "code": None}}
ADD = {
    "type": "function",
    "name": "add",
    "strict": True,
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False},
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
}
ONE_ROUND = "go\n" + script(rounds=[[{"name": "add", "arguments": {"a": 1}}]], reply="sum: {outputs}")


@pytest.fixture
def plain(emulator: Any, admin: httpx.Client) -> Iterator[OpenAI]:
    """An SDK client that does not check bodies against OpenAI's spec (``admin`` resets the switches after the test)."""
    with OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(emulator: Any, admin: httpx.Client) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": "Bearer sk-test"}, timeout=30) as client:
        yield client


def switch(admin: httpx.Client, name: str, on: bool = True) -> None:
    admin.patch("/config", json={"compat": {name: on}}).raise_for_status()


def wait_done(plain: OpenAI, response_id: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = plain.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        assert time.monotonic() < deadline, f"response {response_id} still {response.status}"
        time.sleep(0.02)


def sse_names(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            body = json.loads(line[len("data: ") :])
            events.append((body["type"], body))
    return events


def outputs_for(response: Any, output: str) -> list[dict[str, str]]:
    return [
        {"type": "function_call_output", "call_id": item.call_id, "output": output}
        for item in response.output
        if item.type == "function_call"
    ]


# ---------------------------------------------------------------------------- the switches exist


def test_the_responses_switches_are_off_by_default_and_named_on_the_command_line(admin: httpx.Client) -> None:
    assert set(RESPONSES_SWITCHES) <= set(COMPAT_SWITCHES)
    compat = admin.get("/config").json()["compat"]
    assert {name: compat[name] for name in RESPONSES_SWITCHES} == dict.fromkeys(RESPONSES_SWITCHES, False)
    assert all(CompatConfig.model_fields[name].description for name in RESPONSES_SWITCHES)
    args = build_parser().parse_args(["--compat", "long-response-ids,conversations_absent"])
    assert config_from_args(args).compat.on() == ["conversations_absent", "long_response_ids"]


# ---------------------------------------------------------------------------- background ignored


def test_responses_background_ignored(plain: OpenAI, admin: httpx.Client, http: httpx.Client) -> None:
    slow = "x\n" + script(reply="done", turn_seconds=0.3)
    started = time.monotonic()
    queued = plain.responses.create(model="gpt-4o", input=slow, background=True)
    assert time.monotonic() - started < 0.3
    assert queued.status == "queued" and queued.background is True  # OpenAI: answers at once, queued

    switch(admin, "responses_background_ignored")
    started = time.monotonic()
    raw = http.post("/responses", json={"model": "gpt-4o", "input": slow, "background": True})
    elapsed = time.monotonic() - started
    body = raw.json()
    assert raw.status_code == 200 and elapsed >= 0.3  # answered once the turn was over
    assert body["status"] == "completed" and body["output"][0]["content"][0]["text"] == "done"
    assert "background" not in body  # no key at all, not even null
    assert "background" not in http.get(f"/responses/{body['id']}").json()
    # Through the SDK: a finished response whose `background` is absent (None).
    response = plain.responses.create(model="gpt-4o", input="hi", background=True)
    assert response.status == "completed" and response.output_text == "You said: hi" and response.background is None

    # A streamed create still streams, as a foreground response: no `queued`, no `background` anywhere.
    with http.stream("POST", "/responses", json={"model": "gpt-4o", "input": "hey", "background": True, "stream": True}) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = sse_names(streamed)
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    assert all("background" not in body["response"] for _, body in events if "response" in body)


# ---------------------------------------------------------------------------- retrieve and cancel unsupported


def test_responses_retrieve_unsupported(plain: OpenAI, admin: httpx.Client, http: httpx.Client) -> None:
    response = plain.responses.create(model="gpt-4o", input="hi", background=True)
    assert wait_done(plain, response.id).output_text == "You said: hi"  # OpenAI: retrievable
    assert http.get(f"/responses/{response.id}", params={"stream": "true"}).status_code == 200

    switch(admin, "responses_retrieve_unsupported")
    with pytest.raises(openai.InternalServerError, match="not supported"):
        plain.responses.retrieve(response.id)
    for path, params in [
        (f"/responses/{response.id}", {}),
        (f"/responses/{response.id}", {"stream": "true", "starting_after": "2"}),
        ("/responses/resp_unknown", {}),
    ]:
        refused = http.get(path, params=params)
        assert (refused.status_code, refused.json()) == (500, NOT_SUPPORTED), path
        assert refused.headers["content-type"] == "application/json"
    # Other operations still work.
    assert [i.type for i in plain.responses.input_items.list(response.id)] == ["message"]
    assert plain.responses.create(model="gpt-4o", input="again").output_text == "You said: again"

    switch(admin, "responses_retrieve_unsupported", False)
    assert plain.responses.retrieve(response.id).status == "completed"


def test_responses_cancel_unsupported(plain: OpenAI, admin: httpx.Client, http: httpx.Client) -> None:
    slow = "x\n" + script(reply="late", turn_seconds=5)
    switch(admin, "responses_cancel_unsupported")
    response = plain.responses.create(model="gpt-4o", input=slow, background=True)
    with pytest.raises(openai.InternalServerError, match="not supported"):
        plain.responses.cancel(response.id)
    refused = http.post(f"/responses/{response.id}/cancel")
    assert (refused.status_code, refused.json()) == (500, NOT_SUPPORTED)
    assert http.post("/responses/resp_unknown/cancel").status_code == 500
    assert plain.responses.retrieve(response.id).status in ("queued", "in_progress")  # it goes on

    switch(admin, "responses_cancel_unsupported", False)
    assert plain.responses.cancel(response.id).status == "cancelled"  # OpenAI: cancels


# ---------------------------------------------------------------------------- background stream as JSON


def test_responses_background_stream_as_json(plain: OpenAI, admin: httpx.Client, http: httpx.Client) -> None:
    body = {"model": "gpt-4o", "input": "streamed?", "background": True, "stream": True}
    with http.stream("POST", "/responses", json=body) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")  # OpenAI: an event stream
        assert [name for name, _ in sse_names(streamed)][:3] == ["response.created", "response.queued", "response.in_progress"]

    switch(admin, "responses_background_stream_as_json")
    raw = http.post("/responses", json=body)
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    queued = raw.json()
    assert queued["object"] == "response" and queued["status"] == "queued" and queued["background"] is True
    # It runs in the background and can be read, and streamed again, by its ID.
    done = wait_done(plain, queued["id"])
    assert done.status == "completed" and done.output_text == "You said: streamed?"
    with http.stream("GET", f"/responses/{queued['id']}", params={"stream": "true"}) as replay:
        assert [name for name, _ in sse_names(replay)][-1] == "response.completed"

    # The SDK, asked for a stream, finds no events in the JSON body: the response's ID is not seen.
    assert list(plain.responses.create(model="gpt-4o", input="sdk", background=True, stream=True)) == []
    # Without background, a stream is still a stream.
    with http.stream("POST", "/responses", json={**body, "background": False}) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")


# ---------------------------------------------------------------------------- previous_response_id ignored


def test_previous_response_id_ignored(plain: OpenAI, admin: httpx.Client) -> None:
    first = plain.responses.create(model="gpt-4o", input=ONE_ROUND, tools=[ADD])
    second = plain.responses.create(model="gpt-4o", previous_response_id=first.id, input=outputs_for(first, "3"), tools=[ADD])
    assert second.previous_response_id == first.id and second.output_text == "sum: - add: 3"  # OpenAI: the chain counts
    with pytest.raises(openai.NotFoundError):
        plain.responses.create(model="gpt-4o", previous_response_id="resp_unknown", input="hi")

    switch(admin, "previous_response_id_ignored")
    first = plain.responses.create(model="gpt-4o", input=ONE_ROUND, tools=[ADD])
    assert [item.type for item in first.output] == ["function_call"]  # a turn with its user message is unchanged
    second = plain.responses.create(model="gpt-4o", previous_response_id=first.id, input=outputs_for(first, "3"), tools=[ADD])
    # The outputs arrive without their calls or the script: a text reply, no tool round.
    assert second.status == "completed" and second.previous_response_id is None
    assert [item.type for item in second.output] == ["message"]
    assert second.output_text == "Hello from the durable-assistants emulator."
    assert [i.type for i in plain.responses.input_items.list(second.id)] == ["function_call_output"]

    # Unscripted too: the default policy would call every tool again; it replies instead.
    calls = plain.responses.create(model="gpt-4o", input="Paris", tools=[ADD, WEATHER])
    assert [item.name for item in calls.output] == ["add", "get_weather"]
    answered = plain.responses.create(model="gpt-4o", previous_response_id=calls.id, input=outputs_for(calls, "ok"), tools=[ADD, WEATHER])
    assert answered.output_text == "Hello from the durable-assistants emulator."
    # An unknown previous_response_id is no error: it is not looked up.
    assert plain.responses.create(model="gpt-4o", previous_response_id="resp_unknown", input="hi").output_text == "You said: hi"

    # A client that resends the whole history in `input` gets the turn right.
    history = [
        {"role": "user", "content": ONE_ROUND},
        *[{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in first.output],
        *outputs_for(first, "3"),
    ]
    resent = plain.responses.create(model="gpt-4o", previous_response_id=first.id, input=history, tools=[ADD])  # type: ignore[arg-type]
    assert resent.output_text == "sum: - add: 3" and resent.previous_response_id is None


# ---------------------------------------------------------------------------- conversations absent


def test_conversations_absent(plain: OpenAI, admin: httpx.Client, http: httpx.Client) -> None:
    conversation = plain.conversations.create(items=[{"role": "user", "content": "hello"}])  # OpenAI: there are conversations
    assert plain.responses.create(model="gpt-4o", conversation=conversation.id, input="hi").conversation is not None

    switch(admin, "conversations_absent")
    with pytest.raises(openai.NotFoundError, match="Not Found"):
        plain.conversations.create()
    with pytest.raises(openai.NotFoundError):
        plain.conversations.items.list(conversation.id)
    item = {"type": "message", "role": "user", "content": "x"}
    for method, path, body in [
        ("POST", "/conversations", {}),
        ("GET", f"/conversations/{conversation.id}", None),
        ("POST", f"/conversations/{conversation.id}", {"metadata": {"a": "b"}}),
        ("DELETE", f"/conversations/{conversation.id}", None),
        ("POST", f"/conversations/{conversation.id}/items", {"items": [item]}),
        ("GET", f"/conversations/{conversation.id}/items", None),
        ("GET", f"/conversations/{conversation.id}/items/msg_x", None),
        ("DELETE", f"/conversations/{conversation.id}/items/msg_x", None),
        ("GET", "/conversations/conv_unknown", None),
    ]:
        answer = http.request(method, path, json=body)
        assert (answer.status_code, answer.json()) == (404, NOT_FOUND), (method, path)

    created_before = admin.get("/health").json()["responses"]
    for conversation_ref in (conversation.id, {"id": conversation.id}):
        with pytest.raises(openai.NotFoundError) as refused:
            plain.responses.create(model="gpt-4o", conversation=conversation_ref, input="hi")
        assert refused.value.body == {  # type: ignore[comparison-overlap]
            "message": f"Conversation with id '{conversation.id}' not found.",
            "type": "invalid_request_error",
            "param": "conversation",
            "code": None,
        }
    streamed = http.post("/responses", json={"model": "gpt-4o", "conversation": conversation.id, "input": "hi", "stream": True})
    assert streamed.status_code == 404 and streamed.headers["content-type"] == "application/json"
    assert admin.get("/health").json()["responses"] == created_before  # nothing was created

    switch(admin, "conversations_absent", False)
    assert plain.conversations.retrieve(conversation.id).id == conversation.id  # it was only hidden


# ---------------------------------------------------------------------------- unknown response 400


def test_unknown_response_400(plain: OpenAI, admin: httpx.Client, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError):
        plain.responses.retrieve("resp_unknown")  # OpenAI: 404

    switch(admin, "unknown_response_400")
    for call in (
        lambda: plain.responses.retrieve("resp_unknown"),
        lambda: plain.responses.cancel("resp_unknown"),
        lambda: plain.responses.input_items.list("resp_unknown"),
        lambda: plain.responses.delete("resp_unknown"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
        assert refused.value.body["message"] == "Response with id 'resp_unknown' not found."  # type: ignore[index]
    for method, path, params in [
        ("GET", "/responses/resp_unknown", {}),
        ("GET", "/responses/resp_unknown", {"stream": "true"}),
        ("POST", "/responses/resp_unknown/cancel", {}),
        ("GET", "/responses/resp_unknown/input_items", {}),
    ]:
        answer = http.request(method, path, params=params)
        assert answer.status_code == 400 and answer.json()["error"]["code"] is None, (method, path)
    # Known responses are unaffected; an unknown previous_response_id is still a 404.
    known = plain.responses.create(model="gpt-4o", input="hi")
    assert plain.responses.retrieve(known.id).status == "completed"
    with pytest.raises(openai.NotFoundError):
        plain.responses.create(model="gpt-4o", previous_response_id="resp_unknown", input="hi")


# ---------------------------------------------------------------------------- long response IDs


def test_long_response_ids(plain: OpenAI, admin: httpx.Client) -> None:
    usual = plain.responses.create(model="gpt-4o", input="hi")
    assert usual.id.startswith("resp_") and len(usual.id) < 64  # OpenAI-like

    switch(admin, "long_response_ids")
    first = plain.responses.create(model="gpt-4o", input=ONE_ROUND, tools=[ADD], background=True)
    assert first.id.startswith("resp_") and len(first.id) == 425
    assert first.id[len("resp_") :].isalnum()
    done = wait_done(plain, first.id)  # retrievable by it
    second = plain.responses.create(model="gpt-4o", previous_response_id=done.id, input=outputs_for(done, "3"), tools=[ADD])
    assert len(second.id) == 425 and second.previous_response_id == first.id and second.output_text == "sum: - add: 3"
    [message] = second.output
    assert message.id.startswith("msg_") and len(message.id) < 64  # item IDs keep their length
    assert len(plain.responses.input_items.list(second.id).data[0].id) < 64


# ---------------------------------------------------------------------------- the poll-after header


def test_no_poll_after_header_on_response_reads(plain: OpenAI, admin: httpx.Client) -> None:
    response = plain.responses.create(model="gpt-4o", input="x\n" + script(reply="late", turn_seconds=5), background=True)
    read = plain.responses.with_raw_response.retrieve(response.id)
    assert read.headers.get("openai-poll-after-ms") == "20"  # OpenAI: a pacing hint (the session's --poll-after-ms)

    switch(admin, "no_poll_after_header")
    read = plain.responses.with_raw_response.retrieve(response.id)
    assert read.parse().status in ("queued", "in_progress") and read.headers.get("openai-poll-after-ms") is None
