"""What operators and followers see of a run: progress events, the UI's current details,
the search attributes, the tool-call log, tokens and cost, the result.

Part of ``AssistantRun`` (``workflows/run.py``), which inherits it; deterministic workflow code."""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():

    from durable_assistants.workflows import search_attributes as sa
    from durable_assistants.workflows.activity_models import ToolOutput
    from durable_assistants.workflows.models import (
        ModelTokens,
        ProgressEvent,
        RunCost,
        RunResult,
        RunSnapshot,
        ToolCall,
        ToolCallRecord,
        TurnTokens,
    )

from durable_assistants.workflows.run_settings import (
    PREVIEW_CHARS,
    PROGRESS_KEPT,
    RECORD_ARGUMENTS_CHARS,
    RECORDS_KEPT,
    RUNNING_TOOLS,
    RUNNING_TOOLS_STATUS,
    SUMMARY_CHARS,
    TURNS_KEPT,
    UPSERT_ONLY_CHANGES,
)
from durable_assistants.workflows.run_state import RunState


class RunView(RunState):
    def _emit(self, kind: str, **fields: object) -> None:
        self._progress.publish(ProgressEvent(kind=kind, at=workflow.now().timestamp(), round=self._round, **fields))

    def _observe(self, snapshot: RunSnapshot) -> None:
        """A new snapshot: tell followers, the UI's details and the search attributes."""
        for event in snapshot.text_tail:  # the turn's last text, carried by the result
            self._progress.publish(event)
        snapshot.text_tail.clear()  # once: a snapshot carried over continue-as-new is observed again
        if snapshot.backend == "responses" and snapshot.run_id is not None and snapshot.run_id not in self._response_ids:
            self._response_ids.append(snapshot.run_id)
        self._count_tokens(snapshot)
        self._emit("status", status=snapshot.status, run_id=snapshot.run_id, thread_id=snapshot.thread_id)
        if self._search_attributes:
            status: str = snapshot.status
            if status == "requires_action" and workflow.patched(RUNNING_TOOLS_STATUS):
                status = RUNNING_TOOLS  # the round starts in this same workflow task
            updates: list[SearchAttributeUpdate[Any]] = [sa.RUN_STATUS.value_set(status)]
            if snapshot.run_id is not None:  # absent means absent: no placeholder in ApiRunId
                updates.insert(0, sa.RUN_ID.value_set(snapshot.run_id))
            if self._request.assistant_id is not None:
                updates.append(sa.ASSISTANT_ID.value_set(self._request.assistant_id))
            if snapshot.thread_id is not None:
                updates.append(sa.THREAD_ID.value_set(snapshot.thread_id))
            names = sorted({c.name for c in snapshot.tool_calls} | {r.name for r in self._records} | self._dropped_tool_names)
            if names:
                updates.append(sa.TOOL_NAMES.value_set(names))
            self._upsert(updates)
        self._set_details(snapshot)

    def _count_tokens(self, snapshot: RunSnapshot) -> None:
        """The tokens the usage reported since the last turn counted: a new turn (each
        response on Responses; the whole run, once it ends, on Assistants)."""
        usage = snapshot.usage
        if usage is None:
            return
        added_in, added_out = usage.prompt_tokens - self._tokens_seen[0], usage.completion_tokens - self._tokens_seen[1]
        if added_in <= 0 and added_out <= 0:
            return  # seen already (a snapshot observed again after continue-as-new)
        self._tokens_seen = (usage.prompt_tokens, usage.completion_tokens)
        turn = TurnTokens(
            turn=(self._turns[-1].turn if self._turns else 0) + 1, id=snapshot.run_id, model=snapshot.model,
            input_tokens=max(added_in, 0), output_tokens=max(added_out, 0),
        )
        self._turns = [*self._turns[-(TURNS_KEPT - 1):], turn]
        used = ModelTokens(model=snapshot.model, input_tokens=turn.input_tokens, output_tokens=turn.output_tokens, turns=1)
        known = self._by_model.get(snapshot.model or "")
        self._by_model[snapshot.model or ""] = used if known is None else known.plus(used)

    def _cost(self) -> RunCost:
        return RunCost(
            input_tokens=self._tokens_seen[0], output_tokens=self._tokens_seen[1],
            turns=list(self._turns), by_model=list(self._by_model.values()),
        )

    def _upsert(self, updates: list) -> None:
        """Upsert the attributes whose value changes (each upsert is a command and a write on
        the server; histories from before the patch upserted every value every time)."""
        if workflow.patched(UPSERT_ONLY_CHANGES):
            current = workflow.info().typed_search_attributes
            updates = [u for u in updates if current.get(u.key) != u.value]
            if not updates:
                return
        workflow.upsert_search_attributes(updates)

    def _set_details(self, snapshot: RunSnapshot, status: str | None = None) -> None:
        """The UI's current details: ``status`` (the run's outcome once it has one), else the
        API run's status."""
        if snapshot.backend == "responses":
            where = f"conversation `{snapshot.thread_id}` · " if snapshot.thread_id else ""
            who = f"{self._request.agent_label} · {where}" + (f"response `{snapshot.run_id}`" if snapshot.run_id else "response (ID not known)")
        else:
            who = f"{self._request.agent_label} · thread `{snapshot.thread_id}` · run `{snapshot.run_id}`"
        done = self._records_dropped + len(self._records) + self._finished_in_round
        lines = [f"**{status or snapshot.status}** · round {self._round} · {done} tool calls done", who]
        if self._pending:
            lines.append("running: " + ", ".join(
                f"{_summary(call, self._private)} since {_clock(started)}" for call, started in self._pending.values()
            ) + " (progress: the pending activity's heartbeat)")
        if self._approvals:
            lines.append("waiting for approval: " + ", ".join(
                f"{_summary(ToolCall(id=p.call_id, name=p.tool, arguments=p.arguments), self._private)} (call {p.call_id}) "
                f"until {_clock(p.deadline)}"
                for p in self._approvals.values()
            ) + f" (durable-assistants approve|reject {workflow.info().workflow_id} CALL)")
        if self._failure:
            lines.append(f"stopped: {self._failure}")
        workflow.set_current_details("\n\n".join(lines))

    def _approvals_changed(self) -> None:
        """The UI's details, and AwaitingApproval where the namespace has it."""
        if self._approval_attribute:
            self._upsert([sa.AWAITING_APPROVAL.value_set(bool(self._approvals))])
        if self._snapshot is not None:
            self._set_details(self._snapshot)

    def _record(
        self, call: ToolCall, output: str, started: object, *, attempts: int, error: str | None, duration: float | None = None
    ) -> tuple[ToolOutput, ToolCallRecord]:
        record = ToolCallRecord(
            round=self._round,
            call_id=call.id,
            name=call.name,
            arguments=_cut(call.arguments, RECORD_ARGUMENTS_CHARS),
            output_preview=output[:PREVIEW_CHARS],
            attempts=attempts,
            duration_seconds=duration if duration is not None else (workflow.now() - started).total_seconds(),  # type: ignore[operator]
            error=error,
        )
        self._emit(
            "tool_finished", tool=call.name, call_id=call.id, attempt=attempts,
            duration_seconds=record.duration_seconds, output_preview=record.output_preview, error=error,
        )
        return ToolOutput(tool_call_id=call.id, output=output), record

    def _trim_records(self) -> None:
        """Keep the newest ``RECORDS_KEPT`` tool-call records; count (and name) the others."""
        dropped = self._records[:-RECORDS_KEPT]
        if dropped:
            self._records = self._records[-RECORDS_KEPT:]
            self._records_dropped += len(dropped)
            self._dropped_tool_names.update(r.name for r in dropped)

    def _result(self, snapshot: RunSnapshot) -> RunResult:
        self._trim_records()
        return RunResult(
            status=snapshot.status,
            run_id=snapshot.run_id,
            thread_id=snapshot.thread_id,
            backend=snapshot.backend,
            response_ids=list(self._response_ids),
            final_text=snapshot.final_text,
            message_ids=snapshot.message_ids,
            usage=snapshot.usage,
            rounds=self._round,
            tool_calls=self._records,
            tool_calls_total=self._records_dropped + len(self._records),
            last_error=snapshot.last_error,
            incomplete_details=snapshot.incomplete_details,
            failure=self._failure,
            cost=self._cost(),
        )


def _clock(timestamp: float) -> str:
    """A time of day in UTC, for the UI's details."""
    seconds = int(timestamp) % 86_400
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d} UTC"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"…[cut: {len(text)} characters]"
    return text[: limit - len(marker)] + marker


def _summary(call: ToolCall, private: bool = False) -> str:
    """A tool call as the UI lists it: ``get_weather({"city": "Lisbon"})``; with payload
    encryption on, only its name and the size of its arguments (summaries are metadata that
    operators read without the codec)."""
    if private:
        return f"{call.name}({len(call.arguments.encode())} bytes of arguments)"
    arguments = call.arguments if len(call.arguments) <= SUMMARY_CHARS else call.arguments[: SUMMARY_CHARS - 1] + "…"
    return f"{call.name}({arguments})"


def _newest_events(state: Any) -> Any:
    """The stream's state with only its newest ``PROGRESS_KEPT`` events: a follower from the
    start reads from there (offsets stay as they were)."""
    if state is None or len(state.log) <= PROGRESS_KEPT:
        return state
    dropped = len(state.log) - PROGRESS_KEPT
    return dataclasses.replace(state, log=state.log[dropped:], base_offset=state.base_offset + dropped)
