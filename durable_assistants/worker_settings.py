"""The worker's settings: flags and ``DA_*`` variables read, checked and defaulted, and the
Temporal ``Worker`` options (slots, pollers, cache) they give. A bad value fails the start
with one line naming the variable, the value and what it may be (``SettingsError``); the
variables themselves are documented in ``durable_assistants.worker`` and
docs/configuration.md."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.worker import PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum

from durable_assistants.activities.responses import BACKGROUND_MODES
from durable_assistants.health import parse_address
from durable_assistants.workflows.models import BACKENDS, DEFAULT_TASK_QUEUE, RESPONSES_STATES

DEFAULT_TOOL_MODULES = ("durable_assistants.tools.examples",)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10.0


# Temporal's own defaults, now stated and configurable; the workflow side tuned for a loaded
# worker (docs/benchmarks.md, figure 5): with the SDK's 100 workflow-task slots, a cache of
# 1,000 and 5 pollers, 1,000 concurrent runs on one 2-core worker timed out ~750 workflow tasks
# on the sticky queue (the server kept more tasks waiting than 5 polls took in) and peaked at
# 466 MiB. Pollers that scale with the backlog, 30 slots (fewer tasks held in the worker than
# it can finish in the 10 s workflow task timeout) and a cache of 300: 0 timeouts, 211 MiB,
# the same runs/s.
DEFAULT_MAX_ACTIVITIES = 100
DEFAULT_MAX_WORKFLOW_TASKS = 30
DEFAULT_MAX_CACHED_WORKFLOWS = 300
DEFAULT_POLLERS = 5
AUTO_POLLERS = PollerBehaviorAutoscaling(minimum=2, maximum=100, initial=DEFAULT_POLLERS)
# Activities a workflow task may start on its own worker at once (eager execution), when the
# server allows it and the worker has free slots: as many as a round's tools usually are.
EAGER_ACTIVITIES = 20
# How long a workflow task may wait for this worker on its sticky queue (where the workflow is
# cached) before the server moves it to the shared queue: the SDK's 10 s. Longer makes an
# overloaded worker time out fewer tasks, but a worker killed while it still held tasks keeps
# them for that long too (the server goes on dispatching to a sticky queue polled in the last
# 10 s): runs of a crashed worker would stall for it. Recovery wins.
STICKY_WAIT = timedelta(seconds=10)
DEFAULT_STARTUP_RETRY_SECONDS = 60.0


class SettingsError(ValueError):
    """A setting the worker can't use; printed as one line."""


