"""A workflow of another team, in another namespace: it enqueues a run through the Nexus
service and awaits its result (tests/test_nexus.py). A module of its own: Temporal's sandbox
imports a workflow's whole module."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_assistants.nexus import DurableAssistantsService, NexusRunInput, NexusRunRef

ENDPOINT = "durable-assistants-test"


@workflow.defn
class CallerWorkflow:
    @workflow.run
    async def run(self, input: NexusRunInput) -> dict[str, Any]:
        nexus = workflow.create_nexus_client(service=DurableAssistantsService, endpoint=ENDPOINT)
        result = await nexus.execute_operation(DurableAssistantsService.enqueue_run, input, schedule_to_close_timeout=timedelta(minutes=5))
        status = await nexus.execute_operation(DurableAssistantsService.get_status, NexusRunRef(request_id=input.request_id))
        return {"result": result, "status": status.status}
