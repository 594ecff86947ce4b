"""The chaos run: durable runs on both APIs while everything around them fails, then a check
that nothing was lost, duplicated or left hanging.

On this machine alone it starts a file-backed Temporal dev server, the emulator and the worker
(``python worker.py``, a separate process), then enqueues ``--runs`` runs (2-3 rounds of 2-4
parallel tool calls each; poll and stream; Assistants on new and shared threads, Responses on
shared conversations and on response chains) with ``durable_assistants.client.enqueue_run``,
one every ``--interval`` seconds, while:

- the emulator fails about ``--fault-rate`` of the API calls (429 with retry-after, 500 and
  503, a 500 or a dropped connection *after* the call took effect, slow answers, streams cut
  after a few events);
- the worker is killed with SIGKILL ``--kills`` times at random moments and started again;
- the dev server is stopped and started again ``--restarts`` times (same port, same database
  file).

Then, faults off, it checks from the emulator's counters, the API's own objects, the workflow
results and histories, and the tools' execution log: every run ended (none still open
``--run-timeout`` s after it started, none waiting in its queue longer than that per run ahead
of it), completed, one API run per request (Assistants: runs per thread;
Responses: responses per conversation), no duplicate user message, one accepted submit per
round, no lost tool output, no unexpected worker exit; it counts tool re-executions and (on
response chains, which are at-least-once: docs/responses-backend.md) extra responses.

It prints a JSON summary (one object) and a short table; exit status 0 if every check holds,
1 if one fails. Everything it starts is stopped when it ends, also on Ctrl-C or SIGTERM; its
state lives in a temporary directory outside the repository, removed at the end (``--keep``
keeps it and prints where).

    .venv/bin/python bench/chaos.py                          # 200 runs, 30 kills, 3 restarts, 20 % faults
    .venv/bin/python bench/chaos.py --runs 20 --kills 3 --restarts 1 --interval 0.5
    make chaos CHAOS_ARGS="--seed 7 --json-out /tmp/chaos.json"

Why one module of about 940 lines: measurement bench. One chaos run: the fault schedule, the
killed worker, the restarted server, and every check that nothing was lost or done twice,
over the same state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter  # noqa: E402

from durable_assistants.client import IdempotencyConflictError, RunFailedError, RunHandle, enqueue_run, run_workflow_id  # noqa: E402
from durable_assistants.devstack.temporal import TemporalDevServer, free_port  # noqa: E402
from durable_assistants.emulator.server import EmulatorProcess  # noqa: E402
from durable_assistants.processes import die_with_parent, stop_process  # noqa: E402
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult  # noqa: E402

TASK_QUEUE = "chaos"
TOOL_MODULES = "durable_assistants.tools.examples,bench.chaos_tools"
TOOLS = ("chaos_async", "chaos_sync")
MODEL = "gpt-4o"
KINDS = ("assistants/new-thread", "assistants/shared-thread", "responses/chain", "responses/conversation")
# Stream operations: a `cut` breaks their stream after a few events (other calls of them are
# dropped after taking effect).
STREAMED_OPERATIONS = ("runs.create", "runs.submit_tool_outputs", "responses.create", "responses.retrieve")


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ============================================================================ the plan


@dataclass
class Call:
    tool: str
    label: str
    seconds: float


@dataclass
class Run:
    index: int
    label: str
    kind: str
    mode: str
    rounds: list[list[Call]]
    at: float  # seconds after the chaos phase starts
    context: str | None = None  # the shared thread or conversation
    request_id: str = ""
    # What happened.
    enqueued_at: float | None = None
    enqueue_attempts: int = 0
    queue_position: int = 0  # its place in its thread's queue when enqueued (0: started at once)
    started_at: float | None = None  # when its workflow was first seen to exist
    ended_at: float | None = None
    result: RunResult | None = None
    outcome: str = "not enqueued"  # completed / <status> / workflow failed: ... / stuck / enqueue failed: ...
    history: dict[str, Any] = field(default_factory=dict)
    extensions: int = 0  # times its bound was extended because a step was still being retried

    @property
    def backend(self) -> str:
        return self.kind.split("/")[0]

    @property
    def workflow_id(self) -> str:
        return run_workflow_id(self.request_id)

    @property
    def calls(self) -> list[Call]:
        return [c for r in self.rounds for c in r]

    def message(self) -> str:
        script: dict[str, Any] = {
            "rounds": [[{"name": c.tool, "arguments": {"label": c.label, "seconds": c.seconds}} for c in r] for r in self.rounds],
            "reply": f"done {self.label}\n{{outputs}}",
        }
        if self.mode == "stream":
            script.update(chunk_chars=12, chars_per_second=600)
        return f"Chaos run {self.label}.\n@emulator {json.dumps(script)}"

    def expected_reply(self) -> str:
        return f"done {self.label}\n" + "\n".join(f"- {c.tool}: ok {c.label}" for c in self.calls)

    def request(self, assistant_id: str) -> RunRequest:
        messages = [MessageInput(content=self.message())]
        if self.backend == "assistants":
            return RunRequest(assistant_id=assistant_id, thread_id=self.context, messages=messages, mode=self.mode)  # type: ignore[arg-type]
        return RunRequest(
            backend="responses", model=MODEL, instructions="You are tested under chaos.",
            conversation_id=self.context, messages=messages, mode=self.mode,  # type: ignore[arg-type]
            # A chain run asks for one (the default for a run that continues nothing is a conversation of its own).
            responses_state="chain" if self.kind == "responses/chain" else None,
        )


def make_plan(rng: random.Random, runs: int, interval: float) -> tuple[list[Run], int, int]:
    """The runs, and how many shared threads and conversations they use (about 4 runs each).
    The first four runs are one of each kind, so a small run still has them all."""
    kinds = list(KINDS[: min(runs, 4)])
    for _ in range(runs - len(kinds)):
        backend = rng.choice(("assistants", "responses"))
        if backend == "assistants":
            kinds.append("assistants/new-thread" if rng.random() < 0.4 else "assistants/shared-thread")
        else:
            kinds.append("responses/chain" if rng.random() < 0.3 else "responses/conversation")
    threads = max(1, round(kinds.count("assistants/shared-thread") / 4))
    conversations = max(1, round(kinds.count("responses/conversation") / 4))
    plan = []
    for index, kind in enumerate(kinds):
        label = f"c{index:04d}"
        rounds = []
        for r in range(rng.randint(2, 3)):
            calls = []
            for c in range(rng.randint(2, 4)):
                # Mostly short; one call in six long enough that a kill often lands inside it.
                seconds = round(rng.uniform(2.5, 5.0) if rng.random() < 1 / 6 else rng.uniform(0.1, 1.5), 2)
                calls.append(Call(rng.choice(TOOLS), f"{label}.r{r + 1}.c{c + 1}", seconds))
            rounds.append(calls)
        plan.append(Run(index=index, label=label, kind=kind, mode=rng.choice(("poll", "stream")), rounds=rounds, at=index * interval))
    shared: dict[str, int] = {"assistants/shared-thread": threads, "responses/conversation": conversations}
    for run in plan:
        if run.kind in shared:
            run.context = f"{run.kind}#{rng.randrange(shared[run.kind])}"  # replaced by the real ID at setup
    return plan, threads, conversations


# ============================================================================ faults


def fault_rules(rate: float) -> list[tuple[str, dict[str, Any]]]:
    """(kind, rule) pairs. The emulator fires at most one rule per call, the first that
    fires in order, so each rule's rate is conditional on the ones before it not firing:
    together the rules on ``*`` fire on 0.85 x ``rate`` of every operation's calls, and the
    cuts first on a fifth of ``rate`` of the streamed operations' calls (about ``rate`` on
    those, a little less on the others)."""
    shares = [
        ("429 retry-after", {"action": "error", "status": 429, "retry_after_ms": 300, "when": "before"}, 0.25),
        ("500", {"action": "error", "status": 500, "when": "before"}, 0.12),
        ("503", {"action": "error", "status": 503, "when": "before"}, 0.12),
        ("effect then 500", {"action": "error", "status": 500, "when": "after"}, 0.11),
        ("effect then drop", {"action": "drop", "when": "after"}, 0.2),
        ("slow answer (2.5 s)", {"action": "delay", "delay_seconds": 2.5, "when": "before"}, 0.2),
    ]
    rules: list[tuple[str, dict[str, Any]]] = []
    for operation in STREAMED_OPERATIONS:
        rules.append(("cut stream", {"operation": operation, "action": "cut", "after_events": 2, "rate": round(rate / 5, 4)}))
    fired_before = 0.0
    for kind, rule, share in shares:
        p = 0.85 * rate * share
        rules.append((kind, {"operation": "*", **rule, "rate": round(p / (1 - fired_before), 4)}))
        fired_before += p
    return rules


# ============================================================================ the stack


class Stack:
    """The dev server, the emulator and the worker process; chaos actions on them."""

    def __init__(self, tmp: Path, seed: int) -> None:
        self.tmp = tmp
        self.seed = seed
        self.server = TemporalDevServer(port=free_port(), db_filename=tmp / "temporal.db", log_file=tmp / "temporal.log")
        self.emulator = EmulatorProcess(
            "--seed", str(seed), "--turn-seconds", "0.1", "--poll-after-ms", "100", "--expiry-seconds", "3600"
        )
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log: Path | None = None
        self.workers_started = 0
        self.kills = 0
        self.restarts = 0
        self.server_down_seconds = 0.0
        self.unexpected_exits: list[dict[str, Any]] = []
        self.kill_log: list[dict[str, Any]] = []
        self.restart_log: list[tuple[float, float]] = []  # (stopped, serving again), Unix time
        self.restart_moments: list[dict[str, Any]] = []
        self.lock = asyncio.Lock()
        self.tool_log = tmp / "tool-executions.log"

    def start_servers(self) -> None:
        self.server.start()
        # The emulator's own log (a traceback for each request whose client vanished, as a
        # killed worker's do) goes to a file, not between the run's lines: the child inherits
        # stderr when it starts, so point fd 2 there meanwhile.
        sys.stderr.flush()
        saved, log = os.dup(2), os.open(self.tmp / "emulator.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 2)
        try:
            self.emulator.__enter__()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(log)

    def stop_all(self) -> None:
        if self.worker is not None:
            stop_process(self.worker, timeout=15)
        self.emulator.stop()
        self.server.stop()

    # --- the worker

    def _spawn_worker(self) -> None:
        self.workers_started += 1
        self.worker_log = self.tmp / f"worker-{self.workers_started}.log"
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.server.address,
            "TEMPORAL_NAMESPACE": "default",
            "OPENAI_BASE_URL": self.emulator.base_url,
            "OPENAI_API_KEY": "sk-chaos",
            "DA_TASK_QUEUE": TASK_QUEUE,
            "DA_TOOL_MODULES": TOOL_MODULES,
            "DA_LOG_FORMAT": "json",
            "DA_LOG_LEVEL": "info",
            "CHAOS_TOOL_LOG": str(self.tool_log),
            "PYTHONUNBUFFERED": "1",
        }
        with self.worker_log.open("ab") as out:
            self.worker = subprocess.Popen(
                [sys.executable, "worker.py"], cwd=REPO, env=env, stdout=out, stderr=out, preexec_fn=die_with_parent
            )

    async def start_worker(self) -> None:
        """Start the worker and wait until it says it serves; one that exits first is noted and started again."""
        for _ in range(10):
            self._spawn_worker()
            assert self.worker is not None and self.worker_log is not None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if self.worker.poll() is not None:
                    self._note_exit("during start")
                    await asyncio.sleep(1)
                    break
                if '"event": "worker started"' in self.worker_log.read_text(errors="replace"):
                    return
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the worker did not start within 120 s; see {self.worker_log}")
        raise RuntimeError("the worker exited at start 10 times in a row")

    def _note_exit(self, when: str) -> None:
        assert self.worker is not None and self.worker_log is not None
        tail = self.worker_log.read_text(errors="replace").splitlines()[-8:]
        self.unexpected_exits.append({"worker": self.workers_started, "exit_code": self.worker.returncode, "when": when, "log_tail": tail})
        say(f"worker {self.workers_started} exited by itself with status {self.worker.returncode} ({when})")

    async def kill_worker(self, rng: random.Random, t: float) -> None:
        async with self.lock:
            assert self.worker is not None
            if self.worker.poll() is None:
                self.worker.send_signal(signal.SIGKILL)
                await asyncio.to_thread(self.worker.wait)
                self.kills += 1
                self.kill_log.append({"at": round(t, 1), "time": time.time(), "worker": self.workers_started, "pid": self.worker.pid})
            pause = rng.choice((0.0, rng.uniform(0.2, 3.0)))
            say(f"killed worker {self.workers_started} (SIGKILL #{self.kills}); restarting in {pause:.1f} s")
            await asyncio.sleep(pause)
            await self.start_worker()

    async def restart_server(self, rng: random.Random, t: float) -> None:
        async with self.lock:
            started = time.monotonic()
            stopped = time.time()
            await asyncio.to_thread(self.server.stop)
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await asyncio.to_thread(self.server.start)
            self.restarts += 1
            self.restart_log.append((stopped, time.time()))
            self.restart_moments.append({"at": round(t, 1), "down_seconds": round(time.monotonic() - started, 1)})
            self.server_down_seconds += time.monotonic() - started
            say(f"dev server restarted (#{self.restarts}, down {time.monotonic() - started:.1f} s)")

    async def watch_worker(self) -> None:
        """A worker that exits without being killed is noted and started again."""
        while True:
            await asyncio.sleep(0.5)
            if self.worker is not None and self.worker.poll() is not None and not self.lock.locked():
                async with self.lock:
                    if self.worker.poll() is not None:
                        self._note_exit("while serving")
                        await self.start_worker()


# ============================================================================ runs


async def enqueue(client: Client, run: Run, assistant_id: str, limit: float) -> RunHandle | None:
    request = run.request(assistant_id)
    deadline = time.monotonic() + limit
    while True:
        run.enqueue_attempts += 1
        try:
            # The same request ID every time: a retry after a lost reply is the same run.
            return await asyncio.wait_for(enqueue_run(client, request, request_id=run.request_id, task_queue=TASK_QUEUE), 60)
        except (IdempotencyConflictError, ValueError, TypeError) as exc:
            run.outcome = f"enqueue failed: {type(exc).__name__}: {exc}"
            return None
        except Exception as exc:  # the server restarting, an update that waits for a worker: again, same ID
            if time.monotonic() > deadline:
                run.outcome = f"enqueue failed: {type(exc).__name__}: {exc}"
                return None
            await asyncio.sleep(1)


async def wait_for_end(client: Client, run: Run, run_timeout: float) -> None:
    """The run's result, or ``stuck`` when a bound runs out. Two bounds: a run waiting in its
    thread's queue behind ``queue_position - 1`` others must start within ``run_timeout`` per
    run ahead of it (each of those is bounded so), and once started it must end within
    ``run_timeout``. A queued run's workflow does not exist yet: look for it every 2 s
    (describe only; ``RunHandle.started`` would also query the thread queue), then wait on
    ``RunHandle.result``; server restarts are waited out."""
    assert run.enqueued_at is not None
    handle = client.get_workflow_handle(run.workflow_id)
    deadline = run.enqueued_at + run_timeout * max(1, run.queue_position)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            run.outcome = "stuck"
            return
        try:
            await handle.describe()
            break
        except Exception:  # NOT_FOUND while it waits in its queue; anything while the server restarts
            pass
        await asyncio.sleep(min(2.0, max(remaining, 0.01)))
    run.started_at = time.monotonic()
    deadline = run.started_at + run_timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if run.extensions < MAX_EXTENSIONS and await _still_retrying(client, run.workflow_id):
                run.extensions += 1
                deadline += run_timeout
                continue
            run.outcome = "stuck"
            return
        try:
            # cost=False: the harness reads the histories itself, at the end.
            run.result = await asyncio.wait_for(RunHandle(client, run.workflow_id).result(cost=False), remaining)
            run.outcome = run.result.status
            run.ended_at = time.monotonic()
            return
        except RunFailedError as exc:
            run.outcome = f"workflow failed: {exc}"
            run.ended_at = time.monotonic()
            return
        except TimeoutError:
            run.outcome = "stuck"
            return
        except Exception:  # the dev server restarting
            await asyncio.sleep(1)


# A run whose step is still being retried when its bound runs out is slow, not stuck: a model
# step whose every attempt makes several API calls fails about half its attempts at a 20 %
# fault rate, and Temporal's backoff (1 s doubling to 30 s) puts attempt 11 some 180 s after
# the first. Its bound is extended, at most this many times, while the last attempt ended
# within RETRYING_WITHIN seconds (more than the longest backoff): an attempt that made progress.
MAX_EXTENSIONS = 2
RETRYING_WITHIN = 45.0


async def _still_retrying(client: Client, workflow_id: str) -> bool:
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except Exception:  # the dev server restarting: no evidence of progress
        return False
    now = time.time()
    for pending in described.raw_description.pending_activities:
        ended = pending.last_attempt_complete_time
        if pending.attempt > 1 and ended.seconds and now - ended.ToSeconds() <= RETRYING_WITHIN:
            return True
    return False


async def drive(client: Client, run: Run, assistant_id: str, t0: float, run_timeout: float) -> None:
    await asyncio.sleep(max(0.0, t0 + run.at - time.monotonic()))
    run.enqueued_at = time.monotonic()
    handle = await enqueue(client, run, assistant_id, limit=min(300.0, run_timeout))
    if handle is None:
        return
    run.queue_position = handle.receipt.position if handle.receipt is not None else 0
    await wait_for_end(client, run, run_timeout)


async def chaos(stack: Stack, rng: random.Random, t0: float, until: float, kills: int, restarts: int) -> None:
    """The kills and restarts, each at a random moment of its own slot of [4 s, until]."""
    events: list[tuple[float, str]] = []
    start = 4.0
    for n, kind in ((kills, "kill"), (restarts, "restart")):
        width = (until - start) / max(n, 1)
        events += [(start + (i + rng.uniform(0.05, 0.95)) * width, kind) for i in range(n)]
    for at, kind in sorted(events):
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        if kind == "kill":
            await stack.kill_worker(rng, time.monotonic() - t0)
        else:
            await stack.restart_server(rng, time.monotonic() - t0)


# ============================================================================ checks


def read_tool_log(path: Path) -> list[dict[str, Any]]:
    entries = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 6:
                entries.append({"event": parts[0], "key": parts[1], "label": parts[2], "attempt": int(parts[3]), "pid": int(parts[4]),
                                "time": float(parts[5])})
    return entries


def re_execution_causes(log: list[dict[str, Any]], stack: Stack) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Why each execution but a call's last one did not count: it was running in a worker that
    was killed, or it finished and its result never reached Temporal (the worker killed, or the
    dev server down, after it finished); with the timing of each finished one."""
    killed = {k["pid"]: k["time"] for k in stack.kill_log}
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in log:
        by_label[e["label"]].append(e)
    causes: Counter[str] = Counter()
    finished_twice: list[dict[str, Any]] = []
    for label, entries in by_label.items():
        starts = [e for e in entries if e["event"] == "start"]
        for first in starts[:-1]:
            done = next((e for e in entries if e["event"] == "done" and e["key"] == first["key"] and e["pid"] == first["pid"]
                         and e["attempt"] == first["attempt"]), None)
            if done is None:
                causes["running when its worker was killed" if first["pid"] in killed else "running, ended otherwise"] += 1
                continue
            kill = killed.get(done["pid"])
            killed_after = kill is not None and 0 <= kill - done["time"] < 60
            # Finished while the dev server was down (or just coming back): its result had nowhere to go.
            down = any(a <= done["time"] <= b + 2 for a, b in stack.restart_log)
            item: dict[str, Any] = {"label": label, "key": done["key"], "attempt": done["attempt"], "pid": done["pid"]}
            if killed_after:
                item["worker_killed_seconds_after_it_finished"] = round(kill - done["time"], 3)  # type: ignore[operator]
            if down:
                item["finished_while_the_dev_server_was_down"] = True
            causes[
                "finished while the dev server was down, then its worker was killed" if down and killed_after
                else "finished while the dev server was down" if down
                else "finished, then its worker was killed" if killed_after
                else "finished, result lost otherwise"
            ] += 1
            finished_twice.append(item)
    return dict(causes), finished_twice


