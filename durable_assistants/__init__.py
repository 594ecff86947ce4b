"""The caller's side of durable-assistants: enqueue runs, follow them, and the command line."""

from .client import (
    IdempotencyConflictError,
    QueueBusyError,
    QueueFullError,
    RunFailedError,
    RunHandle,
    RunNotFoundError,
    enqueue_run,
    get_run,
)

__all__ = [
    "IdempotencyConflictError",
    "QueueBusyError",
    "QueueFullError",
    "RunFailedError",
    "RunHandle",
    "RunNotFoundError",
    "enqueue_run",
    "get_run",
]
