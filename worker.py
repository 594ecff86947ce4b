"""The worker: the one place that wires configuration, logging, clients and Temporal workers.

    durable-assistants worker                       # serve the run workflow and every tool
    durable-assistants worker --queue heavy-tools   # serve only the tools routed to that task queue
    python worker.py ...                            # the same, from a checkout

Temporal comes from its standard environment configuration (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, TLS settings, ``TEMPORAL_PROFILE`` and the
config file), the model API from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. Secrets stay in
this process's environment; they never enter workflow or activity inputs.

The worker's own settings (a flag wins over its variable; an empty variable counts as unset):

    DA_TASK_QUEUE               the run workflow's task queue (--task-queue)
    DA_TOOL_MODULES             comma-separated modules that register tools (--tools); they are
                                imported from sys.path, then from the current directory
    DA_BACKEND                  assistants | responses: the API of requests that name none (--backend)
    DA_LOG_FORMAT               auto | json | console (--log-format)
    DA_LOG_LEVEL                debug | info | warning | error | critical (--log-level)
    DA_SHUTDOWN_GRACE_SECONDS   on SIGTERM or SIGINT, how long running tools get to finish
                                before they are cancelled (default 10). A sync tool can't be
                                cancelled (its thread runs on): the shutdown reports its call
                                failed ("Worker is shutting down ..."), Temporal retries it by the
                                tool's retry policy, and the worker names the tools it leaves
                                behind in one log line and exits 0. If stopping takes more than
                                the grace period plus 5 s (an async tool that ignores its
                                cancellation), the worker leaves the same way with status 1 and
                                Temporal retries those calls after their heartbeat timeout.
                                A second signal leaves at once (status 1).

A setting the worker can't use, a tool module that doesn't import, or a tool the model can't
be told about stops the worker at start with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, NoReturn, Sequence

import openai
import structlog
from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.worker import Worker

from activities.assistants import AssistantsBackend
from activities.model_api import ModelActivities
from activities.responses import ResponsesBackend
from activities.tools import running_tools, tool_activities
from tools import ToolRegistry, registry as default_registry
from workflows.models import BACKENDS, DEFAULT_TASK_QUEUE
from workflows.run import AssistantRunWorkflow
from workflows.thread_queue import ThreadQueueWorkflow

log = structlog.get_logger("worker")

DEFAULT_TOOL_MODULES = ("tools.examples",)
HEARTBEAT_THROTTLE = timedelta(seconds=1)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10.0
SHUTDOWN_MARGIN_SECONDS = 5.0


class SettingsError(ValueError):
    """A setting the worker can't use; printed as one line."""


