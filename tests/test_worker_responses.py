"""Responses-only behaviour of the run worker: what has no Assistants counterpart (stored
prompts, a conversation busy with someone else's response, a lost create whose response
then ends without output). Everything both APIs share is in test_worker_runs.py and
test_worker_lifecycle.py, parametrized over the two backends."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from openai import OpenAI
from temporalio.client import Client

from durable_assistants.activities.responses_wire import flat_tool
from durable_assistants.tools import registry
from durable_assistants.workflows.models import RunRequest
from tests.conftest import script
from tests.test_worker_runs import history_events, message, scheduled_activities, start


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"max_cached_workflows": 0, "backend": "responses"}


async def test_a_stored_prompt_is_the_agent(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, client: OpenAI
) -> None:
    weather = next(flat_tool(t.schema()) for t in registry if t.name == "get_weather")
    prompt = {"version": "3", "instructions": "You are {{persona}}.", "model": "gpt-4o", "tools": [weather]}
    admin.put("/prompts/pmpt_weather", json=prompt).raise_for_status()
    request = RunRequest(
        prompt={"id": "pmpt_weather", "variables": {"persona": "a forecaster"}},  # type: ignore[arg-type]
        messages=[message("Oslo?\n" + script(rounds=[[{"name": "get_weather", "arguments": {"city": "Oslo"}}]]))],
    )
    handle = await start(temporal_client, task_queue, request)
    result = await handle.result()
    assert result.status == "completed" and result.backend == "responses" and result.rounds == 1
    assert result.tool_calls[0].name == "get_weather" and result.tool_calls[0].error is None
    last = client.responses.retrieve(result.run_id)
    assert last.prompt is not None and last.prompt.id == "pmpt_weather"
    assert [t.name for t in last.tools] == ["get_weather"]  # the prompt's tools, not the registry's  # type: ignore[union-attr]
    assert scheduled_activities(await history_events(handle)) == ["start_run", "get_weather", "submit_tool_outputs"]


async def test_a_conversation_busy_with_another_response_is_waited_for(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, client: OpenAI
) -> None:
    conversation = client.conversations.create().id
    theirs = "someone else\n" + script(reply="theirs", turn_seconds=1.5)
    other = client.responses.create(model="gpt-4o", conversation=conversation, background=True, input=theirs)
    request = RunRequest(model="gpt-4o", conversation_id=conversation, messages=[message("mine")], tool_choice="none")
    result = await (await start(temporal_client, task_queue, request)).result()

    assert result.status == "completed" and result.final_text == "You said: mine"
    assert client.responses.retrieve(other.id).status == "completed"
    stats = admin.get("/stats").json()
    assert stats["responses"]["responses.create 400"] >= 1  # conversation_locked, then waited
    items = client.conversations.items.list(conversation, order="asc").data
    assert [(i.role, i.content[0].text) for i in items if i.type == "message"] == [  # type: ignore[union-attr]
        ("user", theirs), ("assistant", "theirs"), ("user", "mine"), ("assistant", "You said: mine"),
    ]


async def test_a_lost_create_whose_response_is_cancelled_is_continued_without_resending(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client, client: OpenAI
) -> None:
    """The first create takes effect but its reply is lost; that response is then cancelled
    (by an operator, say), so it never adds output. The retry finds its message already in
    the conversation, waits while the conversation is busy, then continues the conversation
    without sending the message again."""
    conversation = client.conversations.create().id
    admin.post("/faults", json={"operation": "responses.create", "nth": 1, "action": "drop", "when": "after"}).raise_for_status()
    admin.patch("/config", json={"queue_seconds": 3}).raise_for_status()
    request = RunRequest(model="gpt-4o", conversation_id=conversation, messages=[message("only once")], tool_choice="none")
    handle = await start(temporal_client, task_queue, request)

    async def orphan() -> str:
        while True:
            created = [rid for rid, c in admin.get("/stats").json()["runs"].items() if c.get("responses_created")]
            if created:
                return created[0]
            await asyncio.sleep(0.05)

    orphan_id = await asyncio.wait_for(orphan(), 30)
    # Let the retry find the message and meet the locked conversation at least once.
    while admin.get("/stats").json()["responses"].get("responses.create 400", 0) == 0:
        await asyncio.sleep(0.05)
    client.responses.cancel(orphan_id)
    admin.patch("/config", json={"queue_seconds": 0}).raise_for_status()
    result = await handle.result()

    assert result.status == "completed" and result.final_text == "You said: only once"
    assert orphan_id not in result.response_ids and client.responses.retrieve(orphan_id).status == "cancelled"
    items = client.conversations.items.list(conversation, order="asc").data
    assert [(i.role, i.content[0].text) for i in items if i.type == "message"] == [  # type: ignore[union-attr]
        ("user", "only once"), ("assistant", "You said: only once"),
    ]
