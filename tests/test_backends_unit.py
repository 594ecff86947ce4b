"""Which API a request is for, and how a request becomes Responses API parameters."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from durable_assistants.activities.responses_wire import Turn, flat_tool, flat_tool_choice, message_item, text_format
from durable_assistants.tools import ToolRegistry
from durable_assistants.workflows.models import MessageInput, RunRequest

ASSISTANTS_TOOL = {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {"type": "object"}, "strict": True}}


def test_a_request_says_which_api_plainly() -> None:
    assert RunRequest(assistant_id="asst_1").implied_backend() == "assistants"
    assert RunRequest(conversation_id="conv_1", model="gpt-4o").implied_backend() == "responses"
    assert RunRequest(prompt={"id": "pmpt_1"}).implied_backend() == "responses"  # type: ignore[arg-type]
    assert RunRequest(model="gpt-4o").implied_backend() is None  # the worker's default decides
    assert RunRequest(backend="responses", model="gpt-4o").implied_backend() == "responses"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"assistant_id": "asst_1", "previous_response_id": "resp_1"}, "assistant_id belong to the Assistants API and previous_response_id to the Responses API"),
        ({"model": "gpt-4o", "conversation_id": "conv_1", "previous_response_id": "resp_1"}, "give conversation_id ('conv_1') or previous_response_id ('resp_1'), not both"),
        ({"backend": "responses"}, "the responses backend needs a model or a stored prompt"),
        ({"backend": "responses", "model": "gpt-4o", "max_prompt_tokens": 500}, "the responses backend has no max_prompt_tokens (got max_prompt_tokens=500)"),
        ({"backend": "assistants", "instructions": "Be brief."}, "the assistants backend needs an assistant_id, or a model"),
        ({"backend": "responses", "model": "gpt-4o", "messages": [{"content": "x", "attachments": [{"file_id": "f"}]}]}, "messages [0] have attachments"),
        ({"backend": "chat"}, "Input should be 'assistants' or 'responses'"),
        ({"model": "gpt-4o", "conversation_id": "conv_1", "responses_state": "chain"}, "responses_state 'chain' does not go with conversation_id ('conv_1')"),
        ({"model": "gpt-4o", "previous_response_id": "resp_1", "responses_state": "conversation"}, "responses_state 'conversation' does not go with previous_response_id ('resp_1')"),
        ({"assistant_id": "asst_1", "responses_state": "chain"}, "assistant_id belong to the Assistants API and responses_state to the Responses API"),
        ({"model": "gpt-4o", "responses_state": "stored"}, "Input should be 'conversation', 'chain' or 'stateless'"),
    ],
)
def test_requests_that_mix_or_lack_api_fields_say_what_is_wrong(fields: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        RunRequest.model_validate(fields)
    assert message in str(error.value)


def test_check_backend_explains_a_request_the_default_backend_cannot_run() -> None:
    with pytest.raises(ValueError, match="the assistants backend needs an assistant_id, or a model"):
        RunRequest(instructions="Be brief.").check_backend("assistants")
    # An inline agent runs on either API.
    RunRequest(model="gpt-4o").check_backend("assistants")
    RunRequest(model="gpt-4o").check_backend("responses")


def test_tools_and_choices_are_flattened_to_the_responses_shape() -> None:
    assert flat_tool(ASSISTANTS_TOOL) == {"type": "function", "name": "add", "description": "Add.", "parameters": {"type": "object"}, "strict": True}
    flat = {"type": "function", "name": "add", "parameters": {}}
    assert flat_tool(flat) == flat and flat_tool({"type": "web_search"}) == {"type": "web_search"}
    assert flat_tool_choice({"type": "function", "function": {"name": "add"}}) == {"type": "function", "name": "add"}
    assert flat_tool_choice("required") == "required"
    schema = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True}}
    assert text_format(schema) == {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
    assert text_format({"type": "json_object"}) == {"type": "json_object"}


def test_messages_become_input_items() -> None:
    assert message_item(MessageInput(content="hi")) == {"type": "message", "role": "user", "content": "hi"}
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "image_file", "image_file": {"file_id": "file_1", "detail": "low"}},
    ]
    assert message_item(MessageInput(content=parts))["content"] == [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"},
        {"type": "input_image", "file_id": "file_1", "detail": "low"},
    ]
    reply = message_item(MessageInput(role="assistant", content=[{"type": "text", "text": "ok"}]))
    assert reply["content"] == [{"type": "output_text", "text": "ok"}]


def test_every_turn_repeats_the_settings_and_tags_what_it_creates() -> None:
    registry = ToolRegistry()

    @registry.tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    request = RunRequest(
        model="gpt-4o", instructions="Be brief.", max_completion_tokens=300, tool_choice="required", metadata={"team": "a"}
    )
    registry_tools = [flat_tool(s) for s in registry.schemas()]
    first = Turn(request, [{"type": "message", "role": "user", "content": "hi"}], None, None, None, "wf-1").params(
        [{"type": "message", "role": "user", "content": "hi"}], registry_tools
    )
    assert first["background"] is True and first["store"] is True
    assert first["model"] == "gpt-4o" and first["instructions"] == "Be brief." and first["max_output_tokens"] == 300
    assert first["metadata"] == {"team": "a", "durable_assistants_key": "wf-1"}
    assert [t["name"] for t in first["tools"]] == ["add"] and "function" not in first["tools"][0]
    assert "previous_response_id" not in first and "conversation" not in first
    later = Turn(request, [], None, "resp_1", None, "wf-1").params([], registry_tools)
    assert later["previous_response_id"] == "resp_1" and "input" not in later and later["instructions"] == "Be brief."
    on_conversation = Turn(request, [], "conv_1", None, None, "wf-1").params([], registry_tools)
    assert on_conversation["conversation"] == "conv_1" and "previous_response_id" not in on_conversation
    # A stored prompt brings its own tools: the registry's are not added.
    prompted = Turn(RunRequest(prompt={"id": "pmpt_1", "version": "2"}), [], None, None, None, "k").params([], registry_tools)  # type: ignore[arg-type]
    assert prompted["prompt"] == {"id": "pmpt_1", "version": "2"} and "tools" not in prompted and "model" not in prompted


def test_a_run_summary_names_the_agent_where_and_the_start_of_the_message() -> None:
    from durable_assistants.workflows.models import SUMMARY_EXCERPT_CHARS, default_summary

    short = RunRequest(assistant_id="asst_1", messages=[{"content": "Plan  my\nweek"}])  # type: ignore[list-item]
    assert default_summary(short, "thread_x") == 'asst_1 on thread_x: "Plan my week"'
    long = RunRequest(model="gpt-4o", messages=[{"content": [{"type": "text", "text": "word " * 40}]}])  # type: ignore[list-item]
    summary = default_summary(long, "a new conversation")
    excerpt = summary.split(": ", 1)[1].strip('"')
    assert summary.startswith("gpt-4o on a new conversation: \"word word") and excerpt.endswith("…")
    assert len(excerpt) <= SUMMARY_EXCERPT_CHARS
    assert default_summary(RunRequest(model="gpt-4o"), "a new thread") == "gpt-4o on a new thread"


def test_poll_pacer_follows_the_servers_hint_exactly_and_else_a_fifth_of_the_turn() -> None:
    from durable_assistants.activities.backend import DEFAULT_POLL_SECONDS, HINT_FLOOR_SECONDS, POLL_FLOOR_SECONDS, PollPacer

    pacer = PollPacer()
    assert pacer.delay() == 0.0  # the first read at once (the server's hint comes with it)
    assert pacer.delay() == POLL_FLOOR_SECONDS  # a turn just started: read soon
    pacer.started -= 1.0
    assert abs(pacer.delay() - 0.2) < 0.01  # a fifth of the second the turn has taken
    pacer.started -= 30.0
    assert pacer.delay() == DEFAULT_POLL_SECONDS  # capped
    pacer.heard("100")
    assert pacer.delay() == 0.1  # the server's pace, exactly
    pacer.heard(None)
    assert pacer.delay() == 0.1  # a read without the header keeps the last hint
    pacer.heard("0")
    assert pacer.delay() == HINT_FLOOR_SECONDS  # never a busy loop
    pacer.heard("soon")
    assert pacer.delay() == DEFAULT_POLL_SECONDS  # a hint that is not a number is ignored


async def test_run_events_skip_what_a_turn_does_not_need_and_build_runs_as_the_sdk_does() -> None:
    import json as _json

    import httpx2
    import openai
    from openai._streaming import ServerSentEvent
    from openai.types.beta.threads import Run

    from durable_assistants.activities.assistants import _run_events

    run = {"id": "run_1", "object": "thread.run", "status": "requires_action", "thread_id": "thread_1", "assistant_id": "asst_1",
           "created_at": 1, "model": "gpt-4o", "instructions": "", "tools": [], "parallel_tool_calls": True,
           "required_action": {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
               {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}}
    delta = {"id": "msg_1", "object": "thread.message.delta", "delta": {"content": [
        {"index": 0, "type": "text", "text": {"value": "Hel"}}, {"index": 1, "type": "image_file", "image_file": {"file_id": "f"}}]}}

    class FakeStream:
        response = httpx2.Response(200, request=httpx2.Request("POST", "http://x/v1/threads/runs"))

        def __init__(self, events: list[tuple[str, object]]) -> None:
            self.events = events

        async def _iter_events(self) -> Any:
            for name, data in self.events:
                yield ServerSentEvent(event=name, data=_json.dumps(data) if not isinstance(data, str) else data)

    got = [x async for x in _run_events(FakeStream([
        ("thread.run.step.created", {"id": "step_1"}), ("thread.message.delta", delta),
        ("thread.message.completed", {"id": "msg_1"}), ("thread.run.requires_action", run), ("done", "[DONE]"),
    ]))]
    assert [name for name, _ in got] == ["thread.message.delta", "thread.run.requires_action"]
    assert got[0][1] == "Hel"
    built = got[1][1]
    assert isinstance(built, Run) and built.required_action is not None
    assert built.required_action.submit_tool_outputs.tool_calls[0].function.name == "f"  # nested objects, as the SDK builds them

    with pytest.raises(openai.APIError, match="the server broke"):
        [x async for x in _run_events(FakeStream([("error", {"error": {"message": "the server broke"}})]))]
