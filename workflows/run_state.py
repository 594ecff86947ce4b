"""What one run of ``AssistantRun`` keeps, declared for the modules the workflow is split into.

Part of ``AssistantRun`` (``workflows/run.py``), which inherits it; deterministic workflow code."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream, WorkflowTopicHandle

with workflow.unsafe.imports_passed_through():

    from durable_assistants.tools import ToolPolicy
    from durable_assistants.workflows.models import (
        ApprovalRecord,
        CallbackDelivery,
        ModelTokens,
        PendingApproval,
        ProgressEvent,
        RunRequest,
        RunResult,
        RunSnapshot,
        ToolCall,
        ToolCallRecord,
        TurnTokens,
    )



class RunState:
    """What one run keeps, declared once for the modules its workflow is split into
    (``AssistantRunWorkflow.__init__`` sets every field)."""

    _request: RunRequest
    _invalid: str | None
    _snapshot: RunSnapshot | None
    _records: list[ToolCallRecord]
    _records_dropped: int
    _dropped_tool_names: set[str]
    _round: int
    _failure: str | None
    _policies: dict[str, ToolPolicy]
    _search_attributes: bool
    _private: bool
    _pending: dict[str, tuple[ToolCall, float]]
    _response_ids: list[str]
    _callback: CallbackDelivery | None
    _stream: WorkflowStream
    _progress: WorkflowTopicHandle[ProgressEvent]
    _final: RunResult | None
    _finished_in_round: int
    _approvals: dict[str, PendingApproval]
    _decisions: dict[str, ApprovalRecord]
    _edits: dict[str, dict[str, Any]]
    _decided: dict[str, ApprovalRecord]
    _approval_attribute: bool
    _turns: list[TurnTokens]
    _tokens_seen: tuple[int, int]
    _by_model: dict[str, ModelTokens]

    def _model_budget(self) -> timedelta:
        """The total time one model-API step may take across its retries."""
        return timedelta(seconds=self._request.model_api_budget_seconds)
