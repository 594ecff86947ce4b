"""The caller's side of durable-assistants: enqueue runs, follow them, and the command line."""

from .client import RunHandle, enqueue_run, get_run

__all__ = ["RunHandle", "enqueue_run", "get_run"]
