"""Issue 13, the tool side: a killed worker is not a failed tool; a finished tool is never held
back by its progress; sync tools have a thread per activity slot; a process whose worker died
ends; a worker survives transient errors of the model API at start.

The budget tests schedule tool activities the way the run workflow is to (unlimited Temporal
attempts, a ``schedule_to_close`` from ``ToolPolicy.time_budget_seconds``), from a small probe
workflow, against a real worker subprocess that is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import PollerBehaviorAutoscaling, UnsandboxedWorkflowRunner, Worker

from durable_assistants import worker
from durable_assistants.activities import progress
from durable_assistants.activities.tools import execute
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.processes import die_with_parent, stop_process
from durable_assistants.tools import ToolContext, ToolPolicy, ToolRegistry
from durable_assistants.workflows.activity_models import TOOL_RETRIES_EXHAUSTED, ToolCallInput, ToolCallOutput
from durable_assistants.workflows.run_tools import tool_retry_policy

REPO = Path(__file__).parent.parent


# ============================================================================ the probe workflow


class ProbeCall(BaseModel):
    policy: ToolPolicy
    arguments: dict[str, Any]
    call_id: str = "call_1"


class ProbeInput(BaseModel):
    tool_queue: str
    calls: list[ProbeCall]
    budget_is_the_tools: bool = True


class ProbeOutcome(BaseModel):
    output: str | None = None
    attempt: int | None = None
    executions: int | None = None
    error_type: str | None = None
    message: str | None = None
    details: list[Any] = []
    non_retryable: bool | None = None


@workflow.defn(name="ToolBudgetProbe")
class ToolBudgetProbe:
    """Runs tool calls as the run workflow schedules them. ``budget_is_the_tools``: Temporal
    retries without a limit of attempts, within the tool's time budget (the change proposed
    for workflows/run.py); otherwise ``maximum_attempts`` is the tool's, as before."""

    @workflow.run
    async def run(self, input: ProbeInput) -> list[ProbeOutcome]:
        return list(await asyncio.gather(*(self._call(input, call) for call in input.calls)))

    async def _call(self, input: ProbeInput, call: ProbeCall) -> ProbeOutcome:
        policy = call.policy
        ours = input.budget_is_the_tools
        try:
            result = await workflow.execute_activity(
                policy.name,
                ToolCallInput(run_id="run_1", thread_id=None, call_id=call.call_id, name=policy.name, arguments=json.dumps(call.arguments)),
                result_type=ToolCallOutput,
                task_queue=input.tool_queue,
                start_to_close_timeout=timedelta(seconds=policy.timeout_seconds),
                schedule_to_close_timeout=timedelta(seconds=policy.time_budget_seconds()) if ours else None,
                heartbeat_timeout=timedelta(seconds=policy.heartbeat_timeout_seconds or 30),
                retry_policy=tool_retry_policy(policy, own_budget=ours),
            )
        except ActivityError as exc:
            cause = exc.cause
            return ProbeOutcome(
                error_type=getattr(cause, "type", type(cause).__name__),
                message=getattr(cause, "message", str(cause)),
                details=list(cause.details) if isinstance(cause, ApplicationError) else [],
                non_retryable=cause.non_retryable if isinstance(cause, ApplicationError) else None,
            )
        return ProbeOutcome(output=result.output, attempt=result.attempt, executions=result.executions)


@pytest.fixture
async def probe(temporal_client: Client) -> Any:
    """Runs ``ToolBudgetProbe`` on a queue of its own (served here) and returns its outcomes."""
    queue = f"probe-{uuid.uuid4()}"
    started: list[Any] = []

    async def start(input: ProbeInput) -> Any:
        handle = await temporal_client.start_workflow(
            ToolBudgetProbe.run, input, id=f"probe-{uuid.uuid4()}", task_queue=queue, result_type=list[ProbeOutcome]
        )
        started.append(handle)
        return handle

    async with Worker(temporal_client, task_queue=queue, workflows=[ToolBudgetProbe], workflow_runner=UnsandboxedWorkflowRunner()):
        yield start
        for handle in started:
            try:
                await handle.terminate("test over")
            except Exception:
                pass