async def history_summary(client: Client, run: Run) -> dict[str, Any]:
    """Attempts beyond the first, by activity and by what ended the attempt before (the
    `last_failure` of each ActivityTaskStarted), workflow task timeouts and failures."""
    try:
        history = await client.get_workflow_handle(run.workflow_id).fetch_history()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    names: dict[int, str] = {}
    retries: Counter[str] = Counter()
    events: list[str] = []
    summary: Counter[str] = Counter()
    for e in history.events:
        kind = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            name = names.get(a.scheduled_event_id, "?")
            if a.attempt > 1:
                cause = _failure_kind(a.last_failure)
                retries[f"{cause}"] += a.attempt - 1
                events.append(f"#{e.event_id} {name} started at attempt {a.attempt}, last failure: {_failure_text(a.last_failure)}")
        elif e.event_type in (EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED, EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT):
            attrs = (e.activity_task_failed_event_attributes if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                     else e.activity_task_timed_out_event_attributes)
            name = names.get(attrs.scheduled_event_id, "?")
            summary[f"{kind} {name}"] += 1
            events.append(f"#{e.event_id} {kind} {name}: {_failure_text(attrs.failure)}")
        elif e.event_type in (EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
                              EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW):
            summary[kind] += 1
    found: dict[str, Any] = {"events": len(history.events), "retries": dict(retries), "summary": dict(summary), "notable": events[:40]}
    if run.outcome == "stuck":
        found["pending_activities"] = await _pending_activities(client, run.workflow_id)
    return found