class ToolLoadError(ImportError):
    """A tool module that can't be imported, or that defines a tool the model can't be told
    about; printed as one line. An ``ImportError`` so callers that catch that keep working."""


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
    shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE_SECONDS

    @classmethod
    def from_env(cls, **overrides: Any) -> "WorkerSettings":
        """Settings from flags (``overrides``, None meaning not given) and the environment.
        Raises ``SettingsError`` naming the variable, its value and what it may be."""
        given = {key: value for key, value in overrides.items() if value is not None}
        # Read lazily: a variable a flag overrides is never read, so it can't fail the start.
        readers: dict[str, Callable[[], Any]] = {
            "task_queue": lambda: _env("DA_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            "queues": list,
            "tool_modules": lambda: _modules(_env("DA_TOOL_MODULES")) or DEFAULT_TOOL_MODULES,
            "openai_base_url": lambda: _env("OPENAI_BASE_URL"),
            "openai_api_key": lambda: _env("OPENAI_API_KEY"),
            "backend": lambda: _env_choice("DA_BACKEND", "assistants", BACKENDS),
            "log_format": lambda: _env_choice("DA_LOG_FORMAT", "auto", LOG_FORMATS),
            "log_level": lambda: _env_choice("DA_LOG_LEVEL", "info", LOG_LEVELS),
            "shutdown_grace_seconds": _env_grace,
        }
        return cls(**{key: given[key] if key in given else read() for key, read in readers.items()})


def _env(name: str) -> str | None:
    return os.environ.get(name) or None  # an empty variable (`DA_X=` in a compose file) is unset


def _modules(text: str | None) -> tuple[str, ...]:
    return tuple(m.strip() for m in (text or "").split(",") if m.strip())


def _env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    value = _env(name)
    if value is None:
        return default
    if value.lower() not in choices:
        raise SettingsError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value.lower()


def _env_grace() -> float:
    value = _env("DA_SHUTDOWN_GRACE_SECONDS")
    if value is None:
        return DEFAULT_SHUTDOWN_GRACE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise SettingsError(f"DA_SHUTDOWN_GRACE_SECONDS={value!r} is not valid; give a number of seconds, 0 or more")
    return seconds


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """structlog: JSON lines in production, a console renderer on a terminal; all on stderr,
    so that stdout carries nothing but a command's output."""
    if level.lower() not in LOG_LEVELS:
        raise SettingsError(f"log level {level!r} is not valid; choose one of: {', '.join(LOG_LEVELS)}")
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
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


async def connect_temporal(**overrides: Any) -> Client:
    """A Temporal client from the standard environment configuration, with the pydantic converter."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", "localhost:7233")
    config.update({k: v for k, v in overrides.items() if v is not None})
    config.setdefault("runtime", temporal_runtime())
    return await Client.connect(**config, data_converter=pydantic_data_converter)


CORE_LOG_CHARS = 2000


@functools.cache
def temporal_runtime() -> Runtime:
    """The process's one Temporal runtime (each runtime starts its own thread pool).

    The SDK's Rust core otherwise prints its own log lines, in colour, on stdout (a payload
    size warning once came with a 1 MB message), which breaks a command's ``--json`` output.
    Here they go to Python logging (``temporalio.core``), so to stderr, cut to a sane length.
    """
    core_log = logging.getLogger("temporalio.core")
    core_log.addFilter(_shorten)
    forwarding = LogForwardingConfig(logger=core_log)
    core_filter = TelemetryFilter(core_level="WARN", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=core_filter, forwarding=forwarding)))


def _shorten(record: logging.LogRecord) -> bool:
    text = record.getMessage()
    if len(text) > CORE_LOG_CHARS:
        record.msg, record.args = f"{text[:CORE_LOG_CHARS]}…[{len(text) - CORE_LOG_CHARS} more characters]", ()
    return True


def openai_client(settings: WorkerSettings) -> AsyncOpenAI:
    # max_retries=0: Temporal owns every retry (activities/errors.py maps the statuses).
    return AsyncOpenAI(base_url=settings.openai_base_url, api_key=settings.openai_api_key or "unset", max_retries=0)


def load_tools(modules: Sequence[str], registry: ToolRegistry = default_registry) -> ToolRegistry:
    """Import the modules that register tools. Raises ``ToolLoadError`` naming the module
    and what went wrong: not found, or the module's own error (a ``TypeError`` from ``@tool``
    for a parameter type with no JSON schema, a missing dependency, a syntax error)."""
    # Like uvicorn and celery: a module beside the user's shell is found from the console
    # script too. Appended, so it never shadows an installed package.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
                raise ToolLoadError(
                    f"cannot import tool module {module!r}: no module named {exc.name!r} on sys.path or in the current directory"
                ) from None
            raise ToolLoadError(f"tool module {module!r} failed to import: {_one_line(exc)}") from None
        except Exception as exc:  # anything the module's own code raised while importing
            raise ToolLoadError(f"tool module {module!r} failed to import: {_one_line(exc)}") from None
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
        log.info("worker stopping", tools_running=running_tools())


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


async def serve(settings: WorkerSettings, registry: ToolRegistry = default_registry) -> int:
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
    grace = timedelta(seconds=settings.shutdown_grace_seconds)
    try:
        workers = build_workers(
            client, model, registry, settings.task_queue, settings.queues, backend=settings.backend,
            graceful_shutdown_timeout=grace,
        )
    except ValueError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    watchdog = ShutdownWatchdog(settings.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS)
    watchdog.on_signals(asyncio.get_running_loop(), stop)
    log.info(
        "worker started",
        task_queues=[w.task_queue for w in workers],
        tools=registry.names(),
        model_api=str(model.base_url),
        default_backend=settings.backend,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
    )
    await run_workers(workers, stop)
    abandoned = running_tools()
    if abandoned:
        # Only sync tools' threads get here (their activities are cancelled and done). asyncio.run
        # would wait for those threads forever when it shuts down its executor: leave instead.
        leave(0, abandoned, "worker stopped; leaving tools still running in their threads")
    log.info("worker stopped")
    await model.close()
    return 0


class ShutdownWatchdog:
    """Turns SIGTERM and SIGINT into a graceful stop that can't hang.

    The first signal sets ``stop`` (the workers then give running tools the grace period) and
    starts a timer thread: if the process is still here after ``limit`` seconds (a tool that
    ignores cancellation, an event loop blocked by a sync call in an async tool), it names
    the tools still running and leaves. A second signal leaves at once. ``signal.signal``,
    not ``loop.add_signal_handler``: the handler must run even when the loop is blocked.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.timer: threading.Timer | None = None

    def on_signals(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        def handle(signum: int, frame: object) -> None:
            if self.timer is not None:
                # Not from here: the interrupted code may hold the log's lock. Exit from a thread.
                why = f"{signal.Signals(signum).name} again; leaving now"
                threading.Thread(target=leave, args=(1, running_tools(), why), daemon=True).start()
                return
            self.timer = threading.Timer(self.limit, self.expire)
            self.timer.daemon = True
            self.timer.start()
            loop.call_soon_threadsafe(stop.set)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handle)

    def expire(self) -> None:
        leave(1, running_tools(), f"worker did not stop within {self.limit:g} s; leaving")


