"""Human approval of tool calls, end to end on both APIs: a real dev server, the emulator,
in-process workers that replay every workflow task (``max_cached_workflows=0``: a decision
is taken by a worker that rebuilt the waiting run from its history, as after a crash)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

import tests.worker_tools  # noqa: F401  (registers refund)
from durable_assistants import ApprovalError, awaiting_approval, enqueue_run
from durable_assistants.client import RunHandle
from durable_assistants.workflows.models import PendingApproval, RunResult
from tests.apis import Api
from tests.conftest import eventually, script
from tests.test_cli import cli  # noqa: F401  (fixture)


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"max_cached_workflows": 0}


BIG = {"name": "refund", "arguments": {"order_id": "o-1", "amount": 500}}
SMALL = {"name": "refund", "arguments": {"order_id": "o-2", "amount": 5}}
WEATHER = {"name": "get_weather", "arguments": {"city": "Lisbon"}}


async def enqueue(client: Client, task_queue: str, api: Api, calls: list[dict[str, Any]], **fields: Any) -> RunHandle:
    request = api.request([script(rounds=[calls], reply="Done:\n{outputs}")], **fields)
    return await enqueue_run(client, request, request_id=f"approval-{uuid.uuid4()}", task_queue=task_queue)


async def waiting(handle: RunHandle, count: int = 1) -> list[PendingApproval]:
    return await eventually(handle.pending_approvals, lambda got: len(got) == count, f"{count} calls waiting for approval")


def record_of(result: RunResult, order_id: str) -> Any:
    return next(r for r in result.tool_calls if r.name == "refund" and order_id in r.arguments)


async def test_approved_call_runs_the_others_do_not_wait(
    api: Api, temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client
) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG, SMALL, WEATHER], mode="stream")
    [pending] = await waiting(handle)
    assert pending.tool == "refund" and json.loads(pending.arguments) == {"order_id": "o-1", "amount": 500}
    assert "approval check flagged" in pending.reason and pending.deadline > pending.requested_at
    # The calls that need no approval ran at once, while this one waits.
    events = []

    async def collect() -> None:
        async for event in handle.progress():
            events.append(event)
            if sum(e.kind == "tool_finished" for e in events) == 2:
                return

    await asyncio.wait_for(collect(), 10)
    assert [e.call_id for e in events if e.kind == "approval_requested"] == [pending.call_id]
    assert pending.call_id not in {e.call_id for e in events if e.kind == "tool_finished"}
    assert await handle.pending_approvals() == [pending]  # still waiting after the others finished
    # Findable: the search attribute, the CLI's listing, the UI's details.
    found = await eventually(
        lambda: awaiting_approval(temporal_client), lambda rows: any(w == handle.workflow_id for w, _ in rows), "awaiting_approval"
    )
    assert [c.call_id for w, c in found if w == handle.workflow_id] == [pending.call_id]
    details = await current_details(temporal_client.get_workflow_handle(handle.workflow_id))
    assert f"waiting for approval: refund({pending.arguments}) (call {pending.call_id})" in details

    decided = await handle.approve(pending.call_id, note="customer is right", by="alice")
    assert decided.decision == "approved" and decided.by == "alice"
    result = await handle.result()

    assert result.status == "completed"
    big = record_of(result, "o-1")
    assert big.output_preview == "refunded 500.00 on o-1" and big.error is None
    assert big.approval is not None and big.approval.decision == "approved"
    assert (big.approval.by, big.approval.note) == ("alice", "customer is right")
    assert record_of(result, "o-2").approval is None  # under the threshold: no decision needed
    assert "refunded 500.00 on o-1" in (result.final_text or "")
    kinds = [e.kind async for e in _all_events(handle)]
    assert kinds.count("approval_requested") == 1 and kinds.count("approval_decided") == 1
    # No longer awaiting: the attribute is false once the call was decided.
    await eventually(
        lambda: awaiting_approval(temporal_client), lambda rows: all(w != handle.workflow_id for w, _ in rows), "not awaiting"
    )
    query = f"WorkflowId = '{handle.workflow_id}' AND AwaitingApproval = false"
    await eventually(lambda: _count(temporal_client, query), lambda n: n == 1, "AwaitingApproval = false")


async def current_details(handle: Any) -> str:
    """The workflow's current details, as the UI reads them (the SDK's metadata query)."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def _all_events(handle: RunHandle) -> Any:
    async for event in handle.progress():
        yield event


