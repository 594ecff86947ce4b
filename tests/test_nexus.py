"""The Nexus service: a workflow in another namespace enqueues a run and awaits its result,
on a dev server of its own with two namespaces, an endpoint made by setup-namespace's code,
the project's workers in one namespace and a caller's worker in the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from openai import AsyncOpenAI
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from durable_assistants import get_run, worker
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.nexus import NexusRunInput
from durable_assistants.operate import SetupError, setup_nexus_endpoint
from durable_assistants.tools import registry
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult
from tests.conftest import eventually, script
from tests.nexus_caller import ENDPOINT, CallerWorkflow

CALLER_NAMESPACE = "caller"


@pytest.fixture(scope="module")
def nexus_server() -> Iterator[TemporalDevServer]:
    with TemporalDevServer(extra_args=["--namespace", CALLER_NAMESPACE]) as server:
        yield server


@pytest.fixture
async def stack(nexus_server: TemporalDevServer, emulator: Any, task_queue: str) -> AsyncIterator[tuple[Client, Client, str]]:
    import durable_assistants.tools.examples  # noqa: F401
    import tests.worker_tools  # noqa: F401

    handler_client = await Client.connect(nexus_server.address, data_converter=pydantic_data_converter)
    caller_client = await Client.connect(nexus_server.address, namespace=CALLER_NAMESPACE, data_converter=pydantic_data_converter)
    try:
        await setup_nexus_endpoint(handler_client, ENDPOINT, task_queue)
    except SetupError as exc:
        if "routes to" not in str(exc):
            raise
        # The endpoint of an earlier test routes to its task queue: point it here.
        from temporalio.api.operatorservice.v1 import DeleteNexusEndpointRequest, ListNexusEndpointsRequest

        [found] = (await handler_client.operator_service.list_nexus_endpoints(ListNexusEndpointsRequest(name=ENDPOINT))).endpoints
        await handler_client.operator_service.delete_nexus_endpoint(DeleteNexusEndpointRequest(id=found.id, version=found.version))
        await setup_nexus_endpoint(handler_client, ENDPOINT, task_queue)
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    caller_queue = f"caller-{uuid.uuid4()}"
    async with worker.WorkerGroup(worker.build_workers(handler_client, model, registry, task_queue)), Worker(
        caller_client, task_queue=caller_queue, workflows=[CallerWorkflow]
    ):
        yield handler_client, caller_client, caller_queue
    await model.close()


@pytest.fixture
def assistant_id(client: Any) -> str:
    return client.beta.assistants.create(model="gpt-4o", tools=[t.schema() for t in registry]).id  # type: ignore[no-any-return]


async def test_a_workflow_in_another_namespace_enqueues_a_run_and_awaits_its_result(
    stack: tuple[Client, Client, str], assistant_id: str
) -> None:
    handler_client, caller_client, caller_queue = stack
    request_id = f"nexus-{uuid.uuid4()}"
    request = RunRequest(assistant_id=assistant_id, messages=[MessageInput(content=script(rounds=[[{"name": "get_weather", "arguments": {"city": "Oslo"}}]], reply="done: {outputs}"))])
    outcome = await caller_client.execute_workflow(
        CallerWorkflow.run, NexusRunInput(request=request, request_id=request_id), id=f"caller-{request_id}", task_queue=caller_queue,
        result_type=dict, execution_timeout=timedelta(minutes=2),
    )
    result = RunResult.model_validate(outcome["result"])
    assert result.status == "completed" and result.final_text is not None and result.final_text.startswith("done: ")
    assert outcome["status"] == "completed"  # get_status, by request ID, after the run
    # The run is the one enqueue_run would have made: the same request ID, the same workflow.
    same = await get_run(handler_client, f"assistant-run/{request_id}").result(cost=False)
    assert same.run_id == result.run_id


async def test_cancelling_the_caller_cancels_the_run(stack: tuple[Client, Client, str], assistant_id: str) -> None:
    handler_client, caller_client, caller_queue = stack
    request_id = f"nexus-cancel-{uuid.uuid4()}"
    slow = script(rounds=[[{"name": "slow", "arguments": {"seconds": 60, "marker": ""}}]], reply="never")
    request = RunRequest(assistant_id=assistant_id, messages=[MessageInput(content=slow)])
    caller = await caller_client.start_workflow(
        CallerWorkflow.run, NexusRunInput(request=request, request_id=request_id), id=f"caller-{request_id}", task_queue=caller_queue,
        execution_timeout=timedelta(minutes=2),
    )
    run = get_run(handler_client, f"assistant-run/{request_id}")

    async def run_status() -> Any:
        try:
            return await run.status()
        except Exception:
            return None  # not enqueued yet

    await eventually(run_status, lambda s: getattr(s, "status", None) == "requires_action", "the run's slow tool", 60)
    await caller.cancel()
    with pytest.raises(WorkflowFailureError):
        await caller.result()
    result = await asyncio.wait_for(run.result(cost=False), 60)
    # EnqueuedRun asked for the run's cancel before it ended cancelled itself.
    history = await handler_client.get_workflow_handle(f"nexus-run/{request_id}").fetch_history()
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    assert scheduled == ["nexus_enqueue_run", "nexus_await_run", "nexus_cancel_run"]
    assert result.status == "cancelled"


async def test_setup_is_idempotent_and_refuses_an_endpoint_routed_elsewhere(stack: tuple[Client, Client, str], task_queue: str) -> None:
    handler_client, _, _ = stack
    assert "already" in await setup_nexus_endpoint(handler_client, ENDPOINT, task_queue)
    with pytest.raises(SetupError) as elsewhere:
        await setup_nexus_endpoint(handler_client, ENDPOINT, "another-queue")
    assert "routes to namespace 'default'" in str(elsewhere.value) and "another-queue" in str(elsewhere.value)
