"""What an operator finds of a thread's queue in the Temporal UI and with `durable-assistants
list`: its ThreadId, the runs waiting in it (QueuedRuns), its current details, and that it says
so when it is idle. Against a real dev server, in-process workers and the emulator."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from openai import OpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle

from durable_assistants.client import enqueue_run
from durable_assistants.workflows.thread_queue import DETAILS_WAITING_SHOWN, QUEUE_SEARCH_ATTRIBUTES, queue_workflow_id
from tests.conftest import eventually
from tests.test_cli import cli  # noqa: F401  (fixture)
from tests.test_queue_limits import assistant_id, blocker, small  # noqa: F401  (assistant_id: a fixture)

WAITING = DETAILS_WAITING_SHOWN + 2  # more than the details list




async def details(handle: WorkflowHandle[Any, Any]) -> str:
    """The workflow's current details, as the UI reads them (the SDK's metadata query)."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def attributes(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    description = await handle.describe()
    return {pair.key.name: pair.value for pair in description.typed_search_attributes}


async def found(client: Client, query: str) -> list[str]:
    return [w.id async for w in client.list_workflows(query)]


async def test_a_queue_shows_its_thread_its_waiting_runs_and_when_it_is_idle(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, tmp_path: Path, cli: Any  # noqa: F811
) -> None:
    thread = client.beta.threads.create().id
    tag = uuid.uuid4().hex[:8]
    marker = tmp_path / "started"
    running = await enqueue_run(temporal_client, blocker(assistant_id, thread, marker), request_id=f"hold-{tag}", task_queue=task_queue)
    waiting = [
        await enqueue_run(temporal_client, small(assistant_id, thread, f"w{i}"), request_id=f"w{i}-{tag}", task_queue=task_queue)
        for i in range(WAITING)
    ]
    waiting_ids = [h.workflow_id for h in waiting]
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, "the blocker's slow tool did not start"
        await asyncio.sleep(0.1)
    queue = temporal_client.get_workflow_handle(queue_workflow_id(thread))

    # Search attributes: the queue's thread, and the runs waiting in it, in order.
    got = await eventually(lambda: attributes(queue), lambda a: a.get("QueuedRuns") == waiting_ids, "QueuedRuns")
    assert got["ThreadId"] == thread
    await eventually(lambda: found(temporal_client, f'ThreadId = "{thread}" AND WorkflowType = "ThreadQueue"'), lambda ids: ids == [queue.id], "the queue by ThreadId")
    await eventually(lambda: found(temporal_client, f'QueuedRuns = "{waiting_ids[-1]}"'), lambda ids: ids == [queue.id], "the queue by QueuedRuns")

    # Current details: what runs now, the first waiting requests with their position and time, the rest counted.
    text = await eventually(lambda: details(queue), lambda t: f"**waiting** {WAITING}" in t, "the queue's details")
    assert f"**running** `{running.workflow_id}` (request `hold-{tag}`, since " in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`w" in line]
    assert len(rows) == DETAILS_WAITING_SHOWN
    assert rows[0].startswith(f"| 1 | `w0-{tag}` | `{waiting_ids[0]}` | ") and rows[0].endswith(" UTC |")
    assert rows[-1].startswith(f"| {DETAILS_WAITING_SHOWN} | `w{DETAILS_WAITING_SHOWN - 1}-{tag}` |")
    assert f"and {WAITING - DETAILS_WAITING_SHOWN} more" in text and "idle" not in text

    # The command line lists the queued runs, in queue order, before the run under way.
    code, out, err = await cli("list", "--thread", thread, "--json")
    assert code == 0, err
    rows_json = json.loads(out)
    queued = [r for r in rows_json if r["run_status"] == "queued"]
    assert [r["workflow_id"] for r in queued] == waiting_ids[:20]  # --limit 20 by default, queued ones first
    assert queued[0]["position"] == 1 and queued[0]["queue"] == queue.id and queued[0]["thread_id"] == thread
    code, out, err = await cli("list", "--thread", thread, "--status", "queued", "--limit", "100")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == waiting_ids and all(line.split()[1:3] == ["queued", "queued"] for line in lines)

    async def listed(status: str) -> list[str]:
        code, out, err = await cli("list", "--thread", thread, "--status", status, "--json")
        assert code == 0, err
        return [r["workflow_id"] for r in json.loads(out)]

    # The run under way is at its tools (never the queued ones); nothing waits to be submitted.
    await eventually(lambda: listed("running_tools"), lambda ids: ids == [running.workflow_id], "the run under way as running_tools")
    assert await listed("requires_action") == []

    # Release the thread: everything runs, and the queue says it is idle, with no run listed as waiting.
    await running.cancel()
    assert (await running.result()).status == "cancelled"
    assert [(await h.result()).status for h in waiting] == ["completed"] * WAITING
    text = await eventually(lambda: details(queue), lambda t: t.startswith("idle"), "the idle details")
    assert text.startswith("idle: nothing running or waiting; ends after 5 min idle") and f"{WAITING + 1} runs done" in text
    got = await eventually(lambda: attributes(queue), lambda a: not a.get("QueuedRuns"), "QueuedRuns emptied")
    assert got["ThreadId"] == thread
    await eventually(lambda: found(temporal_client, f'QueuedRuns = "{waiting_ids[-1]}"'), lambda ids: ids == [], "no queue holding the run")
    code, out, err = await cli("list", "--thread", thread, "--status", "queued")
    assert (code, out.strip()) == (0, "no runs match"), err


async def test_the_queue_is_findable_from_its_first_workflow_task(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI
) -> None:
    thread = client.beta.threads.create().id
    handle = await enqueue_run(temporal_client, small(assistant_id, thread, "hi"), task_queue=task_queue)
    assert (await handle.result()).status == "completed"
    queue = temporal_client.get_workflow_handle(queue_workflow_id(thread))
    events = [e async for e in queue.fetch_history_events()]
    first_task_done = next(i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    first_task = events[first_task_done + 1 :]
    # The patch marker, then ThreadId, in the commands of the first workflow task, before the run starts.
    upserts = [i for i, e in enumerate(first_task) if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    markers = [e for e in first_task if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    child = next(i for i, e in enumerate(first_task) if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    assert upserts and upserts[0] < child
    assert any(QUEUE_SEARCH_ATTRIBUTES.encode() in m.marker_recorded_event_attributes.details["patch-data"].payloads[0].data for m in markers)
    # (The SDK upserts TemporalChangeVersion for the patch on its own.)
    upserted = [first_task[i].upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields for i in upserts]
    assert [json.loads(fields["ThreadId"].data) for fields in upserted if "ThreadId" in fields] == [thread]
