"""The worker: the one place that wires configuration, logging, clients and Temporal workers.

    durable-assistants worker                       # serve the run workflow and every tool
    durable-assistants worker --queue heavy-tools   # serve only the tools routed to that task queue
    python worker.py ...                            # the same, from a checkout
    python -m durable_assistants.worker ...         # the same, wherever the package is installed

Temporal comes from its standard environment configuration (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, TLS settings, ``TEMPORAL_PROFILE`` and the
config file), the model API from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. Secrets stay in
this process's environment; they never enter workflow or activity inputs.

The worker's own settings (a flag wins over its variable; an empty variable counts as unset):

    DA_TASK_QUEUE               the run workflow's task queue (--task-queue)
    DA_TOOL_MODULES             comma-separated modules that register tools (--tools); they are
                                imported from sys.path, then from the current directory
    DA_BACKEND                  assistants | responses: the API of requests that name none (--backend)
    DA_RESPONSES_STATE          conversation | chain | stateless: where a Responses run that
                                continues nothing keeps its context, unless its request says
                                (--responses-state; default conversation, which is exactly-once;
                                chain for servers without the Conversations API; stateless for
                                servers that keep no state, or store: false)
    DA_RESPONSES_BACKGROUND     auto | off: auto (the default) asks for background responses and,
                                if the server runs one in the foreground anyway, runs this
                                worker's later turns in the foreground; off never asks: every
                                turn runs in the foreground inside its heartbeating activity
                                (--responses-background)
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
    DA_MAX_ACTIVITIES           activity slots of each Temporal worker in the process: how many
                                model steps and tool calls it runs at once (default 100). Sync
                                tools run on a thread pool of this size, one per worker, so
                                every slot can run one.
    DA_MAX_WORKFLOW_TASKS       workflow task slots of the run workflow's worker (default 30)
    DA_MAX_CACHED_WORKFLOWS     runs the worker keeps in memory between their workflow tasks
                                (default 300; others are rebuilt from history when they next move)
    DA_ACTIVITY_POLLERS         concurrent activity task polls of each worker (default 5)
    DA_WORKFLOW_POLLERS         concurrent workflow task polls: `auto` (the default: as many as the
                                server's backlog calls for, 2 to 100) or a number, at least 2 (one
                                for the worker's sticky queue)
    DA_METRICS_ADDRESS          host:port of a Prometheus /metrics endpoint: the Temporal SDK's
                                metrics (temporal_*) and the project's own (durable_assistants_*:
                                runs, rounds, tool calls and their durations, model API errors,
                                tokens; workflows/metrics.py). Unset: no endpoint.
    DA_HEALTH_ADDRESS           host:port of GET /livez (the event loop answers) and GET /readyz
                                (every worker polls, not shutting down), for Kubernetes probes;
                                `durable-assistants healthcheck` probes it. Unset: no endpoint.
    DA_TRACING                  off | otel: OpenTelemetry traces of enqueue, the workflow, model
                                steps and tools (the `tracing` extra; your tracer provider)
    DA_CODEC_KEYS               encrypt payloads (AES-256-GCM): id:base64key,... (the last one
                                encrypts); or DA_CODEC_KEYS_FILE naming a file that holds them
    DA_STARTUP_RETRY_SECONDS    at start the worker reads the model API once (an authenticated
                                list); a 408, a 429 (not an exhausted quota), a 5xx, a timeout or
                                a connection error is retried with backoff and jitter (0.5 s
                                doubling to 10 s, or the server's retry-after) for this long
                                (default 60; 0: no retry), one log line per retry. Any other
                                answer (401, 403, ...) stops the start at once.

A setting the worker can't use, a tool module that doesn't import, a tool the model can't be
told about, or a model API that refuses the worker (or is still unreachable when
DA_STARTUP_RETRY_SECONDS run out) stops the worker at start with one line on stderr and exit
status 2. If one of the process's Temporal workers stops by itself once running (its polls
fail for good: the namespace is gone, the credentials are refused, ...), the process says
which and why in one log line, shuts the others down as on SIGTERM and exits with status 1:
a process that serves nothing should not look alive.

Why one module of about 690 lines: the worker's configuration reference (above) and the
wiring and lifecycle it documents, read together by whoever deploys it; reading and checking
the settings is worker_settings.py.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import itertools
import logging
import os
import random
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import openai
import structlog
from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import LogForwardingConfig, LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.worker import Worker

from durable_assistants import codec
from durable_assistants.activities import tracing
from durable_assistants.activities.assistants import AssistantsBackend
from durable_assistants.activities.callbacks import deliver_callback
from durable_assistants.activities.errors import to_temporal_error
from durable_assistants.activities.model_api import ModelActivities
from durable_assistants.activities.nexus import DurableAssistantsHandler, NexusActivities
from durable_assistants.activities.responses import BACKGROUND_MODES, ResponsesBackend
from durable_assistants.activities.tools import running_tools, tool_activities
from durable_assistants.arguments import Parser  # usage errors in one line, as every command's
from durable_assistants.health import Health, parse_address, serving
from durable_assistants.tools import ToolRegistry
from durable_assistants.tools import registry as default_registry
from durable_assistants.worker_settings import (
    DEFAULT_MAX_ACTIVITIES,
    DEFAULT_STARTUP_RETRY_SECONDS,
    LOG_FORMATS,
    LOG_LEVELS,
    SettingsError,
    WorkerSettings,
    split_modules,
)
from durable_assistants.workflows.enqueued_run import EnqueuedRunWorkflow
from durable_assistants.workflows.models import BACKENDS, DEFAULT_TASK_QUEUE, RESPONSES_STATES
from durable_assistants.workflows.run import AssistantRunWorkflow
from durable_assistants.workflows.thread_queue import ThreadQueueWorkflow

log = structlog.get_logger("worker")

HEARTBEAT_THROTTLE = timedelta(seconds=1)
SHUTDOWN_MARGIN_SECONDS = 5.0
STARTUP_FIRST_RETRY_SECONDS = 0.5
STARTUP_MAX_RETRY_SECONDS = 10.0
STARTUP_CALL_TIMEOUT_SECONDS = 10.0


class ToolLoadError(ImportError):
    """A tool module that can't be imported, or that defines a tool the model can't be told
    about; printed as one line. An ``ImportError`` so callers that catch that keep working."""


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
    # The SDK logs a worker's fatal error with its traceback; run_workers says it in one line.
    logging.getLogger("temporalio.worker._worker").addFilter(_not_worker_failed)


def _not_worker_failed(record: logging.LogRecord) -> bool:
    return record.getMessage() != "Worker failed, shutting down"


async def connect_temporal(**overrides: Any) -> Client:
    """A Temporal client from the standard environment configuration, with the pydantic
    converter (encrypting payloads when DA_CODEC_KEYS is set) and the interceptors DA_TRACING
    asks for (workers built on the client use them too)."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", "localhost:7233")
    config.update({k: v for k, v in overrides.items() if v is not None})
    if "runtime" not in config:
        config["runtime"] = temporal_runtime()
    if "interceptors" not in config:
        config["interceptors"] = tracing.interceptors()
    if "data_converter" not in config:
        config["data_converter"] = codec.data_converter()
    return await Client.connect(**config)


