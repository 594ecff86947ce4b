"""Every wait of a run has a bound, and the run says which bound ended it: a model API that
stays down, an API run that will not stop, a tool queue that no worker polls."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from openai import OpenAI
from temporalio.client import Client

from durable_assistants.client import RunFailedError, enqueue_run
from durable_assistants.workflows.models import LiveSnapshot, RunRequest
from tests.conftest import script
from tests.test_worker_runs import TOOLS, message
from tests.worker_tools import HEAVY_QUEUE

# Bounds for "ends by itself": far above the budgets the tests set, far below "forever".
ENDS_WITHIN = 90.0


@pytest.fixture
def worker_options(task_queue: str) -> dict[str, Any]:
    """Workers for the run's own task queue only: the `heavy` tool's queue has no worker."""
    return {"queues": [task_queue]}


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]


async def enqueue(temporal_client: Client, task_queue: str, request: RunRequest) -> Any:
    return await enqueue_run(temporal_client, request, request_id=f"bounded-{uuid.uuid4().hex[:8]}", task_queue=task_queue)


async def test_a_model_api_that_stays_down_fails_the_run_when_its_budget_runs_out(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client
) -> None:
    admin.post("/faults", json={"operation": "runs.create", "action": "error", "status": 503}).raise_for_status()
    request = RunRequest(assistant_id=assistant_id, messages=[message("hi")], model_api_budget_seconds=4)
    handle = await enqueue(temporal_client, task_queue, request)
    with pytest.raises(RunFailedError) as failed:
        await asyncio.wait_for(handle.result(), ENDS_WITHIN)
    assert "starting the run: model API unavailable since " in failed.value.reason
    assert "HTTP 503" in failed.value.reason  # the last error the retries met


async def test_an_api_run_that_will_not_stop_still_ends_the_cancelled_run(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client
) -> None:
    """The server refuses every cancel: the workflow gives up after its cleanup bound and says
    in what state it left the API run, instead of retrying the cancel forever."""
    admin.post("/faults", json={"operation": "runs.cancel", "action": "error", "status": 500}).raise_for_status()
    slow = script(rounds=[[{"name": "slow", "arguments": {"seconds": 30, "marker": ""}}]])
    request = RunRequest(assistant_id=assistant_id, messages=[message(slow)], model_api_budget_seconds=5)
    handle = await enqueue(temporal_client, task_queue, request)
    for _ in range(100):  # until the slow tool runs
        status = await handle.status()
        if isinstance(status, LiveSnapshot) and status.pending_tool_calls:
            break
        await asyncio.sleep(0.1)
    await handle.cancel()
    result = await asyncio.wait_for(handle.result(), ENDS_WITHIN)
    assert result.status == "cancelled"
    assert result.failure is not None
    assert f"the API run {result.run_id} was left in status requires_action" in result.failure


async def test_a_tool_whose_queue_no_worker_polls_is_answered_with_an_error(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str
) -> None:
    rounds = [[{"name": "heavy", "arguments": {"n": 2}}]]
    request = RunRequest(
        assistant_id=assistant_id, messages=[message(script(rounds=rounds, reply="Done: {outputs}"))], tool_queue_wait_seconds=2
    )
    handle = await enqueue(temporal_client, task_queue, request)
    result = await asyncio.wait_for(handle.result(), ENDS_WITHIN)
    assert result.status == "completed"
    [call] = result.tool_calls
    assert call.error == f"no worker polled task queue {HEAVY_QUEUE!r} for 2 s, so it never started"
    assert call.attempts == 0
    assert "no worker polled task queue" in (result.final_text or "")  # the model was told


async def test_a_run_of_300_rounds_with_50_kb_arguments_finishes_carrying_bounded_state(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, admin: httpx.Client
) -> None:
    """What a run carries stays bounded: the records' arguments are cut, only the newest
    records and progress events cross continue-as-new, and the result says how many calls
    there were in all."""
    rounds = [[{"name": "get_weather", "arguments": {"city": f"{i:03d}" + "x" * 50_000}, "count": 2}] for i in range(300)]
    admin.put("/scenarios/long-run", json={"rounds": rounds, "reply": "done"}).raise_for_status()
    request = RunRequest(
        assistant_id=assistant_id, messages=[message("go")], metadata={"emulator_scenario": "long-run"}, output_cap_chars=64
    )
    handle = await enqueue(temporal_client, task_queue, request)
    result = await asyncio.wait_for(handle.result(), 600)
    assert result.status == "completed" and result.rounds == 300
    assert result.tool_calls_total == 600 and len(result.tool_calls) == 500  # the newest RECORDS_KEPT
    assert result.tool_calls[0].round == 51
    assert all(len(call.arguments) <= 1_000 and call.arguments.endswith("characters]") for call in result.tool_calls)
    assert result.tool_calls[-1].arguments.startswith('{"city":"299')
    assert len(result.model_dump_json()) < 800_000
    # It continued as new many times (each carrying 500 records at most, not 30 MB of arguments).
    executions = 0
    for _ in range(40):  # visibility lags a little behind
        executions = len([e async for e in temporal_client.list_workflows(f"WorkflowId = '{handle.workflow_id}'")])
        if executions > 1:
            break
        await asyncio.sleep(0.25)
    assert executions > 1