@dataclass
class WorkerSettings:
    task_queue: str = DEFAULT_TASK_QUEUE
    queues: list[str] = field(default_factory=list)
    tool_modules: Sequence[str] = DEFAULT_TOOL_MODULES
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    backend: str = "assistants"
    responses_state: str = "conversation"
    responses_background: str = "auto"
    log_format: str = "auto"
    log_level: str = "info"
    shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE_SECONDS
    max_activities: int = DEFAULT_MAX_ACTIVITIES
    max_workflow_tasks: int = DEFAULT_MAX_WORKFLOW_TASKS
    max_cached_workflows: int = DEFAULT_MAX_CACHED_WORKFLOWS
    activity_pollers: int = DEFAULT_POLLERS
    workflow_pollers: int | None = None  # None: auto (scaled with the server's backlog)
    startup_retry_seconds: float = DEFAULT_STARTUP_RETRY_SECONDS
    metrics_address: str | None = None
    health_address: str | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> WorkerSettings:
        """Settings from flags (``overrides``, None meaning not given) and the environment.
        Raises ``SettingsError`` naming the variable, its value and what it may be."""
        given = {key: value for key, value in overrides.items() if value is not None}
        # Read lazily: a variable a flag overrides is never read, so it can't fail the start.
        readers: dict[str, Callable[[], Any]] = {
            "task_queue": lambda: _env("DA_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            "queues": list,
            "tool_modules": lambda: split_modules(_env("DA_TOOL_MODULES")) or DEFAULT_TOOL_MODULES,
            "openai_base_url": lambda: _env("OPENAI_BASE_URL"),
            "openai_api_key": lambda: _env("OPENAI_API_KEY"),
            "backend": lambda: _env_choice("DA_BACKEND", "assistants", BACKENDS),
            "responses_state": lambda: _env_choice("DA_RESPONSES_STATE", "conversation", RESPONSES_STATES),
            "responses_background": lambda: _env_choice("DA_RESPONSES_BACKGROUND", "auto", BACKGROUND_MODES),
            "log_format": lambda: _env_choice("DA_LOG_FORMAT", "auto", LOG_FORMATS),
            "log_level": lambda: _env_choice("DA_LOG_LEVEL", "info", LOG_LEVELS),
            "shutdown_grace_seconds": _env_grace,
            "max_activities": lambda: _env_count("DA_MAX_ACTIVITIES", DEFAULT_MAX_ACTIVITIES, 1),
            "max_workflow_tasks": lambda: _env_count("DA_MAX_WORKFLOW_TASKS", DEFAULT_MAX_WORKFLOW_TASKS, 1),
            "max_cached_workflows": lambda: _env_count("DA_MAX_CACHED_WORKFLOWS", DEFAULT_MAX_CACHED_WORKFLOWS, 0),
            "activity_pollers": lambda: _env_count("DA_ACTIVITY_POLLERS", DEFAULT_POLLERS, 1),
            "workflow_pollers": _env_workflow_pollers,
            "startup_retry_seconds": lambda: _env_seconds("DA_STARTUP_RETRY_SECONDS", DEFAULT_STARTUP_RETRY_SECONDS),
            "metrics_address": lambda: _env_address("DA_METRICS_ADDRESS"),
            "health_address": lambda: _env_address("DA_HEALTH_ADDRESS"),
        }
        return cls(**{key: given[key] if key in given else read() for key, read in readers.items()})

    def worker_options(self) -> dict[str, Any]:
        """The Temporal ``Worker`` options these settings give (slots and pollers)."""
        return {
            "max_concurrent_activities": self.max_activities,
            "max_concurrent_workflow_tasks": self.max_workflow_tasks,
            "max_cached_workflows": self.max_cached_workflows,
            "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(maximum=self.activity_pollers),
            "workflow_task_poller_behavior": AUTO_POLLERS
            if self.workflow_pollers is None
            else PollerBehaviorSimpleMaximum(maximum=self.workflow_pollers),
            # A round's tools start on this worker straight from the workflow task that
            # schedules them (eager execution; the SDK's default reserves 3, so a round of 4
            # sent one through the server's matching and cost a workflow task more).
            "max_eager_activity_reservations_per_workflow_task": EAGER_ACTIVITIES,
            "sticky_queue_schedule_to_start_timeout": STICKY_WAIT,
        }


def _env(name: str) -> str | None:
    return os.environ.get(name) or None  # an empty variable (`DA_X=` in a compose file) is unset


def split_modules(text: str | None) -> tuple[str, ...]:
    return tuple(m.strip() for m in (text or "").split(",") if m.strip())


def _env_address(name: str) -> str | None:
    value = _env(name)
    if value is not None:
        try:
            parse_address(value, name)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return value


def _env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    value = _env(name)
    if value is None:
        return default
    if value.lower() not in choices:
        raise SettingsError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value.lower()


def _env_grace() -> float:
    return _env_seconds("DA_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS)


def _env_seconds(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise SettingsError(f"{name}={value!r} is not valid; give a number of seconds, 0 or more")
    return seconds


def _env_workflow_pollers() -> int | None:
    """DA_WORKFLOW_POLLERS: None for auto (unset, or "auto"), else a count of at least 2."""
    value = _env("DA_WORKFLOW_POLLERS")
    if value is None or value.strip().lower() == "auto":
        return None
    return _env_count("DA_WORKFLOW_POLLERS", 0, 2, alternative="auto, or ")


def _env_count(name: str, default: int, minimum: int, alternative: str = "") -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        count = int(value.strip())
    except ValueError:
        count = minimum - 1
    if count < minimum:
        raise SettingsError(f"{name}={value!r} is not valid; give {alternative}a whole number, {minimum} or more")
    return count