CORE_LOG_CHARS = 2000


@functools.cache
def temporal_runtime(metrics_address: str | None = None) -> Runtime:
    """The process's one Temporal runtime (each runtime starts its own thread pool), with a
    Prometheus endpoint on ``metrics_address`` (the worker's DA_METRICS_ADDRESS) if given.

    The SDK's Rust core otherwise prints its own log lines, in colour, on stdout (a payload
    size warning once came with a 1 MB message), which breaks a command's ``--json`` output.
    Here they go to Python logging (``temporalio.core``), so to stderr, cut to a sane length.
    """
    core_log = logging.getLogger("temporalio.core")
    core_log.addFilter(_shorten)
    forwarding = LogForwardingConfig(logger=core_log)
    core_filter = TelemetryFilter(core_level="WARN", other_level="ERROR")
    metrics = None
    if metrics_address is not None:
        host, port = parse_address(metrics_address, "DA_METRICS_ADDRESS")
        # Seconds, as Prometheus has it; counters with _total, as OpenMetrics has it.
        metrics = PrometheusConfig(bind_address=f"{host}:{port}", durations_as_seconds=True, counters_total_suffix=True)
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=core_filter, forwarding=forwarding), metrics=metrics))


def _shorten(record: logging.LogRecord) -> bool:
    text = record.getMessage()
    if len(text) > CORE_LOG_CHARS:
        record.msg, record.args = f"{text[:CORE_LOG_CHARS]}…[{len(text) - CORE_LOG_CHARS} more characters]", ()
    return True


