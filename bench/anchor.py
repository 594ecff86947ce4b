"""The performance figures of durable runs, each against an anchor measured in the same run.

A figure is a ratio: the durable run (the subject) and its anchor alternate, the pair is
repeated (``--repeats``), and the table gives the ratio's min / median / max over the repeats,
so a slow moment of a shared machine shows as spread instead of moving one side alone.

1. Added latency per tool round, stream mode, in bare hops. A *bare hop* is one activity
   round trip on the same server and worker settings: a trivial workflow that runs no-op
   activities one after another; the time from one activity's scheduling to the next one's
   (dispatch, run, completion, the workflow task that reacts), from the history's event
   times, median of all of them. The durable side: ``AssistantRunWorkflow`` in stream mode
   with R rounds of 4 instant tool calls vs the same script with no round (reply only), 0 s
   model turns: ((t_R - t_0) / R - tool time - turn time) / hop. Instant tools: tool time 0.
2. Run time vs the OpenAI SDK's own streaming loop on the same emulator, 3 rounds x 4 tools,
   300 ms model turns: the SDK loop creates the thread with the message, follows
   ``runs.stream`` and ``submit_tool_outputs_stream``, and runs the same tool functions
   in-process (no Temporal). Ratio = durable / SDK.
3. The same in poll mode vs ``create_and_poll`` + ``submit_tool_outputs_and_poll`` (and a
   ``messages.list`` of the reply, as the durable run reads it), at 300 ms and 1 s turns.
4. Throughput: runs/s of N concurrent 3x4 runs (stream, 0 s turns) vs a bare workflow of the
   same shape of no-op activities (each of 3 rounds: one "model" activity, then 4 in
   parallel; then a final "model" activity: 16 activities; the durable run has 17, its
   ``create_thread`` included), same server, same worker settings (``WorkerSettings()``
   defaults), workers in this process. Ratio = durable runs/s / bare runs/s.
5. (``--thousand``) 1,000 concurrent 3x4 runs (stream, 300 ms turns) on one worker run as
   ``python worker.py``: all completed?, the worker's peak RSS (VmHWM), and the
   WORKFLOW_TASK_TIMED_OUT events over all the histories.

Then counters of single 3x4 runs from their histories (activities, workflow tasks, signals,
events) and the dev server's metrics (activity heartbeats it received), and what one round
adds (R-round run minus 0-round run, over R).

Everything runs against a file-backed Temporal dev server (a temporary directory), the
emulator, and in-process workers built by ``worker.build_workers``. The bare workflow is
sandboxed like ``AssistantRun``: its module is written to the temporary directory (a module
of a few lines, so the sandbox's per-run import costs what a minimal workflow's does).

    .venv/bin/python bench/anchor.py                   # 5 repeats, about 5-8 minutes on 2 cores
    .venv/bin/python bench/anchor.py --repeats 1 --quick
    .venv/bin/python bench/anchor.py --thousand --json

Why one module of about 740 lines: measurement bench. One benchmark: its anchors, the five
figures and their report, run in one process so subject and anchor share servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from temporalio.api.enums.v1 import EventType, TimeoutType  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from bench.proc import read_proc  # noqa: E402
from durable_assistants import worker  # noqa: E402
from durable_assistants.devstack.temporal import TemporalDevServer, free_port  # noqa: E402
from durable_assistants.emulator.server import EmulatorProcess  # noqa: E402
from durable_assistants.processes import die_with_parent, stop_process  # noqa: E402
from durable_assistants.tools import examples, registry  # noqa: E402  (examples: get_weather, the instant tool every figure calls)
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult  # noqa: E402
from durable_assistants.workflows.run import AssistantRunWorkflow  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK marks the Assistants API deprecated

# The tool every round calls. get_weather is sync and returns at once (a hash of its argument):
# fast, idempotent, bounded, what @tool(inline=True) is for (docs/tools.md#inline-tools), and
# what a user is told to declare inline. So the figures are measured with it inline (the
# default, the configuration the project recommends for such a tool, and the one the SDK
# anchors are like: they call it in-process); --tool get_weather gives every call an activity
# of its own, the configuration of a tool with side effects or unbounded time.
ACTIVITY_TOOL = "get_weather"
INLINE_TOOL = "get_weather_inline"
registry.tool(examples.get_weather, name=INLINE_TOOL, inline=True)
TOOL = INLINE_TOOL
TOOLS_PER_ROUND = 4
SHAPE_ROUNDS = 3  # the 3 x 4 shape of figures 2-5
HOP_TURN_SECONDS = 0.0  # figure 1: model turns take no scripted time
THROUGHPUT_TURN_SECONDS = 0.0  # figure 4: the bare workflow's "model" activities are no-ops too
ACTIVITY_TIMEOUT_SECONDS = 60
# A run that has not ended by then is stuck (say, a workflow task failing again and again):
# the benchmark stops with its workflow ID instead of waiting for ever.
RUN_TIMEOUT_SECONDS = 120
BATCH_TIMEOUT_SECONDS = 900
BARE_MODULE = "anchor_bare_workflows"
# The bare workflows, written to the temporary directory and imported from there.
BARE_SOURCE = '''"""Bare Temporal workflows of no-op activities: the anchors of bench/anchor.py."""

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

TIMEOUT = timedelta(seconds={ACTIVITY_TIMEOUT_SECONDS})


@activity.defn(name="anchor_noop")
async def noop() -> None:
    return None


@workflow.defn(name="AnchorHops")
class HopsWorkflow:
    """``activities`` no-op activities, one after another."""

    @workflow.run
    async def run(self, activities: int) -> None:
        for _ in range(activities):
            await workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT)


@workflow.defn(name="AnchorBareRounds")
class BareRoundsWorkflow:
    """The shape of a run: each round a "model" activity, then ``tools`` in parallel; then a
    final "model" activity. All no-ops."""

    @workflow.run
    async def run(self, rounds: int, tools: int) -> None:
        for _ in range(rounds):
            await workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT)
            await asyncio.gather(*(workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT) for _ in range(tools)))
        await workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT)
'''.replace("{ACTIVITY_TIMEOUT_SECONDS}", str(ACTIVITY_TIMEOUT_SECONDS))


# ---------------------------------------------------------------------------- scripts and runs


def script_message(rounds: int, turn_seconds: float, tools: int = TOOLS_PER_ROUND, tool: str | None = None) -> str:
    """A user message scripting ``rounds`` rounds of ``tools`` parallel calls of the instant
    tool (``tool``, by default the one ``--tool`` chose), each model turn taking
    ``turn_seconds``, then a short reply sent at once."""
    calls = [[{"name": tool or TOOL, "arguments": {"city": f"City {r}-{t}"}} for t in range(tools)] for r in range(rounds)]
    body = {"rounds": calls, "reply": "Done:\n{outputs}", "turn_seconds": turn_seconds}
    return "Go.\n@emulator " + json.dumps(body)


class Stack:
    """What every figure uses: clients, the assistant, the task queues."""

    def __init__(self, client: Client, model: AsyncOpenAI, sdk: AsyncOpenAI, admin: httpx.AsyncClient,
                 assistant_id: str, durable_queue: str, bare_queue: str, metrics_url: str, bare: Any,
                 pids: dict[str, int]) -> None:
        self.client, self.model, self.sdk, self.admin = client, model, sdk, admin
        self.pids = pids  # the dev server's and the emulator's processes, for their CPU time
        self.assistant_id = assistant_id
        self.durable_queue, self.bare_queue = durable_queue, bare_queue
        self.metrics_url = metrics_url
        self.bare = bare  # the imported bare-workflow module


async def durable_start(stack: Stack, message: str, mode: str, task_queue: str | None = None) -> WorkflowHandle[Any, RunResult]:
    request = RunRequest(assistant_id=stack.assistant_id, messages=[MessageInput(content=message)], mode=mode)  # type: ignore[arg-type]
    return await stack.client.start_workflow(
        AssistantRunWorkflow.run, request, id=f"anchor-{uuid.uuid4()}",  # type: ignore[arg-type]
        task_queue=task_queue or stack.durable_queue, result_type=RunResult,
    )


def failed_calls(result: RunResult) -> list[str]:
    """The run's tool calls that its tool did not answer (an unknown tool, a failure)."""
    return [f"{c.name}: {c.error}" for c in result.tool_calls if c.error]


