"""The caller's side of durable-assistants: enqueue runs, follow them, and the command line."""

from .client import (
    ApprovalError,
    IdempotencyConflictError,
    QueueBusyError,
    QueueFullError,
    RunFailedError,
    RunHandle,
    RunNotFoundError,
    awaiting_approval,
    enqueue_run,
    get_run,
)

__all__ = [
    "ApprovalError",
    "IdempotencyConflictError",
    "QueueBusyError",
    "QueueFullError",
    "RunFailedError",
    "RunHandle",
    "RunNotFoundError",
    "awaiting_approval",
    "enqueue_run",
    "get_run",
]