class ModelApiUnavailable(Exception):
    """The start-up check of the model API failed for good; the message is one line."""


async def check_model_api(
    model: AsyncOpenAI,
    backend: str,
    retry_seconds: float = DEFAULT_STARTUP_RETRY_SECONDS,
) -> None:
    """One cheap authenticated read that both APIs' servers answer (an unknown list is a 404:
    reachable and authenticated). Transient errors (as the model activities see them:
    ``activities/errors.py``) are retried with backoff and jitter, or after the server's
    retry-after, for ``retry_seconds``, each retry logged in one line. Raises
    ``ModelApiUnavailable`` at once on any other error, or when the time runs out."""
    started = time.monotonic()
    deadline = started + retry_seconds
    backoff = STARTUP_FIRST_RETRY_SECONDS
    checked = model.with_options(timeout=STARTUP_CALL_TIMEOUT_SECONDS)  # a hung server is an error too
    for attempt in itertools.count(1):
        try:
            await checked.models.list() if backend == "responses" else await checked.beta.assistants.list(limit=1)
            return
        except openai.NotFoundError:
            return  # reachable and authenticated; the server just doesn't list models
        except openai.OpenAIError as exc:
            mapped = to_temporal_error(exc, "start-up check")
            problem = f"cannot reach the model API at {model.base_url}: {_one_line(exc)}"
            if mapped.non_retryable:
                raise ModelApiUnavailable(problem) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if attempt > 1:
                    problem += f" (still failing after {attempt} attempts in {time.monotonic() - started:.0f} s)"
                raise ModelApiUnavailable(problem) from None
            asked = mapped.next_retry_delay
            wait = asked.total_seconds() if asked is not None else backoff * (0.5 + random.random() / 2)
            wait = min(wait, remaining)
            log.warning(
                "model API not ready; retrying", model_api=str(model.base_url), attempt=attempt,
                retry_in_seconds=round(wait, 2), error=_one_line(exc),
            )
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, STARTUP_MAX_RETRY_SECONDS)
        except Exception as exc:  # not the SDK's: nothing a retry would fix
            raise ModelApiUnavailable(f"cannot reach the model API at {model.base_url}: {_one_line(exc)}") from None


# A call that hangs is ended, and retried by Temporal: no call the worker makes waits for the
# model to think (runs and background responses are polled or streamed), and `read` is the
# longest silence between two chunks, so a stream that keeps sending events is never cut; a
# silent stream is resumed or polled by the backends. (The SDK's default read is 600 s.)
MODEL_API_TIMEOUT = openai.Timeout(connect=10.0, read=25.0, write=25.0, pool=25.0)


def openai_client(settings: WorkerSettings) -> AsyncOpenAI:
    # max_retries=0: Temporal owns every retry (activities/errors.py maps the statuses).
    return AsyncOpenAI(
        base_url=settings.openai_base_url, api_key=settings.openai_api_key or "unset", max_retries=0, timeout=MODEL_API_TIMEOUT
    )


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


# Each worker's thread pool for sync tools, shut down by WorkerGroup when the worker has stopped.
_tool_executors: weakref.WeakKeyDictionary[Worker, concurrent.futures.ThreadPoolExecutor] = weakref.WeakKeyDictionary()


