"""durable-assistants: durable assistant runs with function tools, on Temporal.

The product installs as this one package: ``durable_assistants.workflows`` (the run and queue
workflows), ``.activities``, ``.tools`` (``@tool`` and the registry), ``.worker``, the caller's
side (``.client``, re-exported here: ``from durable_assistants import enqueue_run``) and the
command line (``.cli``); ``.emulator`` and ``.devstack`` are the local stack that
``durable-assistants dev`` and the tests run on.

The caller's names are imported when first used (PEP 562): Temporal's workflow sandbox imports
this package afresh for every workflow it runs (the parent of ``durable_assistants.workflows``),
so importing it must cost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durable_assistants.client import (
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("durable_assistants.client"), name)
    raise AttributeError(f"module 'durable_assistants' has no attribute {name!r}")
