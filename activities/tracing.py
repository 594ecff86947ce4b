"""OpenTelemetry tracing, when the optional ``tracing`` extra is installed and
``DA_TRACING=otel``: Temporal's ``TracingInterceptor`` on the client and the worker gives one
trace per run (enqueue, the workflow, every model step and tool call), and the activities add
the run, thread and tool call IDs to their spans. Where spans go is the application's choice
of tracer provider and exporter (``opentelemetry-instrument``, or your own set-up code)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

try:
    from opentelemetry import trace as _trace
except ImportError:  # the extra is not installed: tracing is off
    _trace = None  # type: ignore[assignment]

TRACING_MODES = ("off", "otel")


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``DA_TRACING`` asks for traces; ``ValueError`` naming the value if it is not a
    mode, or if it asks for them without the ``tracing`` extra installed."""
    mode = (environ.get("DA_TRACING") or "off").strip().lower()
    if mode not in TRACING_MODES:
        raise ValueError(f"DA_TRACING={environ.get('DA_TRACING')!r} is not one of {', '.join(TRACING_MODES)}")
    if mode == "otel" and _trace is None:
        raise ValueError("DA_TRACING=otel needs OpenTelemetry: pip install 'durable-assistants[tracing]'")
    return mode == "otel"


def interceptors(environ: Mapping[str, str] = os.environ) -> list[Any]:
    """The client interceptors (workers built on the client use them too) that ``DA_TRACING`` asks for."""
    if not enabled(environ):
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def annotate(attributes: Mapping[str, str | None]) -> None:
    """Add ``attributes`` (None values left out) to the current span, if any is recording."""
    if _trace is None:
        return
    span = _trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