def check_result(result: RunResult, what: str) -> None:
    if result.status != "completed" or not result.final_text:
        raise RuntimeError(f"{what}: the run ended {result.status} ({result.failure or 'no reply'})")
    failed = failed_calls(result)
    if failed:  # a tool the worker lacks, say: the run completes, but the figure would be of something else
        raise RuntimeError(f"{what}: {len(failed)} tool call(s) failed, the first {failed[0]}")


async def result_of(handle: WorkflowHandle[Any, Any], timeout: float = RUN_TIMEOUT_SECONDS) -> Any:
    try:
        return await asyncio.wait_for(handle.result(), timeout)
    except TimeoutError:
        raise RuntimeError(f"workflow {handle.id} had not ended after {timeout:.0f} s; see its history") from None


async def durable_run(stack: Stack, message: str, mode: str) -> tuple[float, WorkflowHandle[Any, RunResult]]:
    """Seconds from start_workflow to the result, and the handle (for its history later)."""
    started = time.perf_counter()
    handle = await durable_start(stack, message, mode)
    result = await result_of(handle)
    elapsed = time.perf_counter() - started
    check_result(result, f"durable {mode} run {handle.id}")
    return elapsed, handle


def run_tools(run: Any) -> list[dict[str, str]]:
    """The tool outputs of a round, the tools called in-process (the SDK loop's side)."""
    outputs = []
    for call in run.required_action.submit_tool_outputs.tool_calls:
        tool = registry.get(call.function.name)
        if tool is None:
            raise RuntimeError(f"the model called an unknown tool {call.function.name!r}")
        kwargs = tool.call_kwargs(tool.parse_arguments(json.loads(call.function.arguments)), None)
        output = tool.function(**kwargs)  # get_weather is sync and instant
        outputs.append({"tool_call_id": call.id, "output": output if isinstance(output, str) else json.dumps(output)})
    return outputs


