"""The project's own metrics, recorded through Temporal's metric meter so they reach the same
Prometheus endpoint (``DA_METRICS_ADDRESS``) as the SDK's own (``temporal_*``): one registry,
one scrape. Without a metrics address the meter is a no-op and recording costs nothing.

Workflow code records through ``workflow.metric_meter()``, which records nothing while a
workflow replays, so a run is counted once however often it is replayed; activities through
``activity.metric_meter()``, which adds ``namespace``, ``task_queue`` and ``activity_type``.

| metric | type | labels |
|---|---|---|
| ``durable_assistants_runs_started`` | counter | ``api`` |
| ``durable_assistants_runs_ended`` | counter | ``api``, ``status`` (completed, incomplete, failed, expired, cancelled) |
| ``durable_assistants_run_rounds`` | histogram | ``api``, ``status``: tool rounds per run |
| ``durable_assistants_tool_calls`` | counter | ``tool``, ``outcome`` (ok, error, invalid_arguments, cancelled) |
| ``durable_assistants_tool_call_duration`` | histogram (seconds) | ``tool``, ``outcome``: one attempt |
| ``durable_assistants_model_api_errors`` | counter | ``status_code`` (or ``connection``, ``other``), ``retryable`` |
| ``durable_assistants_tokens`` | counter | ``api``, ``model``, ``kind`` (prompt, completion) |
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from temporalio import activity
from temporalio.common import MetricMeter

PREFIX = "durable_assistants_"


def _count(meter: MetricMeter, name: str, description: str, labels: Mapping[str, str | int | float | bool], value: int = 1) -> None:
    meter.create_counter(PREFIX + name, description).add(value, dict(labels))


def _activity_meter() -> MetricMeter | None:
    return activity.metric_meter() if activity.in_activity() else None


# ---------------------------------------------------------------------------- workflow side


def run_started(meter: MetricMeter, api: str) -> None:
    _count(meter, "runs_started", "Assistant runs started", {"api": api})


def run_ended(meter: MetricMeter, api: str, status: str, rounds: int, model: str | None, prompt_tokens: int, completion_tokens: int) -> None:
    labels = {"api": api, "status": status}
    _count(meter, "runs_ended", "Assistant runs ended, by outcome", labels)
    meter.create_histogram(PREFIX + "run_rounds", "Tool rounds per run").record(rounds, labels)
    for kind, tokens in (("prompt", prompt_tokens), ("completion", completion_tokens)):
        if tokens:
            _count(meter, "tokens", "Tokens used by runs", {"api": api, "model": model or "unknown", "kind": kind}, tokens)


# ---------------------------------------------------------------------------- activity side


def tool_call(tool: str, outcome: str, duration: timedelta) -> None:
    meter = _activity_meter()
    if meter is None:
        return
    labels = {"tool": tool, "outcome": outcome}
    _count(meter, "tool_calls", "Tool call attempts, by outcome", labels)
    meter.create_histogram_timedelta(PREFIX + "tool_call_duration", "Duration of one tool call attempt").record(duration, labels)


def model_api_error(status_code: str, retryable: bool) -> None:
    meter = _activity_meter()
    if meter is not None:
        _count(meter, "model_api_errors", "Errors from the model API", {"status_code": status_code, "retryable": str(retryable).lower()})
