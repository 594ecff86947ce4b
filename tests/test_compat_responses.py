"""Responses runs on servers that are not OpenAI (issue 21): the worker against each of the
emulator's Responses compatibility switches (docs/emulator.md), alone and together as the
gateway they model (a proxy in front of a chat-completions model).

Each scenario runs real in-process workers (Temporal dev server, the emulator over HTTP, the
real SDK): 2 rounds of 3 parallel calls in poll and stream mode, a model turn longer than the
heartbeat timeout, a cancel during a turn, and stateless runs. Each checks, from the run's
result and the emulator's counters, that every round ran once and no model turn was made
twice, or that the run failed at once saying what the server lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

import durable_assistants.tools.examples  # noqa: F401
import tests.worker_tools  # noqa: F401  (registers the test tools)
from durable_assistants import worker
from durable_assistants.tools import registry
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult
from tests.conftest import script
from tests.test_compat_servers import ENDS_WITHIN, ended, switch_on
from tests.test_worker_lifecycle import wait_for
from tests.test_worker_runs import start

MODEL = "gpt-4o"
# Every switch the gateway of issue 21 showed, at once.
GATEWAY = (
    "responses_background_ignored",
    "responses_retrieve_unsupported",
    "responses_cancel_unsupported",
    "previous_response_id_ignored",
    "conversations_absent",
    "unknown_response_400",
    "long_response_ids",
    "no_poll_after_header",
)
TWO_ROUNDS_OF_THREE = script(
    rounds=[
        [{"name": "get_weather", "arguments": {"city": "Oslo"}, "count": 3}],
        [{"name": "convert_temperature", "arguments": {"value": 20, "to": "fahrenheit"}, "count": 3}],
    ],
    reply="Report:\n{outputs}",
)


@contextlib.asynccontextmanager
async def serving(client: Client, emulator: Any, task_queue: str, **options: Any) -> AsyncIterator[None]:
    """Workers whose default API is Responses, with the worker settings ``options``
    (``responses_state``, ``responses_background``)."""
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    try:
        async with worker.WorkerGroup(worker.build_workers(client, model, registry, task_queue, backend="responses", **options)):
            yield
    finally:
        await model.close()


def request(text: str, **fields: Any) -> RunRequest:
    return RunRequest(model=MODEL, instructions="Be brief.", messages=[MessageInput(content=text)], **fields)


def responses_created(admin: httpx.Client) -> int:
    return sum(1 for c in admin.get("/stats").json()["runs"].values() if c.get("responses_created"))


def assert_two_rounds_of_three_once(result: RunResult, admin: httpx.Client) -> None:
    assert result.status == "completed", result.failure
    assert result.rounds == 2
    assert [r.name for r in result.tool_calls] == ["get_weather"] * 3 + ["convert_temperature"] * 3
    assert all(r.attempts == 1 and r.error is None for r in result.tool_calls)
    assert result.final_text is not None and result.final_text.count("- convert_temperature: 68.0") == 3
    assert responses_created(admin) == 3  # one per turn: no turn was made twice


async def failure_of(handle: WorkflowHandle[Any, RunResult]) -> str:
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), ENDS_WITHIN)
    cause = failure.value.cause
    return f"{cause}: {getattr(cause, 'cause', '')}"


# ---------------------------------------------------------------------------- one switch at a time


@pytest.mark.parametrize("mode", ["poll", "stream"])
@pytest.mark.parametrize(
    ("switches", "options", "fields"),
    [
        pytest.param((), {}, {}, id="openai"),
        pytest.param(("responses_background_ignored",), {}, {}, id="background_ignored"),
        pytest.param(("responses_background_stream_as_json",), {}, {}, id="background_stream_as_json"),
        # A server that cannot be polled or cancelled: its worker never asks for background.
        pytest.param(
            ("responses_retrieve_unsupported", "responses_cancel_unsupported"), {"responses_background": "off"}, {},
            id="retrieve_and_cancel_unsupported",
        ),
        pytest.param(("conversations_absent",), {"responses_state": "chain"}, {}, id="conversations_absent"),
        pytest.param(("previous_response_id_ignored",), {}, {"responses_state": "stateless"}, id="previous_response_id_ignored"),
        pytest.param(("unknown_response_400",), {}, {}, id="unknown_response_400"),
        pytest.param(("long_response_ids",), {}, {"responses_state": "chain"}, id="long_response_ids"),
        pytest.param(("no_poll_after_header",), {}, {}, id="no_poll_after_header"),
        pytest.param(GATEWAY, {}, {"responses_state": "stateless"}, id="gateway"),
    ],
)
async def test_two_rounds_of_three_calls_run_once_on_each_server(
    switches: tuple[str, ...], options: dict[str, Any], fields: dict[str, Any], mode: str,
    temporal_client: Client, emulator: Any, task_queue: str, admin: httpx.Client,
) -> None:
    switch_on(admin, *switches)
    async with serving(temporal_client, emulator, task_queue, **options):
        handle = await start(temporal_client, task_queue, request(TWO_ROUNDS_OF_THREE, mode=mode, **fields))
        result = await ended(handle)
    assert_two_rounds_of_three_once(result, admin)
    if "long_response_ids" in switches:
        assert all(len(r) == 425 for r in result.response_ids) and len(result.response_ids) == 3


async def test_a_stateless_run_stores_nothing_and_sends_its_whole_context(
    temporal_client: Client, emulator: Any, task_queue: str, admin: httpx.Client
) -> None:
    """store false, no previous_response_id, no conversation: each turn's input holds every
    item so far (the user's message, the earlier calls and their outputs)."""
    async with serving(temporal_client, emulator, task_queue):
        handle = await start(temporal_client, task_queue, request(TWO_ROUNDS_OF_THREE, responses_state="stateless"))
        result = await ended(handle)
    assert_two_rounds_of_three_once(result, admin)
    assert result.thread_id is None
    assert admin.get("/health").json()["conversations"] == 0
    requests = admin.get("/stats").json()["requests"]
    assert requests.get("responses.retrieve", 0) == 0  # nothing stored, nothing polled


# ---------------------------------------------------------------------------- what a server lacks, said at once


async def test_a_server_without_conversations_fails_a_default_run_at_once_saying_so(
    temporal_client: Client, emulator: Any, task_queue: str, admin: httpx.Client
) -> None:
    switch_on(admin, "conversations_absent")
    async with serving(temporal_client, emulator, task_queue):
        failure = await failure_of(await start(temporal_client, task_queue, request(TWO_ROUNDS_OF_THREE)))
    assert "the model API has no Conversations API (POST /conversations answered 404" in failure
    assert "responses_state 'chain'" in failure and "DA_RESPONSES_STATE" in failure
    assert responses_created(admin) == 0


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_a_chain_the_server_drops_fails_the_run_instead_of_completing_it_early(
    mode: str, temporal_client: Client, emulator: Any, task_queue: str, admin: httpx.Client
) -> None:
    """The server ignores previous_response_id: the second turn would answer without the first
    (the run 'completed' after one of its two rounds). The answer shows it: the run fails."""
    switch_on(admin, "previous_response_id_ignored")
    async with serving(temporal_client, emulator, task_queue, responses_state="chain"):
        failure = await failure_of(await start(temporal_client, task_queue, request(TWO_ROUNDS_OF_THREE, mode=mode)))
    assert "the model API ignored previous_response_id" in failure and "responses_state 'stateless'" in failure
    assert responses_created(admin) == 2


# ---------------------------------------------------------------------------- slow turns and cancels


async def test_turns_longer_than_the_heartbeat_timeout_on_a_foreground_server_are_made_once(
    temporal_client: Client, emulator: Any, task_queue: str, admin: httpx.Client
) -> None:
    """40 s turns (the heartbeat timeout is 30 s, the client's read timeout 5 s here) on a
    server that ignores background, one run polled and one streamed, side by side: each
    create blocks for the whole turn inside the heartbeating activity (the worker learns from
    the answer that the server ran it in the foreground); nothing times out, no turn is made
    twice."""
    switch_on(admin, "responses_background_ignored")
    text = script(reply="slow but sure", turn_seconds=40)
    async with serving(temporal_client, emulator, task_queue):
        handles = [await start(temporal_client, task_queue, request(text, mode=mode)) for mode in ("poll", "stream")]
        results = await asyncio.gather(*(ended(h, within=90) for h in handles))
    for result in results:
        assert result.status == "completed" and result.final_text == "slow but sure", result.failure
    assert responses_created(admin) == 2


@pytest.mark.parametrize(
    ("switches", "options", "fields"),
    [
        pytest.param((), {}, {}, id="openai"),
        pytest.param(("responses_background_ignored",), {"responses_background": "off"}, {}, id="background_ignored"),
        pytest.param(("responses_cancel_unsupported",), {}, {}, id="cancel_unsupported"),
        pytest.param(GATEWAY, {}, {"responses_state": "stateless"}, id="gateway"),
    ],
)
async def test_a_cancel_during_a_turn_ends_the_run_cancelled(
    switches: tuple[str, ...], options: dict[str, Any], fields: dict[str, Any],
    temporal_client: Client, emulator: Any, task_queue: str, admin: httpx.Client,
) -> None:
    switch_on(admin, *switches)
    text = script(reply="never read", turn_seconds=30)
    async with serving(temporal_client, emulator, task_queue, **options):
        handle = await start(temporal_client, task_queue, request(text, **fields))
        await wait_for(lambda: admin.get("/stats").json()["requests"].get("responses.create", 0) >= 1, "the turn's create")
        await asyncio.sleep(1)
        await handle.cancel()
        result = await ended(handle)
    assert result.status == "cancelled", result.failure
    assert result.failure is not None and result.failure.startswith("the workflow was cancelled")
    if "responses_cancel_unsupported" in switches and "responses_background_ignored" not in switches:
        assert "the API could not cancel response" in result.failure
    assert responses_created(admin) == 1