async def _follow_sdk_stream(manager: Any) -> tuple[Any, str]:
    """Read a run stream to its end (as the SDK's helper does): the last run event, the text."""
    run, text = None, []
    async with manager as stream:
        async for event in stream:
            if event.event.startswith("thread.run.") and not event.event.startswith("thread.run.step"):
                run = event.data
            elif event.event == "thread.message.completed":
                text.extend(b.text.value for b in event.data.content if b.type == "text")
    if run is None:
        raise RuntimeError("an SDK run stream ended without a run event")
    return run, "".join(text)


async def sdk_stream_run(stack: Stack, message: str) -> float:
    """The anchor of figure 2: the SDK's streaming loop, tools in-process, no Temporal."""
    sdk, started = stack.sdk, time.perf_counter()
    thread = await sdk.beta.threads.create(messages=[{"role": "user", "content": message}])
    run, text = await _follow_sdk_stream(sdk.beta.threads.runs.stream(thread_id=thread.id, assistant_id=stack.assistant_id))
    while run.status == "requires_action":
        outputs = run_tools(run)
        run, text = await _follow_sdk_stream(
            sdk.beta.threads.runs.submit_tool_outputs_stream(thread_id=thread.id, run_id=run.id, tool_outputs=outputs)  # type: ignore[arg-type]
        )
    elapsed = time.perf_counter() - started
    if run.status != "completed" or not text:
        raise RuntimeError(f"SDK stream run {run.id} ended {run.status}")
    return elapsed


async def sdk_poll_run(stack: Stack, message: str) -> float:
    """The anchor of figure 3: create_and_poll, submit_tool_outputs_and_poll, then the reply."""
    sdk, started = stack.sdk, time.perf_counter()
    thread = await sdk.beta.threads.create(messages=[{"role": "user", "content": message}])
    run = await sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=stack.assistant_id)
    while run.status == "requires_action":
        run = await sdk.beta.threads.runs.submit_tool_outputs_and_poll(
            thread_id=thread.id, run_id=run.id, tool_outputs=run_tools(run)  # type: ignore[arg-type]
        )
    page = await sdk.beta.threads.messages.list(thread.id, run_id=run.id, order="asc")
    elapsed = time.perf_counter() - started
    if run.status != "completed" or not any(m.role == "assistant" for m in page.data):
        raise RuntimeError(f"SDK poll run {run.id} ended {run.status}")
    return elapsed


# ---------------------------------------------------------------------------- histories and metrics


def event_kinds(history: Any) -> Counter[str]:
    return Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)


def _seconds(timestamp: Any) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


async def heartbeats_received(stack: Stack) -> float:
    """Activity heartbeats the dev server's frontend has answered so far (its metrics)."""
    response = await stack.admin.get(stack.metrics_url)
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith("service_requests{") and 'service_name="frontend"' in line and 'operation="RecordActivityTaskHeartbeat' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# ---------------------------------------------------------------------------- the figures