# ============================================================================ worker subprocesses


@pytest.fixture
def spawn(temporal_server: TemporalDevServer, emulator: Any, tmp_path: Path) -> Iterator[Any]:
    """``python worker.py`` as a child; all are stopped after the test. Its log: ``tmp_path/worker-N.log``."""
    started: list[subprocess.Popen[bytes]] = []

    def start(task_queue: str, tools: str = "tests.durability_tools", **env: str) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_server.address,
            "OPENAI_BASE_URL": emulator.base_url,
            "OPENAI_API_KEY": "sk-test",
            "DA_TOOL_MODULES": tools,
            "DA_LOG_FORMAT": "json",
            **env,
        }
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "worker.py", "--task-queue", task_queue],
                cwd=REPO, env=full_env, stdout=out, stderr=out, preexec_fn=die_with_parent,
            )
        process.log = log  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process, timeout=5)


def events(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The worker's JSON log lines (other lines, such as the SDK core's, left out)."""
    found = []
    for line in process.log.read_text().splitlines():  # type: ignore[attr-defined]
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "event" in entry:
            found.append(entry)
    return found


async def wait_for(predicate: Any, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def wait_exit(process: subprocess.Popen[bytes], limit: float) -> int | None:
    try:
        return await asyncio.to_thread(process.wait, limit)
    except subprocess.TimeoutExpired:
        return None


async def kill_one_second_into_each_attempt(spawn: Any, task_queue: str, process: Any, marker: Path, kills: int) -> None:
    """SIGKILL the tool's worker 1 s into each of its first ``kills`` attempts (each attempt
    adds a line to ``marker``), starting a new worker after each kill."""
    for kill in range(1, kills + 1):
        await wait_for(lambda kill=kill: len(lines(marker)) >= kill, f"attempt {kill} to start")
        await asyncio.sleep(1)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = spawn(task_queue)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# Mirrors tests/durability_tools.py (not imported here: it registers its tools in the default registry).
def durability_policy(name: str) -> ToolPolicy:
    return ToolPolicy(name=name, heartbeat_timeout_seconds=2.0, initial_retry_seconds=0.1, budget_seconds=90.0)


# ============================================================================ 1. lost attempts are not the tool's failures


async def test_a_tool_whose_worker_is_killed_three_times_still_returns_its_output(
    spawn: Any, probe: Any, task_queue: str, tmp_path: Path
) -> None:
    """The issue's reproduction: a default-policy tool (3 attempts) of 4 s, its worker killed
    with SIGKILL 1 s into each of three attempts. The fourth attempt returns the output."""
    marker = tmp_path / "starts"
    handle = await probe(ProbeInput(tool_queue=task_queue, calls=[
        ProbeCall(policy=durability_policy("durability_sleep"), arguments={"seconds": 4, "marker": str(marker)})
    ]))
    process = spawn(task_queue)
    await kill_one_second_into_each_attempt(spawn, task_queue, process, marker, kills=3)
    [outcome] = await asyncio.wait_for(handle.result(), 120)

    assert outcome.output == "slept 4.0", outcome
    assert outcome.attempt == 1 and outcome.executions == 4  # three lost attempts, no failure of its own
    assert lines(marker) == [f"attempt={n} failures=0" for n in range(1, 5)]


async def test_only_the_tools_own_failures_use_up_its_attempts(spawn: Any, probe: Any, task_queue: str, tmp_path: Path) -> None:
    """Attempt 1 raises, attempt 2 is lost with its worker, attempts 3 and 4 raise: the third
    failure of its own (at Temporal's attempt 4) ends the call, not Temporal's attempt 3."""
    marker = tmp_path / "starts"
    handle = await probe(ProbeInput(tool_queue=task_queue, calls=[
        ProbeCall(policy=durability_policy("durability_fail"), arguments={"hang_on_attempt": 2, "marker": str(marker)})
    ]))
    process = spawn(task_queue)
    await wait_for(lambda: len(lines(marker)) >= 2, "attempt 2 to start")
    process.send_signal(signal.SIGKILL)
    process.wait()
    spawn(task_queue)
    [outcome] = await asyncio.wait_for(handle.result(), 120)

    assert lines(marker) == ["attempt=1 failures=0", "attempt=2 failures=1", "attempt=3 failures=1", "attempt=4 failures=2"]
    assert outcome.error_type == TOOL_RETRIES_EXHAUSTED and outcome.non_retryable, outcome
    assert outcome.message == "durability_fail failed 3 of 3 attempts; last error: RuntimeError: failed on attempt 4"
    assert outcome.details == [
        {"tool": "durability_fail", "failures": 3, "max_attempts": 3, "error_type": "RuntimeError", "error": "failed on attempt 4"}
    ]


def flaky_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(max_attempts=3)
    def wobbly(fail: bool, context: ToolContext) -> str:
        """Raises when told to; says what it knows of its attempts."""
        if fail:
            raise RuntimeError("wobbled")
        return f"attempt {context.attempt}, {context.failures} failures before"

    return registry


def tool_call(arguments: dict[str, Any], name: str = "wobbly") -> ToolCallInput:
    return ToolCallInput(run_id="run_1", thread_id="thread_1", call_id="call_1", name=name, arguments=json.dumps(arguments))


def environment(attempt: int, recorded: list[Any], maximum_attempts: int | None = 0) -> tuple[ActivityEnvironment, list[Any]]:
    env = ActivityEnvironment()
    policy = None if maximum_attempts is None else RetryPolicy(maximum_attempts=maximum_attempts)
    env.info = dataclasses.replace(env.info, attempt=attempt, heartbeat_details=recorded, retry_policy=policy)
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    return env, beats


async def test_a_failure_is_counted_in_the_heartbeat_before_the_attempt_fails() -> None:
    tool = flaky_registry().get("wobbly")
    # Temporal's attempt 5 after one failure of the tool's own (and three lost attempts).
    env, beats = environment(5, [{"tool": "wobbly", "call_id": "call_1", "progress": None, "failures": 1, "last_error": "RuntimeError: wobbled"}])
    with pytest.raises(RuntimeError, match="wobbled"):  # retryable: Temporal tries again
        await env.run(execute, tool, tool_call({"fail": True}))
    assert beats[-1]["failures"] == 2 and beats[-1]["last_error"] == "RuntimeError: wobbled"

    env, beats = environment(6, [beats[-1]])
    with pytest.raises(ApplicationError) as exc:
        await env.run(execute, tool, tool_call({"fail": True}))
    assert exc.value.type == TOOL_RETRIES_EXHAUSTED and exc.value.non_retryable
    assert exc.value.message == "wobbly failed 3 of 3 attempts; last error: RuntimeError: wobbled"
    assert exc.value.details[0]["failures"] == 3 and isinstance(exc.value.__cause__, RuntimeError)
    assert beats[-1]["failures"] == 3


async def test_the_attempt_reported_is_the_one_the_budget_counts() -> None:
    tool = flaky_registry().get("wobbly")
    recorded = [{"tool": "wobbly", "call_id": "call_1", "progress": None, "failures": 1, "last_error": "RuntimeError: wobbled"}]
    env, beats = environment(4, recorded)
    result = await env.run(execute, tool, tool_call({"fail": False}))
    # The tool sees Temporal's attempt and its own failures; the output counts as the budget does.
    assert result.output == "attempt 4, 1 failures before"
    assert (result.attempt, result.executions) == (2, 4)
    assert all(beat["failures"] == 1 for beat in beats)  # the count survives this attempt's heartbeats too

    # A workflow that still sets maximum_attempts: Temporal counts every attempt, and so does this.
    env, _ = environment(3, recorded, maximum_attempts=3)
    assert (await env.run(execute, tool, tool_call({"fail": False}))).attempt == 3
    # ... and Temporal's own limit ends the call: the error is the tool's, retryable as before.
    env, beats = environment(3, [{**recorded[0], "failures": 2}], maximum_attempts=3)
    with pytest.raises(RuntimeError, match="wobbled"):
        await env.run(execute, tool, tool_call({"fail": True}))
    assert beats[-1]["failures"] == 3


# ============================================================================ 2. progress never holds a result back


class StalledHandle:
    """A workflow handle whose signals reach a Temporal that does not answer (until released)."""

    def __init__(self) -> None:
        self.id = "wf-1"
        self.sent: list[Any] = []
        self.delivered = 0
        self.release = asyncio.Event()

    async def signal(self, name: str, arg: Any = None, **_: Any) -> None:
        self.sent.append(arg)
        await self.release.wait()
        self.delivered += 1


class StalledClient:
    """Just what ``WorkflowStreamClient`` uses of a ``temporalio.client.Client``."""

    data_converter = pydantic_data_converter

    def __init__(self) -> None:
        self.handle = StalledHandle()

    def get_workflow_handle(self, workflow_id: str, **_: Any) -> StalledHandle:
        return self.handle


def progress_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    async def reporting(context: ToolContext) -> str:
        """Reports progress, then returns."""
        context.heartbeat({"step": 1})
        await asyncio.sleep(0.1)  # the heartbeater publishes it; the stream's batch is not due yet
        return "result"

    return registry


async def test_a_finished_tool_completes_while_its_progress_is_still_being_sent() -> None:
    client = StalledClient()
    env = ActivityEnvironment(client=client)  # type: ignore[arg-type]
    result = await asyncio.wait_for(env.run(execute, progress_registry().get("reporting"), tool_call({}, "reporting")), 10)

    assert result.output == "result"
    # The progress goes out after the result, and is still stuck: the activity did not wait for it.
    await wait_for(lambda: client.handle.sent, "the progress to be sent", 10)
    assert client.handle.sent[0].items and client.handle.delivered == 0
    assert progress.publishers_draining() == 1
    client.handle.release.set()
    await wait_for(lambda: progress.publishers_draining() == 0, "the background flush to end", 10)
    assert client.handle.delivered >= 1  # best effort, but delivered once the server answers


async def test_progress_that_cannot_be_sent_is_dropped_after_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    monkeypatch.setattr(progress, "FINAL_FLUSH_SECONDS", 0.3)
    client = StalledClient()
    with capture_logs() as logs:
        result = await asyncio.wait_for(
            ActivityEnvironment(client=client).run(execute, progress_registry().get("reporting"), tool_call({}, "reporting")), 10  # type: ignore[arg-type]
        )
        await wait_for(lambda: progress.publishers_draining() == 0, "the background flush to give up", 10)
    assert result.output == "result" and client.handle.delivered == 0
    assert [entry["error"] for entry in logs if entry["event"] == "progress not delivered"] == [
        "its last batch was still not sent after 0.3 s; dropped"
    ]


# ============================================================================ 3. workers: thread pool, settings, a worker that dies


def default_pool_size() -> int:
    return min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor (ThreadPoolExecutor's default)


async def test_every_activity_slot_can_run_a_sync_tool(temporal_client: Client, emulator: Any, probe: Any, task_queue: str) -> None:
    """More sync tool calls at once than the event loop's default thread pool has threads, all
    waiting for each other: each needs a thread of its own."""
    slots = default_pool_size() + 2
    barrier = threading.Barrier(slots, timeout=30)
    registry = ToolRegistry()

    @registry.tool(max_attempts=1)
    def rendezvous(n: int) -> int:
        """Waits until all calls are running."""
        barrier.wait()
        return n

    policy = registry.get("rendezvous").policy  # type: ignore[union-attr]
    calls = [ProbeCall(policy=policy, arguments={"n": n}, call_id=f"call_{n}") for n in range(slots)]
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    async with worker.WorkerGroup(worker.build_workers(temporal_client, model, registry, task_queue, max_concurrent_activities=slots)):
        outcomes = await asyncio.wait_for((await probe(ProbeInput(tool_queue=task_queue, calls=calls))).result(), 90)
    await model.close()
    assert [o.output for o in outcomes] == [str(n) for n in range(slots)], outcomes


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DA_MAX_ACTIVITIES": "0"}, "DA_MAX_ACTIVITIES='0' is not valid; give a whole number, 1 or more"),
        ({"DA_MAX_WORKFLOW_TASKS": "many"}, "DA_MAX_WORKFLOW_TASKS='many' is not valid; give a whole number, 1 or more"),
        ({"DA_ACTIVITY_POLLERS": "2.5"}, "DA_ACTIVITY_POLLERS='2.5' is not valid; give a whole number, 1 or more"),
        ({"DA_WORKFLOW_POLLERS": "1"}, "DA_WORKFLOW_POLLERS='1' is not valid; give auto, or a whole number, 2 or more"),
        ({"DA_WORKFLOW_POLLERS": "lots"}, "DA_WORKFLOW_POLLERS='lots' is not valid; give auto, or a whole number, 2 or more"),
        ({"DA_MAX_CACHED_WORKFLOWS": "-1"}, "DA_MAX_CACHED_WORKFLOWS='-1' is not valid; give a whole number, 0 or more"),
        ({"DA_STARTUP_RETRY_SECONDS": "-1"}, "DA_STARTUP_RETRY_SECONDS='-1' is not valid; give a number of seconds, 0 or more"),
    ],
)
def test_slot_poller_and_retry_settings_are_checked(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(worker.SettingsError) as exc:
        worker.WorkerSettings.from_env()
    assert str(exc.value) == expected


def test_slot_and_poller_settings_reach_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"DA_MAX_ACTIVITIES": "7", "DA_MAX_WORKFLOW_TASKS": "9", "DA_ACTIVITY_POLLERS": "3",
                        "DA_WORKFLOW_POLLERS": "4", "DA_STARTUP_RETRY_SECONDS": "2.5", "DA_MAX_CACHED_WORKFLOWS": "11"}.items():
        monkeypatch.setenv(name, value)
    settings = worker.WorkerSettings.from_env()
    options = settings.worker_options()
    assert settings.startup_retry_seconds == 2.5
    assert (options["max_concurrent_activities"], options["max_concurrent_workflow_tasks"]) == (7, 9)
    assert (options["activity_task_poller_behavior"].maximum, options["workflow_task_poller_behavior"].maximum) == (3, 4)
    assert options["max_cached_workflows"] == 11
    for name in ("DA_MAX_ACTIVITIES", "DA_MAX_WORKFLOW_TASKS", "DA_ACTIVITY_POLLERS", "DA_WORKFLOW_POLLERS", "DA_STARTUP_RETRY_SECONDS",
                 "DA_MAX_CACHED_WORKFLOWS"):
        monkeypatch.delenv(name)
    defaults = worker.WorkerSettings.from_env()
    assert (defaults.max_activities, defaults.max_workflow_tasks, defaults.activity_pollers) == (100, 30, 5)
    assert (defaults.max_cached_workflows, defaults.workflow_pollers, defaults.startup_retry_seconds) == (300, None, 60)
    # Workflow pollers scale with the server's backlog unless a number is given (figure 5 of docs/benchmarks.md).
    auto = defaults.worker_options()["workflow_task_poller_behavior"]
    assert isinstance(auto, PollerBehaviorAutoscaling) and (auto.minimum, auto.maximum) == (2, 100)
    monkeypatch.setenv("DA_WORKFLOW_POLLERS", "auto")
    assert worker.WorkerSettings.from_env().workflow_pollers is None


async def test_when_one_worker_dies_the_others_are_shut_down(temporal_client: Client, temporal_server: TemporalDevServer, task_queue: str) -> None:
    """One worker of the group polls a namespace that does not exist: its run() ends with an
    error. run_workers returns that failure, without being asked to stop, having shut down
    the healthy worker too."""
    registry = ToolRegistry()

    @registry.tool
    def noop() -> str:
        """Nothing."""
        return ""

    missing = f"missing-{uuid.uuid4().hex[:8]}"
    elsewhere = await Client.connect(temporal_server.address, namespace=missing, data_converter=pydantic_data_converter)
    healthy = Worker(temporal_client, task_queue=task_queue, activities=worker.tool_activities(registry, None))
    doomed = Worker(elsewhere, task_queue=f"{task_queue}-doomed", activities=worker.tool_activities(registry, None))
    seen: list[Any] = []
    stop = asyncio.Event()  # never set
    failure = await asyncio.wait_for(worker.run_workers([healthy, doomed], stop, on_failure=seen.append), 60)

    assert failure is not None and failure.task_queue == f"{task_queue}-doomed"
    assert missing in str(failure.error) and seen == [failure]
    assert healthy.is_shutdown


async def test_a_process_whose_worker_died_exits_non_zero(spawn: Any, task_queue: str) -> None:
    process = spawn(task_queue, tools="durable_assistants.tools.examples", TEMPORAL_NAMESPACE=f"missing-{uuid.uuid4().hex[:8]}")
    code = await wait_exit(process, 60)
    text = process.log.read_text()  # type: ignore[attr-defined]
    assert code == 1, text
    [died] = [e for e in events(process) if e["event"] == "a worker stopped with an error; stopping the others"]
    assert died["task_queue"] == task_queue and "was not found" in died["error"] and "\n" not in died["error"]
    assert "Traceback" not in text


# ============================================================================ 4. start-up: transient model-API errors are retried


@pytest.mark.parametrize(
    ("fault", "retries"),
    [
        ({"action": "error", "status": 500, "times": 2}, 2),
        ({"action": "error", "status": 429, "retry_after_ms": 300, "times": 1}, 1),
        ({"action": "error", "status": 503, "times": 3}, 3),
        ({"action": "drop", "times": 1}, 1),
    ],
)
async def test_a_worker_starts_after_transient_model_api_errors(
    spawn: Any, admin: httpx.Client, task_queue: str, fault: dict[str, Any], retries: int
) -> None:
    admin.post("/faults", json={"operation": "assistants.list", **fault}).raise_for_status()
    process = spawn(task_queue, tools="durable_assistants.tools.examples")
    await wait_for(lambda: any(e["event"] == "worker started" for e in events(process)) or process.poll() is not None, "the worker to start")
    assert process.poll() is None, process.log.read_text()  # type: ignore[attr-defined]
    retried = [e for e in events(process) if e["event"] == "model API not ready; retrying"]
    assert [e["attempt"] for e in retried] == list(range(1, retries + 1))
    if "retry_after_ms" in fault:
        assert retried[0]["retry_in_seconds"] == 0.3  # the server's retry-after
    assert admin.get("/stats").json()["faults_fired"] == {"assistants.list": retries}
    process.send_signal(signal.SIGTERM)
    assert await wait_exit(process, 30) == 0


async def test_a_model_api_that_stays_down_stops_the_start_after_the_retry_time(spawn: Any, admin: httpx.Client, task_queue: str) -> None:
    admin.post("/faults", json={"operation": "assistants.list", "action": "error", "status": 503}).raise_for_status()
    process = spawn(task_queue, tools="durable_assistants.tools.examples", DA_STARTUP_RETRY_SECONDS="2")
    assert await wait_exit(process, 60) == 2
    retried = [e for e in events(process) if e["event"] == "model API not ready; retrying"]
    assert retried and all("503" in e["error"] for e in retried)
    text = process.log.read_text()  # type: ignore[attr-defined]
    [last] = [line for line in text.splitlines() if line.startswith("worker: ")]
    assert last.startswith("worker: cannot reach the model API at ") and f"(still failing after {len(retried) + 1} attempts in " in last


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refusing_model_api_stops_the_start_at_once(spawn: Any, admin: httpx.Client, task_queue: str, status: int) -> None:
    """A permanent answer is not retried (a guard: this was already so)."""
    admin.post("/faults", json={"operation": "assistants.list", "action": "error", "status": status}).raise_for_status()
    process = spawn(task_queue, tools="durable_assistants.tools.examples")
    assert await wait_exit(process, 60) == 2
    text = process.log.read_text()  # type: ignore[attr-defined]
    assert len(text.strip().splitlines()) == 1 and text.startswith("worker: cannot reach the model API at ") and str(status) in text
    assert admin.get("/stats").json()["faults_fired"] == {"assistants.list": 1}


# ============================================================================ the run workflow (after the workflows/run.py change)


async def test_a_run_whose_tool_worker_is_killed_three_times_gives_the_model_the_output(
    spawn: Any, temporal_client: Client, task_queue: str, tmp_path: Path, admin: httpx.Client
) -> None:
    """The issue's reproduction through AssistantRun: one default-policy tool (3 attempts) of
    4 s, its worker killed with SIGKILL 1 s into each of three attempts. The run completes
    and the model is told the tool's output, not that the tool failed."""
    from durable_assistants.workflows.models import MessageInput, RunRequest
    from tests.conftest import script
    from tests.test_worker_runs import start

    marker = tmp_path / "starts"
    rounds = [[{"name": "durability_sleep", "arguments": {"seconds": 4, "marker": str(marker)}}]]
    request = RunRequest(backend="responses", model="gpt-4o", messages=[MessageInput(content=script(rounds=rounds, reply="got: {outputs}"))])
    process = spawn(task_queue)
    handle = await start(temporal_client, task_queue, request)
    await kill_one_second_into_each_attempt(spawn, task_queue, process, marker, kills=3)
    result = await asyncio.wait_for(handle.result(), 120)

    assert result.status == "completed", result
    [record] = result.tool_calls
    assert record.error is None and record.output_preview == "slept 4.0" and record.attempts == 1
    assert "slept 4.0" in (result.final_text or "") and "failed" not in (result.final_text or "")
    assert len(lines(marker)) == 4


async def test_a_run_whose_tool_keeps_failing_says_so_after_its_own_attempts(
    spawn: Any, temporal_client: Client, task_queue: str, tmp_path: Path, admin: httpx.Client
) -> None:
    """Own failures still end the call after max_attempts (3), lost attempts not counted: the
    model gets the tool's last error, and the record says 3 attempts."""
    from durable_assistants.workflows.models import MessageInput, RunRequest
    from tests.conftest import script
    from tests.test_worker_runs import start

    marker = tmp_path / "starts"
    rounds = [[{"name": "durability_fail", "arguments": {"hang_on_attempt": 2, "marker": str(marker)}}]]
    request = RunRequest(backend="responses", model="gpt-4o", messages=[MessageInput(content=script(rounds=rounds, reply="got: {outputs}"))])
    process = spawn(task_queue)
    handle = await start(temporal_client, task_queue, request)
    await wait_for(lambda: len(lines(marker)) >= 2, "attempt 2 to start")
    process.send_signal(signal.SIGKILL)
    process.wait()
    spawn(task_queue)
    result = await asyncio.wait_for(handle.result(), 120)

    assert result.status == "completed", result
    [record] = result.tool_calls
    assert record.error == "failed on attempt 4" and record.attempts == 3
    assert record.output_preview == "Error: tool durability_fail failed: failed on attempt 4"
    assert len(lines(marker)) == 4