def leave(code: int, tools: Sequence[str], message: str) -> NoReturn:
    """Exit now, saying which tools are left running. A thread running a sync function can't
    be stopped, and the process is exiting anyway; Temporal retries those calls elsewhere (at
    once if the shutdown reported them failed, else after their heartbeat timeout). ``os._exit``
    also skips the finalization the SDK's runtime threads can crash (sdk-python#300)."""
    log.warning(message, tools_still_running=list(tools))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _temporal_target() -> str:
    return os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the durable-assistants Temporal worker.")
    parser.add_argument("--task-queue", help=f"the run workflow's task queue (default: $DA_TASK_QUEUE or {DEFAULT_TASK_QUEUE})")
    parser.add_argument(
        "--queue", action="append", dest="queues", help="serve only these task queues (repeatable); default: all"
    )
    parser.add_argument(
        "--tools", help="comma-separated modules that register tools (default: $DA_TOOL_MODULES or tools.examples)"
    )
    parser.add_argument(
        "--backend", choices=list(BACKENDS), help="the model API of run requests that don't name one (default: $DA_BACKEND or assistants)"
    )
    parser.add_argument("--log-format", choices=list(LOG_FORMATS), help="(default: $DA_LOG_FORMAT or auto)")
    parser.add_argument("--log-level", choices=list(LOG_LEVELS), help="(default: $DA_LOG_LEVEL or info)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "durable-assistants worker") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        settings = WorkerSettings.from_env(
            task_queue=args.task_queue,
            queues=args.queues,
            tool_modules=_modules(args.tools) or None,
            log_format=args.log_format,
            log_level=args.log_level,
            backend=args.backend,
        )
        configure_logging(settings.log_format, settings.log_level)
        registry = load_tools(settings.tool_modules)
    except (SettingsError, ToolLoadError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, registry))


if __name__ == "__main__":
    code = main(prog="python worker.py")
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalization: the Temporal SDK's Rust runtime threads can
    # abort a finalizing interpreter (exit 134 / segfault) after a clean shutdown.
    # https://github.com/temporalio/sdk-python/issues/300
    os._exit(code)