async def bare_hops(stack: Stack, activities: int) -> list[float]:
    """One workflow of ``activities`` no-op activities in a row: each hop's seconds."""
    handle = await stack.client.start_workflow(
        "AnchorHops", activities, id=f"anchor-hops-{uuid.uuid4()}", task_queue=stack.bare_queue
    )
    await result_of(handle)
    history = await handle.fetch_history()
    times = [_seconds(e.event_time) for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


async def figure_hops(stack: Stack, repeat: int, rounds: int, samples: int, hop_activities: int,
                      keep: dict[str, Any]) -> dict[str, Any]:
    hops = await bare_hops(stack, hop_activities)
    hop = statistics.median(hops)
    with_rounds, without = [], []
    message_r, message_0 = script_message(rounds, HOP_TURN_SECONDS), script_message(0, HOP_TURN_SECONDS)
    for sample in range(samples):
        order = [(message_r, with_rounds), (message_0, without)]
        if (repeat + sample) % 2:
            order.reverse()
        for message, into in order:
            elapsed, handle = await durable_run(stack, message, "stream")
            into.append(elapsed)
            keep.setdefault("with_rounds" if message is message_r else "reply_only", handle)
    t_r, t_0 = statistics.median(with_rounds), statistics.median(without)
    tool_seconds = 0.0  # instant tools
    added = (t_r - t_0) / rounds - tool_seconds - HOP_TURN_SECONDS
    return {"ratio": added / hop, "hop_ms": hop * 1000, "added_per_round_ms": added * 1000,
            "t_rounds_ms": t_r * 1000, "t_reply_only_ms": t_0 * 1000}


async def figure_vs_sdk(stack: Stack, repeat: int, mode: str, turn_seconds: float, pairs: int,
                        keep: dict[str, Any]) -> dict[str, Any]:
    message = script_message(SHAPE_ROUNDS, turn_seconds)
    anchor = sdk_stream_run if mode == "stream" else sdk_poll_run
    durable, sdk = [], []
    for pair in range(pairs):

        async def subject() -> None:
            elapsed, handle = await durable_run(stack, message, mode)
            durable.append(elapsed)
            keep.setdefault("handle", handle)

        async def anchored() -> None:
            sdk.append(await anchor(stack, message))

        steps = [subject, anchored] if (repeat + pair) % 2 == 0 else [anchored, subject]
        for step in steps:
            await step()
    d, s = statistics.median(durable), statistics.median(sdk)
    return {"ratio": d / s, "durable_ms": d * 1000, "sdk_ms": s * 1000}


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process has used so far: this one's (the workers, the
    clients, the SDK loops), or another's from /proc."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    return read_proc(pid).cpu_seconds


def cpu_by_process(stack: Stack) -> dict[str, float]:
    return {"workers": cpu_seconds(), **{name: cpu_seconds(pid) for name, pid in stack.pids.items()}}


async def timed_batch(starts: list[Callable[[], Awaitable[WorkflowHandle[Any, Any]]]]) -> float:
    """Start every workflow at once, wait for all; seconds from the first start to the last end."""
    started = time.perf_counter()
    handles = await asyncio.gather(*(start() for start in starts))
    results = await asyncio.gather(*(result_of(h, BATCH_TIMEOUT_SECONDS) for h in handles))
    elapsed = time.perf_counter() - started
    for handle, result in zip(handles, results, strict=True):
        if isinstance(result, RunResult):
            check_result(result, f"durable run {handle.id}")
    return elapsed


async def figure_throughput(stack: Stack, repeat: int, concurrency: int) -> dict[str, Any]:
    message = script_message(SHAPE_ROUNDS, THROUGHPUT_TURN_SECONDS)

    def durable_starts() -> list[Callable[[], Awaitable[WorkflowHandle[Any, Any]]]]:
        return [lambda: durable_start(stack, message, "stream") for _ in range(concurrency)]

    def bare_starts() -> list[Callable[[], Awaitable[WorkflowHandle[Any, Any]]]]:
        return [
            lambda: stack.client.start_workflow(
                "AnchorBareRounds", args=[SHAPE_ROUNDS, TOOLS_PER_ROUND], id=f"anchor-bare-{uuid.uuid4()}",
                task_queue=stack.bare_queue,
            )
            for _ in range(concurrency)
        ]

    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU ms per run, by side and process: where the throughput goes
    for side in (["durable", "bare"] if repeat % 2 == 0 else ["bare", "durable"]):
        before = cpu_by_process(stack)
        seconds[side] = await timed_batch(durable_starts() if side == "durable" else bare_starts())
        after = cpu_by_process(stack)
        for process in before:
            cpu[f"{side}_{process}_cpu_ms"] = (after[process] - before[process]) * 1000 / concurrency
    durable_rate, bare_rate = concurrency / seconds["durable"], concurrency / seconds["bare"]
    return {"ratio": durable_rate / bare_rate, "durable_runs_per_s": durable_rate, "bare_runs_per_s": bare_rate, **cpu}


