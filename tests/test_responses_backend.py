"""The Responses backend's retry paths, driven directly: the emulator over HTTP and the real
SDK, with the activity's side (heartbeat details from an earlier attempt) played by a
``TurnIO``. Each case is one an earlier attempt can leave behind and a workflow test can
only reach by luck of timing: here the timing is set by the emulator's scripts and faults.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from temporalio.exceptions import ApplicationError

import durable_assistants.tools.examples  # noqa: F401
import tests.worker_tools  # noqa: F401  (registers the test tools)
from durable_assistants.activities.backend import TurnIO
from durable_assistants.activities.responses import ResponsesBackend
from durable_assistants.tools import registry
from durable_assistants.workflows.models import MessageInput, RunRequest
from tests.conftest import script

MODEL = "gpt-4o"
TOOLS = [{"type": "function", **t.schema()["function"]} for t in registry]


@pytest.fixture
async def backend(emulator: Any, admin: httpx.Client) -> AsyncIterator[ResponsesBackend]:
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=10)
    yield ResponsesBackend(model, registry)
    await model.close()


def retry(**recalled: Any) -> TurnIO:
    """The second attempt of an activity whose first recorded ``recalled``."""
    return TurnIO(attempt=2, recalled=recalled, key="wf/run")


def request(conversation_id: str, *messages: str) -> RunRequest:
    return RunRequest(
        backend="responses", model=MODEL, conversation_id=conversation_id, messages=[MessageInput(content=m) for m in messages]
    )


def earlier_create(client: OpenAI, conversation_id: str, text: str | None) -> str:
    """What the first attempt did before its reply was lost: create the turn's response."""
    params: dict[str, Any] = {"model": MODEL, "conversation": conversation_id, "background": True, "store": True, "tools": TOOLS}
    if text is not None:
        params["input"] = [{"type": "message", "role": "user", "content": text}]
    return client.responses.create(**params).id


def assistant_messages(client: OpenAI, conversation_id: str) -> list[str]:
    items = client.conversations.items.list(conversation_id, order="asc", limit=100).data
    return [item.id for item in items if item.type == "message" and item.role == "assistant"]  # type: ignore[union-attr]


def hold_next_create(admin: httpx.Client, seconds: float) -> None:
    """The retry's create reaches the server only after the earlier response has ended."""
    rule = {"operation": "responses.create", "nth": 1, "action": "delay", "delay_seconds": seconds}
    admin.post("/faults", json=rule).raise_for_status()


async def test_an_earlier_reply_that_lands_during_the_retrys_create_is_adopted_not_repeated(
    backend: ResponsesBackend, client: OpenAI, admin: httpx.Client
) -> None:
    conversation = client.conversations.create().id
    text = script(reply="the first answer", turn_seconds=1.5)
    earlier_create(client, conversation, text)
    hold_next_create(admin, 3.0)

    snapshot = await backend.start(request(conversation, text), None, "wf/run", False, retry(conversation_head=None))

    assert snapshot.status == "completed" and snapshot.final_text == "the first answer"
    assert len(assistant_messages(client, conversation)) == 1  # the retry's own response was cancelled
    assert admin.get("/stats").json()["faults_fired"] == {"responses.create": 1}


async def test_earlier_calls_that_land_during_the_retrys_create_are_adopted(
    backend: ResponsesBackend, client: OpenAI, admin: httpx.Client
) -> None:
    conversation = client.conversations.create().id
    text = script(rounds=[[{"name": "structured", "arguments": {"n": 1}}]], turn_seconds=1.5)
    earlier = earlier_create(client, conversation, text)
    hold_next_create(admin, 3.0)

    snapshot = await backend.start(request(conversation, text), None, "wf/run", False, retry(conversation_head=None))

    # The retry's create was refused (the calls had no outputs yet); the calls are the turn's.
    calls = [item.call_id for item in client.responses.retrieve(earlier).output if item.type == "function_call"]  # type: ignore[union-attr]
    assert snapshot.status == "requires_action" and [c.id for c in snapshot.tool_calls] == calls


async def test_a_turn_with_no_input_is_not_made_twice(backend: ResponsesBackend, client: OpenAI, admin: httpx.Client) -> None:
    conversation = client.conversations.create().id
    client.conversations.items.create(
        conversation, items=[{"type": "message", "role": "user", "content": script(reply="hello once", turn_seconds=1.0)}]
    )
    head = client.conversations.items.list(conversation, order="desc", limit=1).data[0].id
    earlier_create(client, conversation, None)

    snapshot = await backend.start(request(conversation), None, "wf/run", False, retry(conversation_head=head))

    assert snapshot.status == "completed" and snapshot.final_text == "hello once"
    assert len(assistant_messages(client, conversation)) == 1
    created = [c for c in admin.get("/stats").json()["runs"].values() if c.get("responses_created")]
    assert len(created) == 1


async def test_an_adopted_incomplete_response_stays_incomplete(backend: ResponsesBackend, client: OpenAI) -> None:
    conversation = client.conversations.create().id
    text = script(reply="cut short", end="incomplete")
    earlier = earlier_create(client, conversation, text)
    while client.responses.retrieve(earlier).status in ("queued", "in_progress"):
        time.sleep(0.05)

    snapshot = await backend.start(request(conversation, text), None, "wf/run", False, retry(conversation_head=None))

    assert snapshot.status == "incomplete" and snapshot.tool_calls == []
    assert snapshot.incomplete_details is not None


async def test_a_stream_the_retry_cannot_resume_is_polled(backend: ResponsesBackend, client: OpenAI, admin: httpx.Client) -> None:
    response = client.responses.create(
        model=MODEL, input=script(reply="polled to the end", turn_seconds=0.5), background=True, store=True
    )
    admin.post("/faults", json={"operation": "responses.retrieve", "nth": 1, "action": "error", "status": 400}).raise_for_status()
    io = retry(response_id=response.id, sequence_number=2)
    request = RunRequest(backend="responses", model=MODEL, mode="stream")

    snapshot = await backend.start(request, None, "wf/run", False, io)

    assert snapshot.status == "completed" and snapshot.final_text == "polled to the end"
    assert snapshot.run_id == response.id
    assert admin.get("/stats").json()["faults_fired"] == {"responses.retrieve": 1}


async def test_calls_older_than_the_turn_fail_it_plainly_instead_of_looping(
    backend: ResponsesBackend, client: OpenAI
) -> None:
    """A retried turn with no input on a conversation whose calls (before the recorded head)
    have no outputs: every create is refused, and no read will ever show this turn's outcome."""
    conversation = client.conversations.create().id
    earlier = earlier_create(client, conversation, script(rounds=[[{"name": "structured", "arguments": {"n": 1}}]]))
    while client.responses.retrieve(earlier).status in ("queued", "in_progress"):
        time.sleep(0.05)
    head = client.conversations.items.list(conversation, order="desc", limit=1).data[0].id
    beats: list[dict[str, Any]] = []
    io = TurnIO(attempt=2, recalled={"conversation_head": head}, key="wf/run", heartbeat=beats.append)

    with pytest.raises(ApplicationError) as failure:
        await backend.start(request(conversation), None, "wf/run", False, io)

    assert failure.value.non_retryable and failure.value.type == "ConversationHasUnansweredCalls"
    assert f"conversation {conversation} has function calls from before this turn with no output" in failure.value.message
    assert "No tool output found for function call call_" in failure.value.message
    assert len(beats) >= 3  # it waited between refusals, heartbeating
