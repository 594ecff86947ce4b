"""The caller's side of durable-assistants: enqueue runs, follow them, and the command line."""

from .client import IdempotencyConflictError, RunFailedError, RunHandle, RunNotFoundError, enqueue_run, get_run

__all__ = ["IdempotencyConflictError", "RunFailedError", "RunHandle", "RunNotFoundError", "enqueue_run", "get_run"]
