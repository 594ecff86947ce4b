"""How runs read as text: progress events as they happen, a run's result, its live snapshot,
its cost and its callback, each a line or a few. The CLI prints them; so does the demo."""

from __future__ import annotations

import json
import time
from typing import Any

from durable_assistants.workflows.models import LiveSnapshot, ProgressEvent, RunCost, RunResult


def render_event(event: ProgressEvent) -> str | None:
    if event.kind == "status":
        # `round` counts the tool rounds done; a run needing action is about to do the next.
        if event.status == "requires_action":
            return f"● requires_action (round {event.round + 1})"
        return f"● {event.status} after {event.round} tool round{'s' if event.round != 1 else ''}"
    if event.kind == "tool_started":
        return f"  → {event.tool}({event.arguments})"
    if event.kind == "tool_progress":
        return f"    … {event.tool}: {json.dumps(event.progress)}"
    if event.kind == "tool_finished":
        timing = f"{event.duration_seconds:.2f}s, attempt {event.attempt}"
        return f"  ✗ {event.tool} ({timing}): {event.error}" if event.error else f"  ✓ {event.tool} ({timing})"
    if event.kind == "approval_requested":
        return f"  ⏸ {event.tool}({event.arguments}) waits for approval, call {event.call_id}: {event.note}"
    if event.kind == "approval_decided":
        by = f" by {event.by}" if event.by else ""
        return f"  ▶ {event.tool} call {event.call_id}: {event.decision}{by}" + (f" ({event.note})" if event.note else "")
    return None


async def render_progress(handle: Any, clock: bool = False, on_event: Any = None) -> None:
    """Print a run's progress as it happens: a line per event, text deltas inline (and a call
    waiting for approval with the commands that decide it). ``on_event(event)``, if given, is
    called after each event is printed."""
    started = time.monotonic()
    in_text = False
    async for event in handle.progress():
        if event.kind == "text":
            print(event.text, end="", flush=True)
            in_text = True
            continue
        line = render_event(event)
        if line:
            prefix = f"{time.monotonic() - started:5.1f}s " if clock else ""
            print(("\n" if in_text else "") + prefix + line, flush=True)
            in_text = False
            if event.kind == "approval_requested":
                print(f"      durable-assistants approve {handle.workflow_id} {event.call_id} [--note ...] [--edit JSON]\n"
                      f"      durable-assistants reject {handle.workflow_id} {event.call_id} --note ...", flush=True)
        if on_event is not None:
            await on_event(event)
    if in_text:
        print()


def run_reason(result: RunResult) -> str:
    """Why a run that ended without completing ended so."""
    if result.failure:
        return result.failure
    if result.last_error:
        return f"{result.last_error.get('code', 'error')}: {result.last_error.get('message', '')}"
    if result.incomplete_details:
        return f"incomplete: {result.incomplete_details.get('reason', 'unknown reason')}"
    return f"the API {'response' if result.backend == 'responses' else 'run'} ended {result.status}"


def print_result(result: RunResult, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    if result.backend == "responses":
        where = f" on {result.thread_id}" if result.thread_id else ""
        response = f"response {result.run_id}" if result.run_id else "no response ID"
        print(f"{result.status}: {response}{where}, {result.rounds} rounds, {len(result.tool_calls)} tool calls")
    else:
        run = f"run {result.run_id} on {result.thread_id}" if result.run_id else "no run created"
        print(f"{result.status}: {run}, {result.rounds} rounds, {len(result.tool_calls)} tool calls")
    if result.cost is not None:
        print(f"cost: {describe_cost(result.cost)}")
    if result.failure:
        print(f"stopped: {result.failure}")
    if result.callback is not None:
        print(f"callback: {describe_callback(result.callback)}")
    if result.final_text:
        print(result.final_text)


def describe_callback(delivery: Any) -> str:
    attempts = f"{delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
    if delivery.delivered:
        return f"delivered to {delivery.url} ({attempts})"
    last = delivery.last_attempts[-1] if delivery.last_attempts else None
    why = f"; last: {last.error or last.status}" if last is not None else ""
    if delivery.gave_up is None:  # still being delivered
        return f"delivering to {delivery.url} ({attempts} so far{why})"
    return f"not delivered to {delivery.url}: {delivery.gave_up} ({attempts}{why})"


def describe_cost(cost: RunCost) -> str:
    """One line: tokens (by model), the Temporal actions, dollars."""
    models = ", ".join(f"{m.model or 'unknown model'}: {m.turns} turn{'s' if m.turns != 1 else ''}" for m in cost.by_model)
    line = f"{cost.input_tokens:,} tokens in, {cost.output_tokens:,} out" + (f" ({models})" if models else "")
    if cost.actions is not None:
        a = cost.actions
        parts = [f"{a.workflows_started} workflow start{'s' if a.workflows_started != 1 else ''}",
                 f"{a.activities_started} activity attempts ({a.activity_retries} retries)"]
        parts += [f"{value} {name}{'s' if value != 1 else ''}" for name, value in (
            ("signal", a.signals), ("update", a.updates), ("timer", a.timers),
            ("search-attribute upsert", a.search_attribute_upserts), ("child workflow", a.child_workflows),
        ) if value]
        line += f"; {a.total:,} Temporal actions: " + ", ".join(parts)
    if cost.dollars is not None:
        line += f"; ${cost.dollars:.6f}" + (f" (no price for {', '.join(cost.unpriced)})" if cost.unpriced else "")
    return line


def print_snapshot(status: LiveSnapshot, as_json: bool) -> None:
    if as_json:
        print(status.model_dump_json(indent=2))
        return
    what = "response" if status.backend == "responses" else "run"
    if status.source == "server":
        print(f"{status.status} ({status.note}; from the Temporal server)")
    else:
        print(f"{status.status}, round {status.round}, {status.tool_calls_done} tool calls done ({what} {status.run_id})")
    now = time.time()
    for call in status.pending_tool_calls:
        elapsed = now - call.started_at if call.started_at is not None else call.elapsed_seconds
        print(f"  running {call.name}({call.arguments}) for {elapsed:.1f}s")
    if status.cost is not None:
        print(f"  cost so far: {describe_cost(status.cost)}")
    if status.callback is not None:
        print(f"  callback: {describe_callback(status.callback)}")
    for approval in status.pending_approvals:
        print(f"  waiting for approval: {approval.tool}({approval.arguments}) call {approval.call_id}, "
              f"{max(0.0, approval.deadline - now):.0f}s left ({approval.reason})")
    for pending in status.pending_activities:
        if status.source == "worker" and pending.attempt <= 1 and not pending.last_failure:
            continue  # already shown above as a running tool, or a model step going well
        line = f"  activity {pending.name}: {pending.state}, attempt {pending.attempt}"
        if pending.started_at is not None and pending.state == "started":
            line += f", for {now - pending.started_at:.1f}s"
        if pending.last_failure:
            line += f"; last failure: {pending.last_failure}"
        print(line)
