"""Assistants, threads and messages: CRUD through the SDK, pagination, metadata limits."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from tests.conftest import ADD, WEATHER


def test_assistant_crud(client: OpenAI) -> None:
    created = client.beta.assistants.create(
        model="gpt-4o", name="a", description="d", instructions="i", tools=[ADD], metadata={"team": "x"},
        temperature=0.2, top_p=0.9, response_format={"type": "json_object"},
    )
    assert created.id.startswith("asst_") and isinstance(created.created_at, int)
    assert (created.name, created.temperature, created.response_format.type) == ("a", 0.2, "json_object")
    assert client.beta.assistants.retrieve(created.id) == created

    updated = client.beta.assistants.update(created.id, name="b", tools=[ADD, WEATHER], metadata={"team": "y"})
    assert (updated.name, [t.function.name for t in updated.tools], updated.metadata) == ("b", ["add", "get_weather"], {"team": "y"})
    assert updated.instructions == "i"  # untouched fields stay

    deleted = client.beta.assistants.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "assistant.deleted")
    with pytest.raises(openai.NotFoundError) as gone:
        client.beta.assistants.retrieve(created.id)
    assert gone.value.message.endswith(f"No assistant found with id '{created.id}'.")


def test_thread_crud_with_messages(client: OpenAI) -> None:
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "second"}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}], "metadata": {"m": "1"}},
        ],
        metadata={"t": "1"},
    )
    assert thread.id.startswith("thread_") and thread.metadata == {"t": "1"}
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert messages[0].content[0].text.value == "first" and messages[0].status == "completed"
    assert messages[2].content[0].image_url.url == "https://example.com/x.png" and messages[2].metadata == {"m": "1"}

    assert client.beta.threads.update(thread.id, metadata={"t": "2"}).metadata == {"t": "2"}
    assert client.beta.threads.retrieve(thread.id).metadata == {"t": "2"}
    assert client.beta.threads.delete(thread.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_message_crud(client: OpenAI) -> None:
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(thread_id=thread.id, role="user", content="hello", metadata={"a": "b"})
    assert message.id.startswith("msg_") and message.thread_id == thread.id and message.run_id is None
    assert client.beta.threads.messages.retrieve(thread_id=thread.id, message_id=message.id) == message
    updated = client.beta.threads.messages.update(thread_id=thread.id, message_id=message.id, metadata={"a": "c"})
    assert updated.metadata == {"a": "c"}
    deleted = client.beta.threads.messages.delete(thread_id=thread.id, message_id=message.id)
    assert (deleted.deleted, deleted.object) == (True, "thread.message.deleted")
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []


def test_auto_pagination_and_cursors(client: OpenAI) -> None:
    thread = client.beta.threads.create()
    ids = [client.beta.threads.messages.create(thread_id=thread.id, role="user", content=str(i)).id for i in range(7)]

    first = client.beta.threads.messages.list(thread_id=thread.id, limit=3)
    assert [m.id for m in first.data] == ids[::-1][:3] and first.has_more
    assert (first.first_id, first.last_id) == (ids[6], ids[4])
    assert [m.id for m in first] == ids[::-1]  # the SDK follows `after` cursors by itself
    assert [m.id for m in client.beta.threads.messages.list(thread_id=thread.id, order="asc", limit=2)] == ids

    after = client.beta.threads.messages.list(thread_id=thread.id, order="asc", after=ids[2], limit=2)
    assert [m.id for m in after.data] == ids[3:5] and after.has_more
    before = client.beta.threads.messages.list(thread_id=thread.id, order="asc", before=ids[5], limit=2)
    assert [m.id for m in before.data] == ids[3:5] and before.has_more
    last = client.beta.threads.messages.list(thread_id=thread.id, order="asc", after=ids[5])
    assert [m.id for m in last.data] == ids[6:] and not last.has_more

    empty = client.beta.threads.messages.list(thread_id=thread.id, after=ids[0])
    assert (empty.data, empty.first_id, empty.last_id, empty.has_more) == ([], None, None, False)


def test_assistants_list_pages_past_one_hundred(client: OpenAI) -> None:
    made = {client.beta.assistants.create(model="gpt-4o", name=f"p{i}").id for i in range(105)}
    listed = [a.id for a in client.beta.assistants.list(limit=100)]
    assert set(listed) == made and len(listed) == 105


def test_metadata_limits_are_enforced(client: OpenAI) -> None:
    at_limit = {f"k{i}": "v" * 512 for i in range(16)}
    at_limit["k" * 64] = at_limit.pop("k0")
    assert client.beta.threads.create(metadata=at_limit).metadata == at_limit

    for metadata, fragment in [
        ({f"k{i}": "v" for i in range(17)}, "at most 16 properties"),
        ({"k" * 65: "v"}, "at most 64 characters"),
        ({"k": "v" * 513}, "maximum length 512"),
    ]:
        with pytest.raises(openai.BadRequestError) as exc:
            client.beta.threads.create(metadata=metadata)
        assert fragment in exc.value.message and exc.value.param.startswith("metadata")