async def run_counters(stack: Stack, handle: WorkflowHandle[Any, Any]) -> dict[str, int]:
    kinds = event_kinds(await handle.fetch_history())
    return {
        "activities": kinds.get("ACTIVITY_TASK_SCHEDULED", 0),
        "workflow_tasks": kinds.get("WORKFLOW_TASK_COMPLETED", 0),
        "signals": kinds.get("WORKFLOW_EXECUTION_SIGNALED", 0),
        "history_events": sum(kinds.values()),
    }


async def solo_counters(stack: Stack, mode: str, turn_seconds: float) -> dict[str, Any]:
    """One 3x4 run with nothing else running: its history's counters and the heartbeats the
    server received meanwhile (its metrics are read before and after)."""
    await asyncio.sleep(0.5)  # let heartbeats of earlier activities land
    before = await heartbeats_received(stack)
    _, handle = await durable_run(stack, script_message(SHAPE_ROUNDS, turn_seconds), mode)
    await asyncio.sleep(1.5)  # the SDK throttles heartbeats up to 1 s; metrics follow at once
    after = await heartbeats_received(stack)
    return {**await run_counters(stack, handle), "heartbeats": int(after - before),
            "mode": mode, "turn_seconds": turn_seconds}


# ---------------------------------------------------------------------------- figure 5: 1,000 runs


def _memory_kib(pid: int) -> tuple[int, int]:
    """The process's RSS and its high-water mark; (0, 0) once it has gone."""
    try:
        reading = read_proc(pid)
    except OSError:
        return 0, 0
    return reading.rss_kib, reading.hwm_kib


async def figure_thousand(stack: Stack, server: TemporalDevServer, emulator: EmulatorProcess, runs: int,
                          workdir: Path, deadline_seconds: float) -> dict[str, Any]:
    """``runs`` concurrent 3x4 runs on one worker process (``python worker.py``)."""
    task_queue = f"anchor-thousand-{uuid.uuid4().hex[:6]}"
    health = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ, "TEMPORAL_ADDRESS": server.address, "TEMPORAL_NAMESPACE": "default",
        "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-bench", "DA_TASK_QUEUE": task_queue,
        "DA_TOOL_MODULES": "durable_assistants.tools.examples", "DA_LOG_LEVEL": "warning", "DA_LOG_FORMAT": "json",
        "DA_HEALTH_ADDRESS": health,
    }
    for name in ("TEMPORAL_API_KEY", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE", "DA_CODEC_KEYS", "DA_CODEC_KEYS_FILE"):
        env.pop(name, None)
    log_path = workdir / "worker-thousand.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=log, stderr=log,
                                   preexec_fn=die_with_parent)
    try:
        ready_by = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited at start (code {process.returncode}); see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if (await stack.admin.get(f"http://{health}/readyz", timeout=2)).status_code == 200:
                    break
            if time.monotonic() > ready_by:
                raise RuntimeError(f"the worker was not ready within 60 s; see {log_path}")
            await asyncio.sleep(0.2)
        peak_rss = 0
        stop_sampling = asyncio.Event()

        async def sample() -> None:
            nonlocal peak_rss
            while not stop_sampling.is_set():
                peak_rss = max(peak_rss, _memory_kib(process.pid)[0])
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop_sampling.wait(), 0.5)

        sampler = asyncio.create_task(sample())
        # The worker process has the example tools only (get_weather, an activity per call):
        # figure 5 is the heavier configuration whatever --tool says.
        message = script_message(SHAPE_ROUNDS, 0.3, tool=ACTIVITY_TOOL)
        gate = asyncio.Semaphore(100)

        async def start() -> WorkflowHandle[Any, RunResult]:
            async with gate:
                return await durable_start(stack, message, "stream", task_queue)

        started = time.perf_counter()
        handles = await asyncio.gather(*(start() for _ in range(runs)))
        waiting = [asyncio.ensure_future(h.result()) for h in handles]
        done, not_ended = await asyncio.wait(waiting, timeout=deadline_seconds)
        wall = time.perf_counter() - started
        for future in not_ended:
            future.cancel()
        hwm = _memory_kib(process.pid)[1]
        stop_sampling.set()
        await sampler
        # Completed, and every tool call answered by the tool (not "unknown tool" or a failure).
        completed = sum(1 for f in done if f.exception() is None and f.result().status == "completed" and not failed_calls(f.result()))
        kinds: Counter[str] = Counter()
        timeout_types: Counter[str] = Counter()
        fetch_gate = asyncio.Semaphore(20)

        async def count(handle: WorkflowHandle[Any, Any]) -> None:
            async with fetch_gate:
                history = await handle.fetch_history()
                kinds.update(event_kinds(history))
                for event in history.events:
                    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                        timeout_types[TimeoutType.Name(event.workflow_task_timed_out_event_attributes.timeout_type)] += 1

        await asyncio.gather(*(count(h) for h in handles))
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(stop_process, process, 30)
    return {
        "runs": runs, "completed": completed, "not_ended": len(not_ended), "wall_seconds": wall,
        "runs_per_second": completed / wall,
        "peak_rss_mib": max(hwm, peak_rss) / 1024,
        "workflow_task_timeouts": kinds.get("WORKFLOW_TASK_TIMED_OUT", 0),
        "workflow_task_timeouts_by_type": dict(timeout_types),
        "workflow_task_failures": kinds.get("WORKFLOW_TASK_FAILED", 0),
        "activity_timeouts": kinds.get("ACTIVITY_TASK_TIMED_OUT", 0),
    }


