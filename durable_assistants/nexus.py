"""The Nexus service ``durable-assistants``: enqueue runs from workflows in other namespaces.

This module is the contract a caller imports (its models and the service definition, no
worker code). In a caller's workflow::

    client = workflow.create_nexus_client(service=DurableAssistantsService, endpoint="durable-assistants")
    result = await client.execute_operation(
        DurableAssistantsService.enqueue_run,
        NexusRunInput(request=RunRequest(...), request_id="order-1234"),
    )                                        # a RunResult, awaited durably

Operations (docs/nexus.md):

- ``enqueue_run`` (asynchronous): enqueues the run as ``enqueue_run`` does, request-ID
  idempotency included, and completes with its ``RunResult``. Cancelling the caller's operation
  (or the caller's workflow) cancels the run.
- ``get_status`` (synchronous): the run's status and live snapshot, by request ID.
- ``cancel_run`` (synchronous): ask the run to cancel, by request ID.
"""

from __future__ import annotations

import nexusrpc
from pydantic import BaseModel, Field

# NexusRunInput is also the input of the EnqueuedRun workflow and its activity, so it is
# defined with the workflows' activity models; a caller imports it from here.
from durable_assistants.workflows.activity_models import NexusRunInput
from durable_assistants.workflows.models import LiveSnapshot, RunResult

__all__ = [
    "DEFAULT_ENDPOINT",
    "SERVICE_NAME",
    "DurableAssistantsService",
    "NexusCancelResult",
    "NexusRunInput",
    "NexusRunRef",
    "NexusRunStatus",
]

SERVICE_NAME = "durable-assistants"
DEFAULT_ENDPOINT = "durable-assistants"


class NexusRunRef(BaseModel):
    request_id: str = Field(min_length=1, max_length=200, description="The request ID the run was enqueued with.")


class NexusRunStatus(BaseModel):
    workflow_id: str
    status: str = Field(description="queued, the run's status while it runs, or its workflow's final status.")
    snapshot: LiveSnapshot | None = None


class NexusCancelResult(BaseModel):
    workflow_id: str
    cancel_requested: bool
    detail: str | None = None


@nexusrpc.service(name=SERVICE_NAME)
class DurableAssistantsService:
    enqueue_run: nexusrpc.Operation[NexusRunInput, RunResult]
    get_status: nexusrpc.Operation[NexusRunRef, NexusRunStatus]
    cancel_run: nexusrpc.Operation[NexusRunRef, NexusCancelResult]
