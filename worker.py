"""The worker: the one place that wires configuration, logging, clients and Temporal workers.

    python worker.py                      # serve the run workflow and every tool
    python worker.py --queue heavy-tools  # serve only the tools routed to that task queue

Temporal comes from its standard environment configuration (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, TLS settings, ``TEMPORAL_PROFILE`` and the
config file), the model API from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. Secrets stay in
this process's environment; they never enter workflow or activity inputs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Sequence

import openai
import structlog
from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from activities.assistants import AssistantsBackend
from activities.model_api import ModelActivities
from activities.responses import ResponsesBackend
from activities.tools import tool_activities
from tools import ToolRegistry, registry as default_registry
from workflows.models import BACKENDS, DEFAULT_TASK_QUEUE
from workflows.run import AssistantRunWorkflow
from workflows.thread_queue import ThreadQueueWorkflow

log = structlog.get_logger("worker")

DEFAULT_TOOL_MODULES = ("tools.examples",)
HEARTBEAT_THROTTLE = timedelta(seconds=1)


@dataclass
class WorkerSettings:
    task_queue: str = DEFAULT_TASK_QUEUE
    queues: list[str] = field(default_factory=list)
    tool_modules: Sequence[str] = DEFAULT_TOOL_MODULES
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    backend: str = "assistants"
    log_format: str = "auto"
    log_level: str = "info"

    @classmethod
    def from_env(cls, **overrides: Any) -> "WorkerSettings":
        env = os.environ
        settings = cls(
            task_queue=env.get("DA_TASK_QUEUE", DEFAULT_TASK_QUEUE),
            tool_modules=tuple(m for m in env.get("DA_TOOL_MODULES", ",".join(DEFAULT_TOOL_MODULES)).split(",") if m),
            openai_base_url=env.get("OPENAI_BASE_URL"),
            openai_api_key=env.get("OPENAI_API_KEY"),
            backend=env.get("DA_BACKEND", "assistants"),
            log_format=env.get("DA_LOG_FORMAT", "auto"),
            log_level=env.get("DA_LOG_LEVEL", "info"),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(settings, key, value)
        return settings


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """structlog: JSON lines in production, a console renderer on a terminal."""
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


async def connect_temporal(**overrides: Any) -> Client:
    """A Temporal client from the standard environment configuration, with the pydantic converter."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", "localhost:7233")
    config.update({k: v for k, v in overrides.items() if v is not None})
    return await Client.connect(**config, data_converter=pydantic_data_converter)


def openai_client(settings: WorkerSettings) -> AsyncOpenAI:
    # max_retries=0: Temporal owns every retry (activities/errors.py maps the statuses).
    return AsyncOpenAI(base_url=settings.openai_base_url, api_key=settings.openai_api_key or "unset", max_retries=0)


def load_tools(modules: Sequence[str], registry: ToolRegistry = default_registry) -> ToolRegistry:
    for module in modules:
        importlib.import_module(module)
    return registry