async def _count(client: Client, query: str) -> int:
    return len([e async for e in client.list_workflows(query)])


async def test_rejected_call_never_runs_and_the_model_is_told_why(
    api: Api, temporal_client: Client, task_queue: str, workers: None
) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG])
    [pending] = await waiting(handle)

    # What cannot be taken is refused, naming what was wrong, and changes nothing.
    with pytest.raises(ApprovalError, match="needs a note"):
        await handle.reject(pending.call_id, "  ", by="bob")
    with pytest.raises(ApprovalError, match=r"no tool call 'call_nope' waits for approval .*refund"):
        await handle.approve("call_nope", by="bob")
    with pytest.raises(ApprovalError, match=r"edited_arguments do not match refund's parameters: .*amount"):
        await handle.approve(pending.call_id, edited_arguments={"order_id": "o-1"}, by="bob")
    with pytest.raises(ApprovalError, match=r"amount: 'lots' is not of type 'number'"):
        await handle.approve(pending.call_id, edited_arguments={"order_id": "o-1", "amount": "lots"}, by="bob")
    assert [p.call_id for p in await handle.pending_approvals()] == [pending.call_id]

    await handle.reject(pending.call_id, "over the limit for this customer", by="bob")
    result = await handle.result()

    big = record_of(result, "o-1")
    assert big.output_preview == "Error: this call was rejected by bob: over the limit for this customer"
    assert big.attempts == 0 and big.approval is not None and big.approval.decision == "rejected"
    assert result.status == "completed" and "rejected by bob" in (result.final_text or "")
    with pytest.raises(ApprovalError, match="has ended"):
        await handle.approve(pending.call_id, by="late")


async def test_edited_call_runs_with_the_edited_arguments_and_both_are_kept(
    api: Api, temporal_client: Client, task_queue: str, workers: None
) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG])
    [pending] = await waiting(handle)
    await handle.approve(pending.call_id, edited_arguments={"order_id": "o-1", "amount": 50}, note="partial", by="carol")
    result = await handle.result()

    big = result.tool_calls[0]
    assert big.output_preview == "refunded 50.00 on o-1"
    assert json.loads(big.arguments) == {"order_id": "o-1", "amount": 50}
    assert big.approval is not None and big.approval.decision == "edited"
    assert json.loads(big.approval.original_arguments or "") == {"order_id": "o-1", "amount": 500}
    assert api.tool_outputs_seen(result) == ["refunded 50.00 on o-1"]


async def test_two_people_deciding_at_once_one_wins(api: Api, temporal_client: Client, task_queue: str, workers: None) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG])
    [pending] = await waiting(handle)
    outcomes = await asyncio.gather(
        handle.approve(pending.call_id, by="dave"),
        handle.reject(pending.call_id, "no", by="erin"),
        return_exceptions=True,
    )
    wins = [o for o in outcomes if not isinstance(o, Exception)]
    losses = [o for o in outcomes if isinstance(o, Exception)]
    assert len(wins) == 1 and len(losses) == 1, outcomes
    assert isinstance(losses[0], ApprovalError) and "already decided" in str(losses[0])
    result = await handle.result()
    assert result.tool_calls[0].approval is not None and result.tool_calls[0].approval.by == wins[0].by


async def test_no_decision_in_time_rejects_with_a_note(api: Api, temporal_client: Client, task_queue: str, workers: None) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG], approval_timeout_seconds=1)
    result = await handle.result()

    big = result.tool_calls[0]
    assert result.status == "completed"
    assert big.output_preview == "Error: this call was not approved: no decision within 1 s."
    assert big.approval is not None and big.approval.decision == "timed_out"
    with pytest.raises(ApprovalError, match="has ended"):
        await handle.approve(big.call_id)


async def test_no_decision_in_time_can_fail_the_run(api: Api, temporal_client: Client, task_queue: str, workers: None) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG, WEATHER], approval_timeout_seconds=1, approval_on_timeout="fail_run")
    result = await handle.result()

    assert result.status == "failed"
    assert result.failure is not None and "was not approved in time (no decision within 1 s)" in result.failure
    assert api.api_status(result) == api.status_after_stop


