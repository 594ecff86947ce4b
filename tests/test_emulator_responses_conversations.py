"""The emulator's Conversations API, and responses that run on a conversation: when items
land in it, the lock while a response runs, and the counters that prove exactly one
response per turn and no duplicate items."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import script
from tests.test_emulator_responses import ADD, TOOLS, WEATHER, outputs_for, stats, wait_done, wait_status

LOCKED = "Another process is currently operating on this conversation. Please retry in a few seconds."


def item_summary(items: Any) -> list[tuple[str, ...]]:
    out = []
    for item in items:
        if item.type == "message":
            out.append(("message", item.role, item.content[0].text))
        elif item.type == "function_call":
            out.append(("function_call", item.name))
        else:
            out.append(("function_call_output", item.output))
    return out


# ---------------------------------------------------------------------------- the conversation object


def test_conversation_lifecycle(client: OpenAI, admin: httpx.Client) -> None:
    conversation = client.conversations.create(metadata={"topic": "demo"}, items=[{"role": "user", "content": "hello"}])
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "demo"} and conversation.created_at > 0
    assert client.conversations.retrieve(conversation.id).model_dump() == conversation.model_dump()

    updated = client.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "changed"}

    deleted = client.conversations.delete(conversation.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (conversation.id, True, "conversation.deleted")
    with pytest.raises(openai.NotFoundError) as gone:
        client.conversations.retrieve(conversation.id)
    assert gone.value.message.endswith(f"Conversation with id '{conversation.id}' not found.")
    assert stats(admin)["threads"][conversation.id] == {"items_added": 1}


def test_empty_conversation(client: OpenAI) -> None:
    conversation = client.conversations.create()
    assert conversation.metadata == {}
    page = client.conversations.items.list(conversation.id)
    assert page.data == [] and page.has_more is False and page.last_id is None


def test_items_create_list_retrieve_delete(client: OpenAI, admin: httpx.Client) -> None:
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]}])
    added = client.conversations.items.create(
        conversation.id,
        items=[
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
            {"type": "function_call", "call_id": "call_x", "name": "add", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_x", "output": "4"},
        ],
    )
    assert len(added.data) == 4 and added.first_id == added.data[0].id and added.last_id == added.data[-1].id
    assert added.has_more is False
    assert [i.status for i in added.data] == ["completed"] * 4
    assert added.data[0].id.startswith("msg_") and added.data[2].id.startswith("fc_") and added.data[3].id.startswith("fco_")
    assert added.data[0].content[0].type == "output_text"  # an assistant's text is output_text

    newest_first = client.conversations.items.list(conversation.id)
    assert item_summary(newest_first.data) == [
        ("function_call_output", "4"),
        ("function_call", "add"),
        ("message", "user", "three"),
        ("message", "assistant", "two"),
        ("message", "user", "one"),
    ]
    page = client.conversations.items.list(conversation.id, limit=2, order="asc")
    assert item_summary(page.data) == [("message", "user", "one"), ("message", "assistant", "two")] and page.has_more
    following = client.conversations.items.list(conversation.id, limit=2, order="asc", after=page.last_id)
    assert item_summary(following.data) == [("message", "user", "three"), ("function_call", "add")]
    assert len(list(client.conversations.items.list(conversation.id, limit=2))) == 5  # auto-paging

    item = client.conversations.items.retrieve(added.data[1].id, conversation_id=conversation.id)
    assert item.id == added.data[1].id and item.content[0].text == "three"
    after_delete = client.conversations.items.delete(added.data[1].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    assert len(client.conversations.items.list(conversation.id).data) == 4
    with pytest.raises(openai.NotFoundError) as missing:
        client.conversations.items.retrieve(added.data[1].id, conversation_id=conversation.id)
    assert missing.value.message.endswith(f"Item with id '{added.data[1].id}' not found.")
    assert stats(admin)["threads"][conversation.id] == {"items_added": 5}


# ---------------------------------------------------------------------------- responses on a conversation


def test_turns_with_tool_calls_on_a_conversation(client: OpenAI, admin: httpx.Client) -> None:
    conversation = client.conversations.create()
    first = client.responses.create(model="gpt-4o", conversation=conversation.id, input="Oslo", tools=TOOLS)
    assert first.conversation is not None and first.conversation.id == conversation.id
    assert [c.name for c in first.output] == ["add", "get_weather"]
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert item_summary(items) == [("message", "user", "Oslo"), ("function_call", "add"), ("function_call", "get_weather")]
    # Output items are the same items, with the same IDs, in the response and the conversation.
    assert [i.id for i in items[1:]] == [c.id for c in first.output]

    second = client.responses.create(model="gpt-4o", conversation={"id": conversation.id}, input=outputs_for(first, "ok"), tools=TOOLS)
    assert second.output_text == "Here is what the 2 tool calls returned:\n- add: ok\n- get_weather: ok"
    assert second.previous_response_id is None and second.conversation.id == conversation.id
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert item_summary(items)[3:] == [
        ("function_call_output", "ok"),
        ("function_call_output", "ok"),
        ("message", "assistant", second.output_text),
    ]

    # A new user turn on the same conversation starts over: the model sees the newest message.
    third = client.responses.create(model="gpt-4o", conversation=conversation.id, input="and now?")
    assert third.output_text == "You said: and now?"

    counters = stats(admin)
    # Exactly one response per turn, and every item added once.
    assert counters["threads"][conversation.id] == {"responses_created": 3, "items_added": 8}
    assert len(client.conversations.items.list(conversation.id, limit=100).data) == 8
    assert counters["runs"][second.id]["function_call_outputs_accepted"] == 2
    assert counters["totals"]["responses_created"] == 3  # the conversation's copy is not counted twice


def test_the_conversations_newest_user_message_drives_the_model(client: OpenAI) -> None:
    directive = script(rounds=[[{"name": "add", "arguments": {"a": 40, "b": 2}}]], reply="answer {outputs}")
    conversation = client.conversations.create(items=[{"role": "user", "content": "compute\n" + directive}])
    first = client.responses.create(model="gpt-4o", conversation=conversation.id, tools=[ADD])  # no input at all
    assert json.loads(first.output[0].arguments) == {"a": 40, "b": 2}
    second = client.responses.create(model="gpt-4o", conversation=conversation.id, input=outputs_for(first, "42"), tools=[ADD])
    assert second.output_text == "answer - add: 42"


def test_input_lands_at_create_and_output_when_completed(client: OpenAI) -> None:
    conversation = client.conversations.create()
    response = client.responses.create(
        model="gpt-4o", conversation=conversation.id, input="x\n" + script(reply="later", turn_seconds=1.0), background=True
    )
    assert response.status == "queued"
    assert [i.type for i in client.conversations.items.list(conversation.id).data] == ["message"]
    assert wait_done(client, response.id).status == "completed"
    assert item_summary(client.conversations.items.list(conversation.id).data)[0] == ("message", "assistant", "later")


@pytest.mark.parametrize("ending", ["failed", "incomplete"])
def test_failed_output_stays_out_incomplete_output_goes_in(client: OpenAI, ending: str) -> None:
    conversation = client.conversations.create()
    response = client.responses.create(model="gpt-4o", conversation=conversation.id, input="x\n" + script(reply="half done", end=ending))
    assert response.status == ending
    kinds = [i.type for i in client.conversations.items.list(conversation.id, order="asc").data]
    assert kinds == (["message"] if ending == "failed" else ["message", "message"])


def test_cancelled_output_stays_out(client: OpenAI) -> None:
    conversation = client.conversations.create()
    response = client.responses.create(
        model="gpt-4o", conversation=conversation.id, input="x\n" + script(reply="never", turn_seconds=30), background=True
    )
    wait_status(client, response.id, "in_progress")
    client.responses.cancel(response.id)
    assert [i.type for i in client.conversations.items.list(conversation.id).data] == ["message"]


def test_a_running_response_locks_its_conversation(client: OpenAI, admin: httpx.Client) -> None:
    conversation = client.conversations.create()
    running = client.responses.create(
        model="gpt-4o", conversation=conversation.id, input="x\n" + script(reply="slow", turn_seconds=30), background=True
    )
    with pytest.raises(openai.BadRequestError) as locked:
        client.responses.create(model="gpt-4o", conversation=conversation.id, input="me too")
    assert locked.value.code == "conversation_locked" and locked.value.status_code == 400
    assert locked.value.message.endswith(LOCKED)
    assert locked.value.body["param"] == "conversation"
    # The refused create left nothing behind.
    assert [i.type for i in client.conversations.items.list(conversation.id).data] == ["message"]
    assert stats(admin)["threads"][conversation.id] == {"responses_created": 1, "items_added": 1}

    client.responses.cancel(running.id)
    after = client.responses.create(model="gpt-4o", conversation=conversation.id, input="now")
    assert after.output_text == "You said: now"


def test_other_conversations_are_not_locked(client: OpenAI) -> None:
    busy = client.conversations.create()
    client.responses.create(model="gpt-4o", conversation=busy.id, input="x\n" + script(reply="slow", turn_seconds=30), background=True)
    idle = client.conversations.create()
    assert client.responses.create(model="gpt-4o", conversation=idle.id, input="free").status == "completed"


def test_conversation_and_previous_response_are_exclusive(client: OpenAI) -> None:
    conversation = client.conversations.create()
    previous = client.responses.create(model="gpt-4o", input="x")
    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(model="gpt-4o", conversation=conversation.id, previous_response_id=previous.id, input="y")
    assert "previous_response_id" in both.value.message and "conversation" in both.value.message
    assert client.conversations.items.list(conversation.id).data == []


def test_unknown_conversation_is_a_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="gpt-4o", conversation="conv_nope", input="x")
    assert missing.value.message.endswith("Conversation with id 'conv_nope' not found.")
    assert missing.value.body["param"] == "conversation"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list("conv_nope")
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.create("conv_nope", items=[{"role": "user", "content": "x"}])


def test_a_weather_call_answered_through_items_create(client: OpenAI) -> None:
    """Outputs may reach the conversation through items.create; the next response sees them."""
    conversation = client.conversations.create()
    first = client.responses.create(model="gpt-4o", conversation=conversation.id, input="Quito", tools=[WEATHER])
    client.conversations.items.create(conversation.id, items=outputs_for(first, "rain"))
    second = client.responses.create(model="gpt-4o", conversation=conversation.id, tools=[WEATHER])
    assert second.output_text == "Here is what the 1 tool call returned:\n- get_weather: rain"