def build_workers(
    client: Client,
    model: AsyncOpenAI,
    registry: ToolRegistry,
    task_queue: str = DEFAULT_TASK_QUEUE,
    queues: Sequence[str] = (),
    backend: str = "assistants",
    **worker_options: Any,
) -> list[Worker]:
    """The run workflow, the model activities and the default-queue tools on ``task_queue``;
    plus one worker per tool task queue in ``queues`` (all of them when empty and serving
    the main queue, so a single process runs everything). Both model APIs are served; a run
    request that doesn't name one goes to ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    # Heartbeats carry what a retry must adopt (a response ID) and bring cancellation to an
    # activity. The SDK would hold them back for up to 0.8 x the heartbeat timeout (24 s for
    # the model activities); a SIGKILL in that window loses the ID. One second bounds it.
    worker_options.setdefault("max_heartbeat_throttle_interval", HEARTBEAT_THROTTLE)
    serve_main = not queues or task_queue in queues
    tool_queues = sorted({t.policy.task_queue for t in registry if t.policy.task_queue})
    extra = [q for q in (queues or tool_queues) if q != task_queue]
    unknown = [q for q in extra if q not in tool_queues]
    if unknown:
        raise ValueError(f"no registered tool uses task queue(s) {', '.join(unknown)}; tool queues: {', '.join(tool_queues) or 'none'}")
    workers = []
    if serve_main:
        model_activities = ModelActivities(
            [AssistantsBackend(model, registry), ResponsesBackend(model, registry)], registry, default_backend=backend
        )
        workers.append(
            Worker(
                client,
                task_queue=task_queue,
                workflows=[AssistantRunWorkflow, ThreadQueueWorkflow],
                activities=[
                    model_activities.create_thread,
                    model_activities.start_run,
                    model_activities.submit_tool_outputs,
                    model_activities.cancel_run,
                    *tool_activities(registry, None),
                ],
                **worker_options,
            )
        )
    for queue in extra:
        workers.append(Worker(client, task_queue=queue, activities=tool_activities(registry, queue), **worker_options))
    return workers


async def run_workers(workers: list[Worker], stop: asyncio.Event) -> None:
    async with WorkerGroup(workers):
        await stop.wait()


class WorkerGroup:
    """Run several workers; leaving shuts them all down gracefully (in-flight tasks finish)."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> None:
        self.tasks = [asyncio.create_task(w.run()) for w in self.workers]

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(w.shutdown() for w in self.workers), return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def serve(settings: WorkerSettings) -> int:
    registry = load_tools(settings.tool_modules)
    try:
        client = await connect_temporal()
    except Exception as exc:  # one clear line, not a traceback
        print(f"worker: cannot connect to Temporal ({_temporal_target()}): {_one_line(exc)}", file=sys.stderr)
        return 2
    model = openai_client(settings)
    try:
        # A cheap authenticated read that both APIs' servers answer: an unknown response is a 404.
        await model.models.list() if settings.backend == "responses" else await model.beta.assistants.list(limit=1)
    except openai.NotFoundError:
        pass  # reachable and authenticated; the server just doesn't list models
    except Exception as exc:
        print(f"worker: cannot reach the model API at {model.base_url}: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        workers = build_workers(client, model, registry, settings.task_queue, settings.queues, backend=settings.backend)
    except ValueError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started",
        task_queues=[w.task_queue for w in workers],
        tools=registry.names(),
        model_api=str(model.base_url),
        default_backend=settings.backend,
    )
    await run_workers(workers, stop)
    log.info("worker stopped")
    await model.close()
    return 0


def _temporal_target() -> str:
    return os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker.py", description="Run the durable-assistants Temporal worker.")
    parser.add_argument("--task-queue", help=f"the run workflow's task queue (default: $DA_TASK_QUEUE or {DEFAULT_TASK_QUEUE})")
    parser.add_argument(
        "--queue", action="append", dest="queues", help="serve only these task queues (repeatable); default: all"
    )
    parser.add_argument("--tools", help="comma-separated modules that register tools (default: $DA_TOOL_MODULES or tools.examples)")
    parser.add_argument(
        "--backend", choices=list(BACKENDS), help="the model API of run requests that don't name one (default: $DA_BACKEND or assistants)"
    )
    parser.add_argument("--log-format", choices=["auto", "json", "console"])
    args = parser.parse_args(argv)
    settings = WorkerSettings.from_env(
        task_queue=args.task_queue,
        queues=args.queues,
        tool_modules=tuple(args.tools.split(",")) if args.tools else None,
        log_format=args.log_format,
        backend=args.backend,
    )
    configure_logging(settings.log_format, settings.log_level)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalization: the Temporal SDK's Rust runtime threads can
    # abort a finalizing interpreter (exit 134 / segfault) after a clean shutdown.
    # https://github.com/temporalio/sdk-python/issues/300
    os._exit(code)