async def test_the_request_decides_for_one_run(api: Api, temporal_client: Client, task_queue: str, workers: None) -> None:
    """'always' flags a tool that needs none (an inline one too: it then runs as an activity
    once approved); 'never' lets a flagged call through."""
    inline = {"name": "inline_lookup", "arguments": {"key": "k", "fail_first": 0}}
    handle = await enqueue(
        temporal_client, task_queue, api, [BIG, WEATHER, inline],
        approval={"refund": "never", "get_weather": "always", "inline_lookup": "always"},
    )
    pending = await waiting(handle, 2)
    assert sorted(p.tool for p in pending) == ["get_weather", "inline_lookup"]
    assert all(p.reason.startswith("this run's request asks approval") for p in pending)
    for p in pending:
        await handle.approve(p.call_id, by="frank")
    result = await handle.result()

    by_name = {r.name: r for r in result.tool_calls}
    assert by_name["refund"].approval is None and by_name["refund"].output_preview == "refunded 500.00 on o-1"
    assert by_name["get_weather"].approval is not None and by_name["inline_lookup"].approval is not None
    assert json.loads(by_name["inline_lookup"].output_preview)["value"] == "K"


async def test_cancel_while_waiting_ends_the_run(api: Api, temporal_client: Client, task_queue: str, workers: None) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG])
    await waiting(handle)
    await handle.cancel()
    result = await handle.result()
    assert result.status == "cancelled"
    assert await handle.pending_approvals() == []


async def test_the_command_line_lists_and_decides(
    api: Api, temporal_client: Client, task_queue: str, workers: None, cli: Any
) -> None:
    handle = await enqueue(temporal_client, task_queue, api, [BIG])
    [pending] = await waiting(handle)
    wid, call = handle.workflow_id, pending.call_id

    rows = await eventually(
        lambda: _cli_json(cli, "approvals", "--json"), lambda got: any(r["workflow_id"] == wid for r in got), "approvals --json"
    )
    mine = [r for r in rows if r["workflow_id"] == wid]
    assert [(r["call_id"], r["tool"]) for r in mine] == [(call, "refund")]
    listed = await _cli_json(cli, "list", "--awaiting-approval", "--json")
    assert wid in [r["workflow_id"] for r in listed]
    code, out, err = await cli("status", wid)
    assert code == 0 and f"waiting for approval: refund({pending.arguments}) call {call}" in out

    for args, expected in [
        (("approve", wid, call, "--edit", "[1]"), "--edit must be a JSON object (the tool's arguments), got list: '[1]'"),
        (("approve", wid, call, "--edit", "{nope"), "--edit is not valid JSON"),
        (("reject", wid, "call_nope", "--note", "x"), "no tool call 'call_nope' waits for approval in this run"),
        (("approve", wid, call, "--edit", '{"order_id": "o-1", "amount": true}'), "amount: True is not of type 'number'"),
        (("reject", wid, call, "--note", " "), "--note must say why the call is rejected"),
    ]:
        code, out, err = await cli(*args)
        assert code == 1 and out == "" and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and expected in err, (args, err)

    code, out, err = await cli("approve", wid, call, "--note", "fine", "--by", "gina")
    assert code == 0 and out.strip() == f"{wid} {call}: approved by gina", err
    result = await handle.result()
    assert result.tool_calls[0].approval is not None and result.tool_calls[0].approval.by == "gina"
    code, out, err = await cli("approve", wid, call)
    assert code == 1 and "has ended (completed)" in err


async def _cli_json(cli: Any, *args: str) -> Any:
    code, out, err = await cli(*args)
    assert code == 0, err
    return json.loads(out)


async def test_a_decision_after_the_deadline_is_refused_while_the_run_goes_on(
    api: Api, temporal_client: Client, task_queue: str, workers: None, tmp_path: Any
) -> None:
    """The round's other call still runs when the wait for this one has ended: a late
    decision is refused, saying the call timed out, and changes nothing."""
    slow = {"name": "slow", "arguments": {"seconds": 4, "marker": str(tmp_path / "slow-marker")}}
    handle = await enqueue(temporal_client, task_queue, api, [BIG, slow], approval_timeout_seconds=1)
    [pending] = await waiting(handle)
    await eventually(handle.pending_approvals, lambda got: got == [], "the wait to end", 10)
    with pytest.raises(ApprovalError, match=f"tool call {pending.call_id} was already decided: timed_out"):
        await handle.approve(pending.call_id, by="late")
    result = await handle.result()

    big = record_of(result, "o-1")
    assert big.approval is not None and big.approval.decision == "timed_out" and big.approval.by is None
    assert result.status == "completed"
