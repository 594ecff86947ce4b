"""Finding runs: the visibility queries ``list``, ``cost`` and the HTTP gateway share.

A run is listed from its workflow's search attributes once it has started; a run that still
waits for its turn on a thread or conversation is listed from its queue's ``QueuedRuns``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from durable_assistants.workflows.models import RUN_WORKFLOW_NAME, THREAD_QUEUE_WORKFLOW_NAME

QUEUED = "queued"
QUEUES_LISTED = 1_000  # running queues looked at for queued runs


@dataclass(frozen=True)
class RunFilter:
    """What to list: each set field narrows it. ``assistants`` is a set of allowed assistants
    (the gateway's scoped tokens); ``assistant`` one of them."""

    assistant: str | None = None
    thread: str | None = None
    status: str | None = None
    awaiting_approval: bool = False
    assistants: Sequence[str] | None = None


def quoted(field: str, value: str) -> str:
    """``'value'`` for a query; raises ``ValueError`` for a value a query cannot quote."""
    if "'" in value or '"' in value or "\\" in value:
        raise ValueError(f"invalid value for {field}: {value!r}")
    return f"'{value}'"


def clause(field: str, value: str) -> str:
    """``field = 'value'``; raises ``ValueError`` for a value a query cannot quote."""
    return f"{field} = {quoted(field, value)}"


def visibility_query(found: RunFilter) -> str:
    """The query of the started runs ``found`` selects."""
    clauses = [f"WorkflowType = '{RUN_WORKFLOW_NAME}'"]
    for field, value in (("AssistantId", found.assistant), ("ThreadId", found.thread), ("RunStatus", found.status)):
        if value:
            clauses.append(clause(field, value))
    if found.assistants is not None:
        allowed = [quoted("AssistantId", a) for a in found.assistants]
        clauses.append(f"AssistantId IN ({', '.join(allowed)})" if allowed else "AssistantId = ''")
    if found.awaiting_approval:
        clauses.append("AwaitingApproval = true")
    return " AND ".join(clauses)


def queues_query(found: RunFilter) -> str | None:
    """The running thread queues whose waiting runs are listed; None when the filter excludes
    queued runs (another status, or an assistant: a queue does not say whose runs wait)."""
    if found.assistant or found.assistants is not None or found.awaiting_approval or (found.status and found.status != QUEUED):
        return None
    clauses = [f"WorkflowType = '{THREAD_QUEUE_WORKFLOW_NAME}'", "ExecutionStatus = 'Running'"]
    if found.thread:
        clauses.append(clause("ThreadId", found.thread))
    return " AND ".join(clauses)


def attribute(attributes: Any, name: str) -> Any:
    for pair in attributes:
        if pair.key.name == name:
            return pair.value
    return None


async def queued_rows(client: Client, query: str, limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for queue in client.list_workflows(query, limit=QUEUES_LISTED):
        attributes = queue.typed_search_attributes
        for position, workflow_id in enumerate(attribute(attributes, "QueuedRuns") or [], start=1):
            if len(rows) >= limit:
                return rows
            rows.append(
                {
                    "workflow_id": workflow_id,
                    "workflow_status": QUEUED,  # its workflow starts when its turn comes
                    "run_status": QUEUED,
                    "assistant_id": None,
                    "thread_id": attribute(attributes, "ThreadId"),
                    "started": None,
                    "queue": queue.id,
                    "position": position,
                }
            )
    return rows


async def list_runs(client: Client, found: RunFilter, limit: int) -> list[dict[str, Any]]:
    """Runs ``found`` selects, queued ones first, newest started ones after; at most ``limit``.
    Raises ``ValueError`` for a filter value a query cannot hold, ``RPCError`` from the server."""
    query = visibility_query(found)  # a bad value fails before anything is asked
    queues = queues_query(found)
    rows: list[dict[str, Any]] = []
    if queues is not None:
        rows = await queued_rows(client, queues, limit)
    if found.status != QUEUED and len(rows) < limit:
        started = []
        async for execution in client.list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            started.append(
                {
                    "workflow_id": execution.id,
                    "workflow_status": execution.status.name.lower() if execution.status else None,
                    "run_status": attribute(attributes, "RunStatus"),
                    "assistant_id": attribute(attributes, "AssistantId"),
                    "thread_id": attribute(attributes, "ThreadId"),
                    "started": execution.start_time.isoformat() if execution.start_time else None,
                }
            )
        # A run that just started may still be listed by its queue (visibility lags): once.
        began = {row["workflow_id"] for row in started}
        rows = [row for row in rows if row["workflow_id"] not in began] + started
    return rows[:limit]