async def _pending_activities(client: Client, workflow_id: str) -> list[str] | str:
    """What an open run waits on: its pending activities, with attempt and last failure."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return [
        f"{p.activity_type.name} ({PendingActivityState.Name(p.state).removeprefix('PENDING_ACTIVITY_STATE_').lower()}) "
        f"attempt {p.attempt}" + (f", last failure: {_failure_text(p.last_failure)}" if p.HasField("last_failure") else "")
        for p in described.raw_description.pending_activities
    ]


def _failure_text(failure: Any) -> str:
    text = failure.message
    cause = failure.cause if failure.HasField("cause") else None
    while cause is not None:
        text += f" <- {cause.message}"
        cause = cause.cause if cause.HasField("cause") else None
    return text[:300]


def _failure_kind(failure: Any) -> str:
    if failure.HasField("timeout_failure_info"):
        return f"{TimeoutType.Name(failure.timeout_failure_info.timeout_type).removeprefix('TIMEOUT_TYPE_').lower()} timeout"
    if failure.HasField("application_failure_info"):
        return f"error {failure.application_failure_info.type or 'application'}"
    return "other"


class Checker:
    def __init__(self) -> None:
        self.checks: dict[str, dict[str, Any]] = {}
        self.evidence: list[dict[str, Any]] = []

    def check(self, name: str, bad: int, what: str) -> None:
        self.checks[name] = {"ok": bad == 0, "bad": bad, "what": what}

    def note(self, check: str, **evidence: Any) -> None:
        if sum(1 for e in self.evidence if e["check"] == check) < 15:
            self.evidence.append({"check": check, **evidence})


async def verify(client: Client, model: AsyncOpenAI, admin: httpx.AsyncClient, stack: Stack, plan: list[Run]) -> dict[str, Any]:
    rules = (await admin.get("/faults")).json()["data"]
    await admin.delete("/faults")
    stats = (await admin.get("/stats")).json()
    health = (await admin.get("/health")).json()
    for run in plan:
        if run.enqueued_at is not None:
            run.history = await history_summary(client, run)
    ck = Checker()
    threads, per_run = stats["threads"], stats["runs"]
    ended = [r for r in plan if r.result is not None]

    # --- every run ended, and completed
    stuck = [r for r in plan if r.outcome == "stuck"]
    for r in stuck:
        ck.note("no run stuck", workflow_id=r.workflow_id, kind=r.kind, queue_position=r.queue_position,
                waited_seconds=round((r.started_at or time.monotonic()) - r.enqueued_at, 1) if r.enqueued_at else None,
                open_seconds_at_check=round(time.monotonic() - r.started_at, 1) if r.started_at else None, history=r.history)
    ck.check("no run stuck", len(stuck), "runs still open when their bound ran out")
    not_completed = [r for r in plan if r.outcome != "completed"]
    for r in not_completed:
        if r.outcome != "stuck":
            ck.note("every run completed", workflow_id=r.workflow_id, kind=r.kind, outcome=r.outcome,
                    failure=r.result.failure if r.result else None, history=r.history)
    ck.check("every run completed", len(not_completed), "runs that ended otherwise than completed (stuck ones included)")

    # --- one API run per request; no duplicate user message; one accepted submit per round
    by_context: dict[str, list[Run]] = defaultdict(list)
    for r in ended:
        if r.result is not None and r.result.thread_id and r.kind != "responses/chain":
            by_context[r.result.thread_id].append(r)
    dup_runs = dup_messages = submit_problems = 0
    for context, runs in by_context.items():
        counters = threads.get(context, {})
        if runs[0].backend == "assistants":
            made, expected = counters.get("runs_created", 0), len(runs)
            users = counters.get("user_messages_created", 0)
            listed = [m async for m in model.beta.threads.messages.list(context, limit=100, order="asc")]
            texts = ["".join(getattr(p, "text", None) and p.text.value or "" for p in m.content) for m in listed if m.role == "user"]
            for r in runs:
                api_run = per_run.get(r.result.run_id, {}) if r.result else {}
                accepted = api_run.get("submits_accepted", 0)
                if accepted != len(r.rounds) or (r.result and r.result.rounds != len(r.rounds)):
                    submit_problems += 1
                    ck.note("one accepted submit per round", workflow_id=r.workflow_id, run_id=r.result.run_id if r.result else None,
                            rounds=len(r.rounds), counters=api_run, history=r.history)
        else:
            made, expected = counters.get("responses_created", 0), sum(len(r.rounds) + 1 for r in runs)
            items = [i async for i in model.conversations.items.list(context, limit=100, order="asc")]
            texts = []
            for i in items:
                if i.type == "message" and getattr(i, "role", None) == "user":
                    texts.append("".join(getattr(p, "text", "") or "" for p in i.content))
            outputs = Counter(i.call_id for i in items if i.type == "function_call_output")
            calls = Counter(i.call_id for i in items if i.type == "function_call")
            users = len(texts)
            expected_calls = sum(len(r.calls) for r in runs)
            twice = {k: n for k, n in outputs.items() if n > 1}
            unanswered = [k for k in calls if k not in outputs]
            if twice or sum(calls.values()) != expected_calls or unanswered:
                submit_problems += 1
                ck.note("one accepted submit per round", conversation=context, workflows=[r.workflow_id for r in runs],
                        function_calls=sum(calls.values()), expected_calls=expected_calls, outputs_sent_twice=twice,
                        unanswered_calls=unanswered, counters=counters)
        if made != expected:
            dup_runs += abs(made - expected)
            ck.note("one API run per request", context=context, backend=runs[0].backend, created=made, expected=expected,
                    workflows=[r.workflow_id for r in runs], counters=counters, histories={r.workflow_id: r.history for r in runs})
        seen = Counter(label for r in runs for label in [r.label] for t in texts if f"Chaos run {label}." in t)
        wrong = {r.label: seen.get(r.label, 0) for r in runs if seen.get(r.label, 0) != 1}
        if wrong or users != len(runs):
            dup_messages += sum(abs(n - 1) for n in wrong.values()) or abs(users - len(runs))
            ck.note("no duplicate user message", context=context, user_messages=users, expected=len(runs), copies_by_run=wrong,
                    workflows=[r.workflow_id for r in runs])
    ck.check("one API run per request", dup_runs, "API runs (Assistants, per thread) or responses (per conversation) more or fewer than requested")
    ck.check("no duplicate user message", dup_messages, "user messages stored other than once per run")
    ck.check("one accepted submit per round", submit_problems,
             "Assistants runs whose accepted submits differ from their rounds; conversations with a call answered twice or never")

    # --- lost outputs: a call recorded as failed, or whose output is missing from the reply
    lost = 0
    for r in ended:
        assert r.result is not None
        failed = [c for c in r.result.tool_calls if c.error is not None]
        missing = r.outcome == "completed" and (r.result.final_text or "") != r.expected_reply()
        if failed or missing or len(r.result.tool_calls) != len(r.calls):
            lost += max(len(failed), 1)
            ck.note("no lost tool output", workflow_id=r.workflow_id, kind=r.kind,
                    failed_calls=[{"name": c.name, "call_id": c.call_id, "error": c.error, "attempts": c.attempts} for c in failed],
                    reply_as_expected=not missing, calls_recorded=len(r.result.tool_calls), calls_planned=len(r.calls), history=r.history)
    ck.check("no lost tool output", lost, "tool calls whose output did not reach the model (error outputs such as 'Heartbeat timeout')")

    # --- the worker never died by itself
    ck.check("no unexpected worker exit", len(stack.unexpected_exits), "worker processes that exited without being killed")
    for e in stack.unexpected_exits:
        ck.note("no unexpected worker exit", **e)

    # --- tool executions
    log = read_tool_log(stack.tool_log)
    starts = Counter(e["label"] for e in log if e["event"] == "start")
    dones = Counter(e["label"] for e in log if e["event"] == "done")
    keys: dict[str, set[str]] = defaultdict(set)
    for e in log:
        keys[e["label"]].add(e["key"])
    planned = {c.label for r in plan if r.enqueued_at is not None for c in r.calls}
    never_ran = sorted(label for label in planned if dones.get(label, 0) == 0 and any(
        r.outcome == "completed" and c.label == label for r in plan for c in r.calls))
    ck.check("every completed run's tools ran", len(never_ran), "tool calls of completed runs with no finished execution in the log")
    for label in never_ran[:15]:
        ck.note("every completed run's tools ran", label=label)
    causes, finished_twice = re_execution_causes(log, stack)
    cut_by_kill = sum(1 for e in log if e["event"] == "start") - sum(1 for e in log if e["event"] == "done")
    tools = {
        "calls": len(planned),
        "executions": sum(starts.values()),
        "re_executions": sum(n - 1 for n in starts.values() if n > 1),
        "calls_executed_more_than_once": sum(1 for n in starts.values() if n > 1),
        "calls_finished_more_than_once": sum(1 for n in dones.values() if n > 1),
        "executions_cut_by_a_kill": cut_by_kill,
        "calls_asked_under_two_keys": sum(1 for k in keys.values() if len(k) > 1),
        "re_executions_by_cause": causes,
        "finished_executions_run_again": finished_twice[:30],
    }

    # --- response chains: at-least-once, as documented (docs/responses-backend.md)
    chain_runs = [r for r in ended if r.kind == "responses/chain"]
    on_conversations = sum(c.get("responses_created", 0) for c in threads.values())
    total_responses = sum(c.get("responses_created", 0) for c in per_run.values())
    chains = {
        "runs": len([r for r in plan if r.kind == "responses/chain"]),
        "expected_responses": sum(len(r.rounds) + 1 for r in chain_runs),
        "responses_created": total_responses - on_conversations,
    }
    chains["extra_responses"] = chains["responses_created"] - chains["expected_responses"]

    # --- histories: what the retries were for
    retries: Counter[str] = Counter()
    summary: Counter[str] = Counter()
    for r in plan:
        retries.update(r.history.get("retries", {}))
        summary.update(r.history.get("summary", {}))

    return {
        "checks": ck.checks,
        "evidence": ck.evidence,
        "tools": tools,
        "response_chains": chains,
        "activity_retries_by_cause": dict(retries.most_common()),
        "history_events": dict(summary.most_common()),
        "api": {
            "requests": sum(stats["requests"].values()),
            "faults_fired": sum(stats["faults_fired"].values()),
            "threads_in_emulator": health.get("threads"),
            "rules": rules,
        },
    }


# ============================================================================ main


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    plan, n_threads, n_conversations = make_plan(rng, args.runs, args.interval)
    tmp = Path(tempfile.mkdtemp(prefix="da-chaos-"))
    stack = Stack(tmp, args.seed)
    tasks: list[asyncio.Task[Any]] = []
    started = time.monotonic()
    summary: dict[str, Any] = {}
    try:
        say(f"state in {tmp}; starting the dev server (file-backed) and the emulator")
        stack.start_servers()
        # The SDK core warns at every retried call while the dev server restarts: errors only.
        quiet = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
        client = await Client.connect(stack.server.address, data_converter=pydantic_data_converter, runtime=quiet)
        model = AsyncOpenAI(base_url=stack.emulator.base_url, api_key="sk-chaos", max_retries=0, timeout=30)
        admin = httpx.AsyncClient(base_url=stack.emulator.admin_url, timeout=30)
        import bench.chaos_tools  # noqa: F401  (the assistant is told of the chaos tools)
        from durable_assistants.tools import registry

        assistant = await model.beta.assistants.create(
            model=MODEL, name="chaos", tools=[registry.get(name).schema() for name in TOOLS]  # type: ignore[misc]
        )
        contexts = {f"assistants/shared-thread#{i}": (await model.beta.threads.create()).id for i in range(n_threads)}
        contexts |= {f"responses/conversation#{i}": (await model.conversations.create()).id for i in range(n_conversations)}
        nonce = f"{args.seed}-{int(time.time())}"
        for run in plan:
            run.request_id = f"chaos-{nonce}-{run.label}"
            if run.context is not None:
                run.context = contexts[run.context]
        await stack.start_worker()
        rules = fault_rules(args.fault_rate)
        for _, rule in rules:
            (await admin.post("/faults", json=rule)).raise_for_status()
        say(f"{len(plan)} runs, one every {args.interval} s; {args.kills} kills, {args.restarts} restarts, faults at {args.fault_rate:.0%}")

        t0 = time.monotonic()
        span = plan[-1].at if plan else 0.0
        until = span + max(10.0, 0.1 * span)
        tasks = [asyncio.create_task(drive(client, run, assistant.id, t0, args.run_timeout)) for run in plan]
        watcher = asyncio.create_task(stack.watch_worker())
        tasks.append(watcher)
        chaos_done = asyncio.create_task(chaos(stack, random.Random(rng.random()), t0, until, args.kills, args.restarts))
        tasks.append(chaos_done)
        progress = asyncio.create_task(report_progress(plan, stack))
        tasks.append(progress)
        await chaos_done
        say("chaos over; waiting for the last runs")
        await asyncio.gather(*tasks[: len(plan)])
        watcher.cancel()
        progress.cancel()
        chaos_seconds = time.monotonic() - t0
        say("checking")
        found = await verify(client, model, admin, stack, plan)
        await model.close()
        await admin.aclose()

        durations = sorted(r.ended_at - r.enqueued_at for r in plan if r.ended_at and r.enqueued_at)
        outcomes = Counter(r.outcome if not r.outcome.startswith("workflow failed") else "workflow failed" for r in plan)
        rules_fired = Counter()
        for (kind, _), rule in zip(rules, found["api"].pop("rules"), strict=True):
            rules_fired[kind] += rule.get("fired", 0)
        summary = {
            "ok": all(c["ok"] for c in found["checks"].values()),
            "sizes": {"runs": args.runs, "kills": args.kills, "restarts": args.restarts, "fault_rate": args.fault_rate,
                      "seed": args.seed, "interval_seconds": args.interval, "run_timeout_seconds": args.run_timeout},
            "wall_seconds": round(time.monotonic() - started, 1),
            "chaos_phase_seconds": round(chaos_seconds, 1),
            "runs": {
                "by_kind": dict(Counter(r.kind for r in plan)),
                "by_mode": dict(Counter(r.mode for r in plan)),
                "shared_threads": n_threads,
                "shared_conversations": n_conversations,
                "rounds": sum(len(r.rounds) for r in plan),
                "outcomes": dict(outcomes),
                "seconds_p50": round(statistics.median(durations), 1) if durations else None,
                "seconds_p95": round(durations[int(0.95 * (len(durations) - 1))], 1) if durations else None,
                "seconds_max": round(durations[-1], 1) if durations else None,
                "enqueue_retries": sum(max(0, r.enqueue_attempts - 1) for r in plan),
                "bounds_extended": sum(1 for r in plan if r.extensions),
            },
            "chaos": {
                "worker_kills": stack.kills,
                "worker_starts": stack.workers_started,
                "server_restarts": stack.restarts,
                "server_down_seconds": round(stack.server_down_seconds, 1),
                "api_requests": found["api"]["requests"],
                "faults_fired": found["api"]["faults_fired"],
                "fault_rate_measured": round(found["api"]["faults_fired"] / max(1, found["api"]["requests"]), 3),
                "faults_by_kind": dict(rules_fired.most_common()),
                "kills": [{k: v for k, v in kill.items() if k != "time"} for kill in stack.kill_log],
                "restarts": stack.restart_moments,
            },
            "tools": found["tools"],
            "response_chains": found["response_chains"],
            "orphan_threads": (found["api"]["threads_in_emulator"] or 0) - n_threads - sum(
                1 for r in plan if r.kind == "assistants/new-thread" and r.result is not None),
            "activity_retries_by_cause": found["activity_retries_by_cause"],
            "history_events": found["history_events"],
            "checks": found["checks"],
            "evidence": found["evidence"],
            "state_dir": str(tmp) if args.keep else None,
        }
        return summary
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        say("stopping the worker, the emulator and the dev server")
        await asyncio.to_thread(stack.stop_all)
        if args.keep:
            say(f"state kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def report_progress(plan: list[Run], stack: Stack) -> None:
    while True:
        await asyncio.sleep(15)
        enqueued = sum(1 for r in plan if r.enqueued_at is not None)
        ended = sum(1 for r in plan if r.ended_at is not None)
        say(f"{enqueued}/{len(plan)} enqueued, {ended} ended; {stack.kills} kills, {stack.restarts} restarts")


def table(summary: dict[str, Any]) -> str:
    runs, chaos_, tools = summary["runs"], summary["chaos"], summary["tools"]
    lines = [
        f"runs {sum(runs['by_kind'].values())} ({', '.join(f'{k} {v}' for k, v in runs['by_kind'].items())}); "
        f"outcomes {runs['outcomes']}; p50 {runs['seconds_p50']} s, max {runs['seconds_max']} s; "
        f"{runs.get('bounds_extended', 0)} bounds extended while a step was being retried",
        f"chaos: {chaos_['worker_kills']} worker kills, {chaos_['server_restarts']} server restarts, "
        f"{chaos_['faults_fired']} faults in {chaos_['api_requests']} API calls ({chaos_['fault_rate_measured']:.1%})",
        f"tools: {tools['calls']} calls, {tools['executions']} executions, {tools['re_executions']} re-executions "
        f"({tools['executions_cut_by_a_kill']} cut by a kill); response chains: {summary['response_chains']['extra_responses']} extra responses",
        f"wall time {summary['wall_seconds']} s",
        "",
        f"{'check':<34} {'result':<6} bad",
    ]
    for name, c in summary["checks"].items():
        lines.append(f"{name:<34} {'ok' if c['ok'] else 'FAIL':<6} {c['bad']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs to enqueue (default %(default)s)")
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs of the worker (default %(default)s)")
    parser.add_argument("--restarts", type=int, default=3, help="dev server restarts (default %(default)s)")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of API calls that fail (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the plan, the chaos moments and the faults (default %(default)s)")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between two enqueues (default %(default)s)")
    parser.add_argument(
        "--run-timeout", type=float, default=900,
        help="a run still open this long after it started is stuck; a queued run may wait this long per run ahead of it (default %(default)s)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON summary here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory (logs, database)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.kills < 0 or args.restarts < 0 or not 0 <= args.fault_rate < 1 or args.interval < 0:
        parser.error("--runs must be 1 or more, --kills and --restarts 0 or more, --fault-rate in [0, 1), --interval 0 or more")
    return args


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK marks the Assistants API deprecated
    loop = asyncio.new_event_loop()
    task = loop.create_task(main(args))
    # Ctrl-C and SIGTERM cancel the run: its `finally` stops everything it started.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        summary = loop.run_until_complete(task)
    except asyncio.CancelledError:
        say("interrupted; everything it started is stopped")
        return 130
    finally:
        loop.close()
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(table(summary), file=sys.stderr)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK's runtime threads can abort a finalizing interpreter (sdk-python#300).
    os._exit(code)