# ---------------------------------------------------------------------------- main


def header(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT), *argv]),
        "cpus": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "repeats": args.repeats,
        "quick": args.quick,
    }


FIGURES = [
    ("1", "added latency per tool round, stream", "bare hops", "<= 2"),
    ("2", "stream run time / SDK streaming loop, 3x4, 300 ms turns", "ratio", "<= 1.15"),
    ("3a", "poll run time / SDK create_and_poll, 3x4, 300 ms turns", "ratio", "<= 1.15"),
    ("3b", "poll run time / SDK create_and_poll, 3x4, {long} turns", "ratio", "<= 1.15"),
    ("4", "throughput / bare workflow, {n} concurrent 3x4 runs", "ratio", ">= 0.85"),
]


def meets(goal: str, value: float) -> bool:
    op, bound = goal.split()
    return value <= float(bound) if op == "<=" else value >= float(bound)


async def main(args: argparse.Namespace, argv: list[str]) -> int:
    global TOOL
    TOOL = args.tool
    worker.configure_logging("console", "warning")
    quick = args.quick
    rounds = 2 if quick else 5
    samples = 1 if quick else 3
    hop_activities = 10 if quick else 30
    pairs = 1 if quick else 2
    concurrency = args.concurrency or (12 if quick else 60)
    long_turn = 1.0
    thousand = args.thousand_runs or (100 if quick else 1000)
    info = header(args, argv)
    info["setup"] = (f"file-backed Temporal dev server, emulator (openai-poll-after-ms {args.poll_after_ms}), in-process "
                     f"workers (WorkerSettings() defaults), tool {TOOL} (instant, sync{', inline' if TOOL == INLINE_TOOL else ''}), Assistants API")
    out = sys.stderr if args.json else sys.stdout
    print(f"anchor benchmark: {info['date']}; {info['cpus']} CPUs, {info['machine']}, Python {info['python']}; "
          f"commit {info['commit']}", file=out)
    print(f"command: {info['command']}", file=out)
    print(f"setup: {info['setup']}", file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="anchor-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / f"{BARE_MODULE}.py").write_text(BARE_SOURCE)
        sys.path.insert(0, str(workdir))
        bare = importlib.import_module(BARE_MODULE)
        metrics_port = free_port()
        server = TemporalDevServer(db_filename=workdir / "temporal.db", log_file=workdir / "temporal.log",
                                   extra_args=["--metrics-port", str(metrics_port)])
        with server, EmulatorProcess("--poll-after-ms", str(args.poll_after_ms), "--seed", "1") as emulator:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-bench", max_retries=0)
            sdk = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-bench", max_retries=0, timeout=RUN_TIMEOUT_SECONDS)
            admin = httpx.AsyncClient(timeout=30)
            assistant = await sdk.beta.assistants.create(model="gpt-4o", tools=registry.schemas())  # type: ignore[arg-type]
            suffix = uuid.uuid4().hex[:6]
            stack = Stack(client, model, sdk, admin, assistant.id, f"anchor-durable-{suffix}", f"anchor-bare-{suffix}",
                          f"http://127.0.0.1:{metrics_port}/metrics", bare,
                          {"server": server.process.pid, "emulator": emulator.process.pid})  # type: ignore[union-attr]
            options = worker.WorkerSettings().worker_options()
            durable_workers = worker.build_workers(client, model, registry, stack.durable_queue, **options)
            bare_options = {**options, "max_heartbeat_throttle_interval": worker.HEARTBEAT_THROTTLE}
            bare_worker = Worker(client, task_queue=stack.bare_queue, workflows=[bare.HopsWorkflow, bare.BareRoundsWorkflow],
                                 activities=[bare.noop], **bare_options)
            results: dict[str, list[dict[str, Any]]] = {f[0]: [] for f in FIGURES}
            keep: dict[str, dict[str, Any]] = {"1": {}, "2": {}, "3a": {}, "3b": {}}
            counters: dict[str, Any] = {}
            thousand_result: dict[str, Any] | None = None
            try:
                async with worker.WorkerGroup([*durable_workers, bare_worker]):
                    # Warm up: imports, connections, the sandbox's first import of each workflow.
                    await bare_hops(stack, 3)
                    for mode in ("stream", "poll"):
                        await durable_run(stack, script_message(1, 0.0), mode)
                    await sdk_stream_run(stack, script_message(1, 0.0))
                    await sdk_poll_run(stack, script_message(1, 0.0))
                    only = set(args.only.split(",")) if args.only else {f[0] for f in FIGURES}
                    for repeat in range(args.repeats):
                        step = time.perf_counter()
                        if "1" in only:
                            results["1"].append(await figure_hops(stack, repeat, rounds, samples, hop_activities, keep["1"]))
                        if "2" in only:
                            results["2"].append(await figure_vs_sdk(stack, repeat, "stream", 0.3, pairs, keep["2"]))
                        if "3a" in only:
                            results["3a"].append(await figure_vs_sdk(stack, repeat, "poll", 0.3, pairs, keep["3a"]))
                        if "3b" in only:
                            results["3b"].append(await figure_vs_sdk(stack, repeat, "poll", long_turn, pairs, keep["3b"]))
                        if "4" in only:
                            results["4"].append(await figure_throughput(stack, repeat, concurrency))
                        print(f"  repeat {repeat + 1}/{args.repeats}: {time.perf_counter() - step:.0f} s; "
                              + ", ".join(f"[{k}] {v[-1]['ratio']:.2f}" for k, v in results.items() if v), file=sys.stderr, flush=True)
                    counters["stream"] = await solo_counters(stack, "stream", 0.3)
                    counters["poll"] = await solo_counters(stack, "poll", 0.3)
                    if "with_rounds" in keep["1"] and "reply_only" in keep["1"]:
                        with_r = await run_counters(stack, keep["1"]["with_rounds"])
                        without = await run_counters(stack, keep["1"]["reply_only"])
                        counters["per_round"] = {
                            k: (with_r[k] - without[k]) / rounds for k in ("activities", "workflow_tasks", "signals", "history_events")
                        }
                        counters["per_round"]["rounds"] = rounds
                    if args.thousand:
                        print(f"  [5] {thousand} concurrent runs on one worker process...", file=sys.stderr, flush=True)
                        thousand_result = await figure_thousand(stack, server, emulator, thousand, workdir, args.thousand_timeout)
            finally:
                await model.close()
                await sdk.close()
                await admin.aclose()
        sys.path.remove(str(workdir))

    figures = []
    for key, name, unit, goal in FIGURES:
        if not results[key]:
            continue  # not asked for (--only)
        ratios = [r["ratio"] for r in results[key]]
        details = {k: statistics.median(r[k] for r in results[key]) for k in results[key][0] if k != "ratio"}
        s = spread(ratios)
        figures.append({
            "figure": key, "name": name.format(long=f"{long_turn * 1000:.0f} ms", n=concurrency), "unit": unit, "goal": goal,
            **s, "meets_goal": meets(goal, s["median"]), "ratios": ratios, "median_details": details,
        })
    report = {"header": info, "figures": figures, "counters": counters, "thousand": thousand_result}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report, rounds)
    if thousand_result is not None and thousand_result["completed"] < thousand_result["runs"]:
        return 1  # a run that did not complete is a failure of the benchmark, not a figure
    return 0