def build_workers(
    client: Client,
    model: AsyncOpenAI,
    registry: ToolRegistry,
    task_queue: str = DEFAULT_TASK_QUEUE,
    queues: Sequence[str] = (),
    backend: str = "assistants",
    responses_state: str = "conversation",
    responses_background: str = "auto",
    **worker_options: Any,
) -> list[Worker]:
    """The run workflow, the model activities and the default-queue tools on ``task_queue``;
    plus one worker per tool task queue in ``queues`` (all of them when empty and serving
    the main queue, so a single process runs everything). Both model APIs are served; a run
    request that doesn't name one goes to ``backend``. Each worker runs its sync tools on a
    thread pool of its own, as large as its activity slots (``max_concurrent_activities``,
    default 100): the event loop's default pool (CPU count + 4 threads) would leave calls
    waiting in slots they already hold."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if responses_state not in RESPONSES_STATES:
        raise ValueError(f"unknown responses state {responses_state!r}; choose one of {', '.join(RESPONSES_STATES)}")
    if responses_background not in BACKGROUND_MODES:
        raise ValueError(f"unknown responses background mode {responses_background!r}; choose one of {', '.join(BACKGROUND_MODES)}")
    # Heartbeats carry what a retry must adopt (a response ID) and bring cancellation to an
    # activity. The SDK would hold them back for up to 0.8 x the heartbeat timeout (24 s for
    # the model activities); a SIGKILL in that window loses the ID. One second bounds it.
    worker_options.setdefault("max_heartbeat_throttle_interval", HEARTBEAT_THROTTLE)
    if "tuner" in worker_options:  # slots decided by the tuner: size the pools for the default
        slots = DEFAULT_MAX_ACTIVITIES
    else:
        slots = worker_options.setdefault("max_concurrent_activities", DEFAULT_MAX_ACTIVITIES)
    serve_main = not queues or task_queue in queues
    tool_queues = sorted({t.policy.task_queue for t in registry if t.policy.task_queue})
    extra = [q for q in (queues or tool_queues) if q != task_queue]
    unknown = [q for q in extra if q not in tool_queues]
    if unknown:
        raise ValueError(f"no registered tool uses task queue(s) {', '.join(unknown)}; tool queues: {', '.join(tool_queues) or 'none'}")
    workers = []
    if serve_main:
        compile_workflow_modules()
        model_activities = ModelActivities(
            [AssistantsBackend(model, registry), ResponsesBackend(model, registry, default_state=responses_state, background=responses_background)],  # type: ignore[arg-type]
            registry,
            default_backend=backend,
            private=client.data_converter.payload_codec is not None,
        )
        executor = _tool_pool(task_queue, slots)
        nexus_activities = NexusActivities(client, task_queue)
        main = Worker(
            client,
            task_queue=task_queue,
            workflows=[AssistantRunWorkflow, ThreadQueueWorkflow, EnqueuedRunWorkflow],
            activities=[
                model_activities.create_thread,
                model_activities.start_run,
                model_activities.submit_tool_outputs,
                model_activities.cancel_run,
                deliver_callback,
                nexus_activities.enqueue,
                nexus_activities.await_run,
                nexus_activities.cancel,
                *tool_activities(registry, None, executor),
            ],
            # The Nexus service `durable-assistants` (docs/nexus.md): its endpoint targets this queue.
            nexus_service_handlers=[DurableAssistantsHandler(task_queue)],
            **worker_options,
        )
        _tool_executors[main] = executor
        workers.append(main)
    for queue in extra:
        executor = _tool_pool(queue, slots)
        tools_worker = Worker(client, task_queue=queue, activities=tool_activities(registry, queue, executor), **worker_options)
        _tool_executors[tools_worker] = executor
        workers.append(tools_worker)
    return workers


@functools.cache
def compile_workflow_modules() -> None:
    """Write the bytecode of the workflow modules, once per process. Temporal's sandbox imports
    a workflow's module afresh for every workflow it runs; with no bytecode on disk (an
    environment with PYTHONDONTWRITEBYTECODE=1, or an editable install never imported yet)
    that compiles workflows/run.py from source each time, about 12 ms of CPU per run. An
    installed package (pip compiles on install) or a read-only file system: nothing to do."""
    import importlib.util
    import py_compile

    package = importlib.util.find_spec("durable_assistants.workflows")
    for directory in (package.submodule_search_locations or []) if package else []:
        for source in sorted(os.listdir(directory)):
            if not source.endswith(".py"):
                continue
            path = os.path.join(directory, source)
            cached = importlib.util.cache_from_source(path)
            try:
                if os.path.exists(cached) and os.path.getmtime(cached) >= os.path.getmtime(path):
                    continue
                py_compile.compile(path, cfile=cached, doraise=True)
            except (OSError, py_compile.PyCompileError):
                return  # not writable: the sandbox compiles as before


def _tool_pool(task_queue: str, slots: int) -> concurrent.futures.ThreadPoolExecutor:
    # Threads start only as sync tools need them, up to one per activity slot.
    return concurrent.futures.ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"tools[{task_queue}]")


@dataclass
class WorkerFailure:
    """A worker whose ``run()`` ended by itself: ``error`` is why."""

    task_queue: str
    error: BaseException


async def run_workers(
    workers: list[Worker],
    stop: asyncio.Event,
    on_failure: Callable[[WorkerFailure], None] | None = None,
    health: Health | None = None,
) -> WorkerFailure | None:
    """Run ``workers`` until ``stop`` is set, or until one of them stops by itself: then say so
    in one log line, call ``on_failure`` and shut the others down too. Returns that failure.
    ``health`` is ready while they run, and not from the moment they stop."""
    async with WorkerGroup(workers) as group:
        if health is not None:
            health.set_ready(True, f"polling {', '.join(sorted({w.task_queue for w in workers}))}")
        failure = await group.wait(stop)
        if health is not None:
            health.set_ready(False, "shutting down" if failure is None else f"worker on {failure.task_queue} stopped: {_one_line(failure.error)}")
        if failure is None:
            log.info("worker stopping", tools_running=running_tools())
        else:
            log.error("a worker stopped with an error; stopping the others", task_queue=failure.task_queue,
                      error=_one_line(failure.error), tools_running=running_tools())
            if on_failure is not None:
                on_failure(failure)
    return failure


class WorkerGroup:
    """Run several workers; leaving shuts them all down gracefully (in-flight tasks finish).
    ``wait`` returns when asked to stop, or as soon as one worker's ``run()`` has ended."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> WorkerGroup:
        self.tasks = [asyncio.create_task(w.run()) for w in self.workers]
        return self

    async def wait(self, stop: asyncio.Event) -> WorkerFailure | None:
        """Until ``stop`` is set (None) or a worker's ``run()`` ends by itself (its failure)."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([stopping, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        return self.failure()

    def failure(self) -> WorkerFailure | None:
        """The first worker whose ``run()`` has ended, and why (a worker only ends when shut down)."""
        for worker, task in zip(self.workers, self.tasks, strict=True):
            if task.done():
                error = asyncio.CancelledError("its run was cancelled") if task.cancelled() else task.exception()
                return WorkerFailure(worker.task_queue, error or RuntimeError("it stopped without an error"))
        return None

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(w.shutdown() for w in self.workers), return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for worker in self.workers:
            executor = _tool_executors.pop(worker, None)
            if executor is not None:
                executor.shutdown(wait=False)  # a sync tool still running keeps its thread until it returns


async def serve(settings: WorkerSettings, registry: ToolRegistry = default_registry) -> int:
    try:
        converter = codec.data_converter()
        interceptors = tracing.interceptors()
    except ValueError as exc:  # a key or a mode the worker can't use
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    try:
        runtime = temporal_runtime(settings.metrics_address)
    except Exception as exc:  # the metrics port is taken, say
        print(f"worker: cannot serve metrics on {settings.metrics_address}: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        client = await connect_temporal(runtime=runtime, data_converter=converter, interceptors=interceptors)
    except Exception as exc:  # one clear line, not a traceback
        print(f"worker: cannot connect to Temporal ({_temporal_target()}): {_one_line(exc)}", file=sys.stderr)
        return 2
    model = openai_client(settings)
    try:
        await check_model_api(model, settings.backend, settings.startup_retry_seconds)
    except ModelApiUnavailable as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    grace = timedelta(seconds=settings.shutdown_grace_seconds)
    try:
        workers = build_workers(
            client, model, registry, settings.task_queue, settings.queues, backend=settings.backend,
            responses_state=settings.responses_state,
            responses_background=settings.responses_background,
            graceful_shutdown_timeout=grace, **settings.worker_options(),
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
        responses_state=settings.responses_state,
        responses_background=settings.responses_background,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        metrics=settings.metrics_address,
        encrypted=converter.payload_codec is not None,
        tracing=bool(interceptors),
        max_activities=settings.max_activities,
        max_workflow_tasks=settings.max_workflow_tasks,
        max_cached_workflows=settings.max_cached_workflows,
        activity_pollers=settings.activity_pollers,
        workflow_pollers=settings.workflow_pollers or "auto",
    )
    health = Health()
    with contextlib.ExitStack() as endpoints:
        if settings.health_address is not None:
            try:
                bound = endpoints.enter_context(serving(health, settings.health_address))
            except OSError as exc:
                print(f"worker: cannot serve health on {settings.health_address}: {exc}", file=sys.stderr)
                return 2
            log.info("health endpoints", address=f"{bound[0]}:{bound[1]}", paths=["/livez", "/readyz"])
        ticking = asyncio.create_task(health.tick())
        # A worker that stopped by itself: the others are shut down as on SIGTERM, within the same limit.
        failure = await run_workers(workers, stop, on_failure=lambda _: watchdog.arm(), health=health)
        ticking.cancel()
    code = 1 if failure is not None else 0
    abandoned = running_tools()
    if abandoned:
        # Only sync tools' threads get here (their activities are cancelled and done). asyncio.run
        # would wait for those threads forever when it shuts down its executor: leave instead.
        leave(code, abandoned, "worker stopped; leaving tools still running in their threads")
    log.info("worker stopped", status=code)
    await model.close()
    return code


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
            self.arm()
            loop.call_soon_threadsafe(stop.set)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handle)

    def arm(self) -> None:
        """Start the timer (once): a stop that takes longer than ``limit`` leaves with status 1."""
        if self.timer is not None:
            return
        self.timer = threading.Timer(self.limit, self.expire)
        self.timer.daemon = True
        self.timer.start()

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
    parser = Parser(prog=prog, description="Run the durable-assistants Temporal worker.")
    parser.add_argument("--task-queue", help=f"the run workflow's task queue (default: $DA_TASK_QUEUE or {DEFAULT_TASK_QUEUE})")
    parser.add_argument(
        "--queue", action="append", dest="queues", help="serve only these task queues (repeatable); default: all"
    )
    parser.add_argument(
        "--tools", help="comma-separated modules that register tools (default: $DA_TOOL_MODULES or durable_assistants.tools.examples)"
    )
    parser.add_argument(
        "--backend", choices=list(BACKENDS), help="the model API of run requests that don't name one (default: $DA_BACKEND or assistants)"
    )
    parser.add_argument(
        "--responses-state",
        choices=list(RESPONSES_STATES),
        help="where a Responses run that continues nothing keeps its context (default: $DA_RESPONSES_STATE or conversation)",
    )
    parser.add_argument(
        "--responses-background",
        choices=list(BACKGROUND_MODES),
        help="off: run every Responses turn in the foreground (default: $DA_RESPONSES_BACKGROUND or auto)",
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
            tool_modules=split_modules(args.tools) or None,
            log_format=args.log_format,
            log_level=args.log_level,
            backend=args.backend,
            responses_state=args.responses_state,
            responses_background=args.responses_background,
        )
        configure_logging(settings.log_format, settings.log_level)
        registry = load_tools(settings.tool_modules)
    except (SettingsError, ToolLoadError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, registry))


def run_and_leave(prog: str) -> NoReturn:
    """Run :func:`main` as a program and leave with its exit code."""
    code = main(prog=prog)
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalization: the Temporal SDK's Rust runtime threads can
    # abort a finalizing interpreter (exit 134 / segfault) after a clean shutdown.
    # https://github.com/temporalio/sdk-python/issues/300
    os._exit(code)


if __name__ == "__main__":
    run_and_leave("python -m durable_assistants.worker")