def print_table(report: dict[str, Any], rounds: int) -> None:
    repeats = report["header"]["repeats"]
    print()
    print(f"{'fig':<4} {'figure':<58} {'goal':>8} {'min':>6} {'median':>7} {'max':>6}  {'goal met':<8}  medians")
    for f in report["figures"]:
        d = f["median_details"]
        if f["figure"] == "1":
            what = (f"hop {d['hop_ms']:.1f} ms; +{d['added_per_round_ms']:.1f} ms/round "
                    f"({rounds} rounds {d['t_rounds_ms']:.0f} ms, reply only {d['t_reply_only_ms']:.0f} ms)")
        elif f["figure"] == "4":
            what = (f"durable {d['durable_runs_per_s']:.2f} runs/s, bare {d['bare_runs_per_s']:.2f} runs/s; CPU ms a run, "
                    + ", ".join(f"{side} " + "/".join(f"{d[f'{side}_{p}_cpu_ms']:.0f}" for p in ("workers", "server", "emulator"))
                                for side in ("durable", "bare"))
                    + " (workers/server/emulator)")
        else:
            what = f"durable {d['durable_ms']:.0f} ms, SDK {d['sdk_ms']:.0f} ms"
        print(f"{f['figure']:<4} {f['name']:<58} {f['goal']:>8} {f['min']:>6.2f} {f['median']:>7.2f} {f['max']:>6.2f}  "
              f"{'yes' if f['meets_goal'] else 'no':<8}  {what}")
    t = report["thousand"]
    if t is None:
        print(f"{'5':<4} {'1,000 concurrent runs on one worker process':<58} not run (--thousand)")
    else:
        late = f" ({t['not_ended']} not ended within --thousand-timeout)" if t["not_ended"] else ""
        print(f"{'5':<4} {format(t['runs'], ',') + ' concurrent runs on one worker process':<58} "
              f"completed {t['completed']}/{t['runs']}{late}; peak RSS {t['peak_rss_mib']:.0f} MiB (goal <= 400); "
              f"workflow task timeouts {t['workflow_task_timeouts']} (goal 0) {t.get('workflow_task_timeouts_by_type') or ''}; "
              f"{t['runs_per_second']:.1f} runs/s; "
              f"workflow task failures {t['workflow_task_failures']}, activity timeouts {t['activity_timeouts']}")
    print(f"     (min / median / max over {repeats} repeat{'s' if repeats != 1 else ''}; "
          f"subject and anchor alternate within each repeat)")
    print()
    for mode in ("stream", "poll"):
        c = report["counters"].get(mode)
        if c:
            print(f"one 3x4 run, {mode}, {c['turn_seconds'] * 1000:.0f} ms turns: {c['activities']} activities, "
                  f"{c['workflow_tasks']} workflow tasks, {c['signals']} signal(s), {c['history_events']} history events, "
                  f"{c['heartbeats']} activity heartbeats received by the server")
    p = report["counters"].get("per_round")
    if p:
        print(f"one round of {TOOLS_PER_ROUND} tools, stream (({p['rounds']}-round run - reply-only run) / {p['rounds']}): "
              f"{p['activities']:g} activities, {p['workflow_tasks']:g} workflow tasks, {p['signals']:g} signal(s), "
              f"{p['history_events']:g} history events")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of every subject/anchor pair (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke check, not figures to cite")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--concurrency", type=int, help="figure 4's concurrent runs (default 60; 12 with --quick)")
    parser.add_argument("--poll-after-ms", type=int, default=100, help="the emulator's openai-poll-after-ms (default %(default)s)")
    parser.add_argument("--thousand", action="store_true", help="also figure 5: 1,000 concurrent runs on a worker process (minutes)")
    parser.add_argument("--thousand-runs", type=int, help="figure 5's runs (default 1000; 100 with --quick)")
    parser.add_argument("--thousand-timeout", type=float, default=1800, help="figure 5's limit in seconds (default %(default)s)")
    parser.add_argument("--tool", choices=[INLINE_TOOL, ACTIVITY_TOOL], default=INLINE_TOOL,
                        help="the tool every round calls: the instant tool inline (default), or the same function as an activity per call")
    parser.add_argument("--only", help="comma-separated figures to measure, e.g. 1,2 (default: 1,2,3a,3b,4)")
    parsed = parser.parse_args()
    if parsed.repeats < 1:
        parser.error("--repeats must be 1 or more")
    try:
        code = asyncio.run(main(parsed, sys.argv))
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a run that failed, a server that did not start: one line, exit 1
        import traceback

        traceback.print_exc()
        print(f"anchor benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK's runtime threads can abort a finalizing interpreter (sdk-python#300).
    os._exit(code)
