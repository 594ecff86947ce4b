#!/usr/bin/env python3
"""Load benchmark for the emulator: how many concurrent runs one emulator process holds,
and how many requests per second it serves.

The project's requirement is "one emulator process holds at least 1,000 concurrent runs and
serves at least 200 requests/s on this 2-core machine". This script measures both figures
and prints them; it asserts nothing about timing (the figures depend on the machine).

What it does
------------
It starts its own emulator (``EmulatorProcess``: ``python -m durable_assistants.emulator --port 0`` on
loopback) and always stops it at the end, also on Ctrl-C, SIGTERM or an error. The load
generator is one asyncio process. At most ``--concurrency`` requests (default 64) are in
flight: each needs one of that many "lanes", and a lane is one keep-alive connection
(``--pool shared``: the lanes share one pool of that many connections).
Before measuring, a warm-up sends every kind of request on every lane (the emulator builds
its validators on first use) and the emulator is reset.

The generator shares the 2 cores with the emulator, so it has to be lean. ``--client``
chooses how requests are made:

- ``aiohttp`` (default): JSON over ``aiohttp``, whose HTTP/1.1 parser is C code, one
  keep-alive connection per lane; about 0.19 ms of generator CPU a request (the emulator
  spends about 0.25 ms), so the emulator is the bottleneck (it uses its whole core in phase 2).
- ``raw``: the same JSON over ``httpx2`` (the SDK's HTTP client); about 1.4 ms a request.
- ``sdk``: ``AsyncOpenAI(max_retries=0)`` over ``httpx2``; about 2.4 ms a request (the SDK
  builds request options and pydantic models for each call).

With ``raw`` or ``sdk`` the generator saturates its core at a quarter to a third of what the
emulator serves with ``aiohttp``. ``--pool shared`` makes them use one ``httpx2.AsyncClient``
whose pool holds all the connections instead of one client per lane; that costs more still,
about 3.3 ms a request with the SDK (httpcore walks the whole pool, probing idle sockets, on
every request and response). (Until 2026-12-06 the default was an HTTP/1.1 client written by
hand on asyncio streams: 0.11 ms a request, and the same figures within the noise, 3,813
against aiohttp's 3,955 requests/s in phase 2 on the 2-core machine; aiohttp replaced it.)

Phase 1, "concurrency": ``--runs`` runs (default 1000), each on its own thread
(``threads.create_and_run``), each scripted to make 2 rounds of 2 parallel tool calls and
then reply; every model turn takes ``--turn-seconds`` (default 2 s, so a run lives at least
6 s, longer than creating 1000 runs takes: 2-5 s here, as the first runs' polls share the
emulator with the remaining creates; with 1 s turns the first runs ended before the last
were created and the peak stayed just under 1000). All runs are driven to completion at
once: poll with ``runs.retrieve`` every ``--poll-interval`` seconds (default 0.5 s), submit
tool outputs when a run requires action. Meanwhile a sampler reads ``/_emulator/health``
(every 0.25 s), ``/_emulator/stats`` (every ~1 s) and the emulator's ``/proc`` entries.

Phase 2, "throughput": the emulator is reset and ``--runs`` runs are parked in
``requires_action`` (a script with one round and ``turn_seconds: 0``; a parked run waits for
tool outputs until it would expire after 600 s). Then ``--concurrency`` workers, each with
one request in flight, alternate ``runs.retrieve`` and ``messages.list`` over the parked
runs for ``--seconds`` seconds.

How to read the report
----------------------
- *peak active runs*: the most runs that were non-terminal at the same time. "client" counts
  runs from a create response to the retrieve that saw them terminal (it lags the emulator a
  little, so it can only overstate by the runs finishing within one poll interval);
  "emulator" is the emulator's own count, sampled from ``/_emulator/stats`` as runs created
  minus runs ended. The emulator's figure is the one the requirement is about.
- *requests/s* in phase 1 is limited by the poll interval as much as by the server (the
  demand is about ``runs / poll-interval`` requests/s); phase 2's figure is the capacity.
- *latency* is the time from sending a request to having its parsed response, measured once
  a lane is free (so waiting for a lane is not counted; waiting in the emulator's queue is).
  With every lane busy, latency is about ``concurrency / requests-per-second`` (Little's
  law): it shows queueing, not the cost of one request. Percentiles are nearest-rank.
- *CPU* is shown in seconds and as a share of one core (100% = one core busy for the whole
  phase). The emulator is one single-threaded process: near 100% means the emulator is the
  bottleneck; the generator near 100% means the figures are bounded by the load generator.
  Neither near 100% means too few requests in flight to keep both busy (requests and
  responses go back and forth in batches, each side waiting for the other part of the
  time), or that something else on the machine took CPU: raise ``--concurrency``, or run
  on a quiet machine. The sampler costs the emulator a little: a ``/stats`` read renders
  every run and thread, 30-70 ms with 1000 of each, during which the emulator serves
  nothing else (it shows in the phase-1 p99 latencies).
- *RSS* is the emulator's resident memory (``VmRSS``; ``VmHWM`` is its high-water mark).

Usage::

    .venv/bin/python bench/emulator_load.py            # 1000 runs, 10 s of throughput
    .venv/bin/python bench/emulator_load.py --quick    # 100 runs, 3 s: a smoke check
    .venv/bin/python bench/emulator_load.py --json     # the report, then the figures as JSON

Exit status: 0 when the benchmark ran (whatever the figures), 1 when the emulator did not
start or the benchmark could not run, 130 when interrupted.

Why one module of about 1100 lines: measurement bench. One load test of the emulator with
its own lean HTTP/1.1 load generator and /proc sampler (a generator built on the SDK
saturates first, see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import signal
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx2  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from bench.proc import ProcReading, read_proc  # noqa: E402
from durable_assistants.emulator.server import EmulatorProcess  # noqa: E402

# The SDK marks every Assistants method deprecated; this project exists to keep that API alive.
warnings.filterwarnings("ignore", message="The Assistants API is deprecated", category=DeprecationWarning)
warnings.filterwarnings("ignore", message="deprecated", category=DeprecationWarning)

T = TypeVar("T")

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
API_KEY = "sk-bench"
# Requirement figures, shown next to the measured ones (informational, not an exit status).
REQUIRED_CONCURRENT_RUNS = 1000
REQUIRED_REQUESTS_PER_SECOND = 200.0


def function_tool(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name} tool.",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


TOOLS = [
    function_tool("add", {"a": {"type": "integer"}, "b": {"type": "integer"}}),
    function_tool("get_weather", {"city": {"type": "string"}}),
]
PARALLEL_CALLS = [
    {"name": "add", "arguments": {"a": 1, "b": 2}},
    {"name": "get_weather", "arguments": {"city": "Paris"}},
]


def script_message(**script: Any) -> str:
    """A user message that scripts the emulator's model (see ``emulator/script.py``)."""
    return "Benchmark run.\n@emulator " + json.dumps(script, separators=(",", ":"))


# Phase 1: two rounds of two parallel calls, then a reply; turns take the server's --turn-seconds.
CONCURRENCY_SCRIPT = script_message(rounds=[PARALLEL_CALLS, PARALLEL_CALLS], reply="done: {outputs}")
# Phase 2 and warm-up: one round at once, then the run waits in requires_action.
PARKED_SCRIPT = script_message(rounds=[PARALLEL_CALLS], reply="done", turn_seconds=0)


@dataclass
class CpuWindow:
    """CPU time of the emulator and of this process over a stretch of wall time."""

    pid: int
    wall_start: float = 0.0
    emulator_start: float = 0.0
    generator_start: float = 0.0
    wall: float = 0.0
    emulator_cpu: float = 0.0
    generator_cpu: float = 0.0

    def start(self) -> CpuWindow:
        self.wall_start = time.perf_counter()
        self.emulator_start = read_proc(self.pid).cpu_seconds
        self.generator_start = time.process_time()
        return self

    def stop(self) -> CpuWindow:
        self.wall = time.perf_counter() - self.wall_start
        self.emulator_cpu = read_proc(self.pid).cpu_seconds - self.emulator_start
        self.generator_cpu = time.process_time() - self.generator_start
        return self

    def figures(self) -> dict[str, float]:
        wall = max(self.wall, 1e-9)
        return {
            "wall_seconds": round(self.wall, 3),
            "emulator_cpu_seconds": round(self.emulator_cpu, 2),
            "emulator_cpu_share": round(self.emulator_cpu / wall, 3),
            "generator_cpu_seconds": round(self.generator_cpu, 2),
            "generator_cpu_share": round(self.generator_cpu / wall, 3),
        }


# ---------------------------------------------------------------------------- latency bookkeeping


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (``statistics.quantiles``, inclusive method:
    interpolated between the nearest ranks); NaN for no value."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


@dataclass
class OperationStats:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        ms = lambda v: _round(v * 1000, 2)  # noqa: E731
        return {
            "count": len(ordered),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "p50_ms": ms(percentile(ordered, 0.50)),
            "p95_ms": ms(percentile(ordered, 0.95)),
            "p99_ms": ms(percentile(ordered, 0.99)),
            "max_ms": ms(ordered[-1] if ordered else float("nan")),
        }


class Lanes:
    """A strictly first-come-first-served pool of lanes: the bound on requests in flight.

    ``asyncio.Queue`` and ``asyncio.Semaphore`` let a newcomer take a lane that was just
    released for a task already waiting, which then queues again at the back: with 1000
    creates waiting behind 64 lanes, polls of the first runs kept overtaking them and
    creating all the runs took several times longer. Here a released lane goes straight to
    the oldest waiter, so the creates queued first are served first.
    """

    def __init__(self, lanes: Sequence[AssistantsClient]) -> None:
        self.count = len(lanes)
        self.free: collections.deque[AssistantsClient] = collections.deque(lanes)
        self.waiters: collections.deque[asyncio.Future[AssistantsClient]] = collections.deque()

    async def acquire(self) -> AssistantsClient:
        if self.free and not self.waiters:
            return self.free.popleft()
        waiter: asyncio.Future[AssistantsClient] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed a lane, then cancelled: pass it on
            raise

    def release(self, lane: AssistantsClient) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():  # skip waiters that were cancelled
                waiter.set_result(lane)
                return
        self.free.append(lane)


class Recorder:
    """Times API calls, each on a lane of its own, so at most ``len(lanes)`` are in flight.

    With one shared connection pool every lane is the same client; with per-lane pools each
    lane is a client with one connection of its own (see ``make_lanes``).
    """

    def __init__(self, lanes: Sequence[AssistantsClient]) -> None:
        self.lanes = Lanes(lanes)
        self.ops: dict[str, OperationStats] = {}

    def reset(self) -> None:
        self.ops = {}

    @property
    def requests(self) -> int:
        return sum(len(s.latencies) + sum(s.errors.values()) for s in self.ops.values())

    @property
    def errors(self) -> int:
        return sum(sum(s.errors.values()) for s in self.ops.values())

    async def call(self, operation: str, request: Callable[[AssistantsClient], Awaitable[T]]) -> T:
        stats = self.ops.setdefault(operation, OperationStats())
        lane = await self.lanes.acquire()
        started = time.perf_counter()
        try:
            result = await request(lane)
        except Exception as exc:
            stats.errors[_error_kind(exc)] += 1
            raise
        finally:
            self.lanes.release(lane)
        stats.latencies.append(time.perf_counter() - started)
        return result


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or value != value else round(value, digits)


def _error_kind(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return f"{type(exc).__name__} {status}" if status else type(exc).__name__


# ---------------------------------------------------------------------------- API clients


@dataclass(frozen=True)
class RunView:
    """What the benchmark needs of a run object."""

    id: str
    thread_id: str
    status: str
    call_ids: tuple[str, ...] = ()


class AssistantsClient(Protocol):
    async def create_assistant(self) -> str: ...
    async def create_and_run(self, assistant_id: str, content: str) -> RunView: ...
    async def retrieve_run(self, thread_id: str, run_id: str) -> RunView: ...
    async def submit_outputs(self, thread_id: str, run_id: str, call_ids: Sequence[str]) -> RunView: ...
    async def list_messages(self, thread_id: str) -> int: ...
    async def aclose(self) -> None: ...


def connection_pool(concurrency: int, **kwargs: Any) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=30)
    return httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(60.0), trust_env=False, **kwargs)


def _outputs(call_ids: Sequence[str]) -> list[dict[str, str]]:
    return [{"tool_call_id": call_id, "output": "42"} for call_id in call_ids]


class SdkClient:
    """The ``openai`` SDK (``AsyncOpenAI``, no retries) over one shared ``httpx2`` pool."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        self.http = connection_pool(concurrency)
        self.sdk = AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, http_client=self.http)

    @staticmethod
    def _view(run: Any) -> RunView:
        action = run.required_action
        calls = tuple(c.id for c in action.submit_tool_outputs.tool_calls) if action is not None else ()
        return RunView(run.id, run.thread_id, run.status, calls)

    async def create_assistant(self) -> str:
        tools: Any = TOOLS
        assistant = await self.sdk.beta.assistants.create(model="gpt-4o", name="bench", tools=tools)
        return assistant.id

    async def create_and_run(self, assistant_id: str, content: str) -> RunView:
        run = await self.sdk.beta.threads.create_and_run(
            assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": content}]}
        )
        return self._view(run)

    async def retrieve_run(self, thread_id: str, run_id: str) -> RunView:
        return self._view(await self.sdk.beta.threads.runs.retrieve(run_id, thread_id=thread_id))

    async def submit_outputs(self, thread_id: str, run_id: str, call_ids: Sequence[str]) -> RunView:
        run = await self.sdk.beta.threads.runs.submit_tool_outputs(
            run_id, thread_id=thread_id, tool_outputs=_outputs(call_ids)  # type: ignore[arg-type]
        )
        return self._view(run)

    async def list_messages(self, thread_id: str) -> int:
        page = await self.sdk.beta.threads.messages.list(thread_id)
        return len(page.data)

    async def aclose(self) -> None:
        await self.sdk.close()
        await self.http.aclose()


class JsonClient:
    """The benchmark's calls as plain JSON requests; subclasses say how a request is sent."""

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _view(body: dict[str, Any]) -> RunView:
        action = body.get("required_action")
        calls = tuple(c["id"] for c in action["submit_tool_outputs"]["tool_calls"]) if action else ()
        return RunView(body["id"], body["thread_id"], body["status"], calls)

    async def create_assistant(self) -> str:
        body = await self._json("POST", "assistants", {"model": "gpt-4o", "name": "bench", "tools": TOOLS})
        return str(body["id"])

    async def create_and_run(self, assistant_id: str, content: str) -> RunView:
        thread = {"messages": [{"role": "user", "content": content}]}
        return self._view(await self._json("POST", "threads/runs", {"assistant_id": assistant_id, "thread": thread}))

    async def retrieve_run(self, thread_id: str, run_id: str) -> RunView:
        return self._view(await self._json("GET", f"threads/{thread_id}/runs/{run_id}"))

    async def submit_outputs(self, thread_id: str, run_id: str, call_ids: Sequence[str]) -> RunView:
        path = f"threads/{thread_id}/runs/{run_id}/submit_tool_outputs"
        return self._view(await self._json("POST", path, {"tool_outputs": _outputs(call_ids)}))

    async def list_messages(self, thread_id: str) -> int:
        return len((await self._json("GET", f"threads/{thread_id}/messages"))["data"])


class RawClient(JsonClient):
    """Plain JSON over the same kind of ``httpx2`` pool: no SDK models."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "OpenAI-Beta": "assistants=v2"}
        self.http = connection_pool(concurrency, base_url=base_url.rstrip("/") + "/", headers=headers)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.request(method, path, json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def aclose(self) -> None:
        await self.http.aclose()


class HttpError(Exception):
    """An HTTP error status, or a broken connection, seen by the aiohttp client."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AiohttpClient(JsonClient):
    """JSON over ``aiohttp`` (a C-accelerated HTTP/1.1 parser), one keep-alive connection per
    lane; the session is made on first use, inside the event loop."""

    TIMEOUT = 60.0

    def __init__(self, base_url: str, concurrency: int = 1) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.concurrency = concurrency
        self.session: aiohttp.ClientSession | None = None

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                headers={"Authorization": f"Bearer {API_KEY}", "OpenAI-Beta": "assistants=v2"},
                timeout=aiohttp.ClientTimeout(total=self.TIMEOUT),
            )
        try:
            async with self.session.request(method, self.base + path, json=body) as response:
                if response.status >= 400:
                    raise HttpError(f"{method} {path}: HTTP {response.status}: {(await response.read())[:200]!r}", response.status)
                result: dict[str, Any] = await response.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        return result

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


CLIENTS: dict[str, Callable[[str, int], AssistantsClient]] = {"sdk": SdkClient, "raw": RawClient, "aiohttp": AiohttpClient}
POOLS = ("lanes", "shared")


def make_lanes(client: str, pool: str, base_url: str, concurrency: int) -> list[AssistantsClient]:
    """``concurrency`` lanes: one client with a pool of that many connections, shared by
    every lane ("shared"), or one client with one connection per lane ("lanes").

    Why "lanes" is the default: httpcore's pool walks every pooled connection on each
    request and response, probing each idle one's socket; with 64 connections that walk
    cost the generator about as much CPU as the rest of the request. (The aiohttp client has
    one connection per client, so it only comes as lanes.)
    """
    make = CLIENTS[client]
    if pool == "shared":
        return [make(base_url, concurrency)] * concurrency
    return [make(base_url, 1) for _ in range(concurrency)]


async def close_lanes(lanes: Sequence[AssistantsClient]) -> None:
    for client in {id(lane): lane for lane in lanes}.values():
        await client.aclose()


# ---------------------------------------------------------------------------- admin API


class Admin:
    """The emulator's admin API and its process, read outside the request budget."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        assert emulator.process is not None
        self.pid = emulator.process.pid
        self.http = httpx2.AsyncClient(base_url=emulator.admin_url + "/", timeout=httpx2.Timeout(60.0), trust_env=False)
        self.requests = 0

    async def get(self, path: str) -> dict[str, Any]:
        self.requests += 1
        response = await self.http.get(path)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def reset(self) -> None:
        self.requests += 1
        (await self.http.post("reset")).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        return await self.get("stats")

    async def health(self) -> dict[str, Any]:
        return await self.get("health")

    def proc(self) -> ProcReading:
        return read_proc(self.pid)

    async def aclose(self) -> None:
        await self.http.aclose()


def active_runs_of(stats: dict[str, Any]) -> int:
    """Runs created minus runs ended, from a ``/_emulator/stats`` snapshot."""
    totals: dict[str, int] = stats.get("totals", {})
    ended = sum(n for key, n in totals.items() if key.startswith("ended_"))
    return totals.get("runs_created", 0) - ended


def api_requests_of(stats: dict[str, Any]) -> int:
    return sum(stats.get("requests", {}).values())


# ---------------------------------------------------------------------------- phase 1: concurrency


@dataclass
class ActiveRuns:
    """Client-side bookkeeping of which runs are non-terminal."""

    origin: float = field(default_factory=time.perf_counter)
    active: set[str] = field(default_factory=set)
    peak: int = 0
    created: int = 0
    last_created_at: float | None = None  # seconds after ``origin``
    first_ended_at: float | None = None

    def started(self, run_id: str) -> None:
        self.active.add(run_id)
        self.created += 1
        self.last_created_at = time.perf_counter() - self.origin
        self.peak = max(self.peak, len(self.active))

    def ended(self, run_id: str) -> None:
        self.active.discard(run_id)
        if self.first_ended_at is None:
            self.first_ended_at = time.perf_counter() - self.origin


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the phase started
    client_active: int
    emulator_active: int | None  # from /stats, on the ticks that read it
    runs_held: int  # /health: runs in the emulator's memory (terminal ones included)
    rss_kib: int


@dataclass
class Sampler:
    admin: Admin
    runs: ActiveRuns
    interval: float
    stats_every: int
    samples: list[Sample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    stats_latencies: list[float] = field(default_factory=list)

    async def run(self, started: float, stop: asyncio.Event) -> None:
        for tick in itertools.count():
            await self.take(started, with_stats=tick % self.stats_every == 0)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
                return
            except TimeoutError:
                pass

    async def take(self, started: float, *, with_stats: bool) -> None:
        try:
            health = await self.admin.health()
            emulator_active = None
            if with_stats:
                asked = time.perf_counter()
                emulator_active = active_runs_of(await self.admin.stats())
                self.stats_latencies.append(time.perf_counter() - asked)
        except Exception as exc:  # a slow sample must not end the benchmark
            self.errors[_error_kind(exc)] += 1
            return
        self.samples.append(
            Sample(
                at=time.perf_counter() - started,
                client_active=len(self.runs.active),
                emulator_active=emulator_active,
                runs_held=int(health.get("runs", 0)),
                rss_kib=self.admin.proc().rss_kib,
            )
        )


@dataclass
class Settings:
    runs: int
    concurrency: int
    seconds: float
    turn_seconds: float
    poll_interval: float
    phase1_timeout: float
    sample_interval: float
    client: str
    pool: str


async def drive_run(
    recorder: Recorder,
    tracker: ActiveRuns,
    assistant_id: str,
    poll_interval: float,
    deadline: float,
) -> str:
    """Create one run and drive it to a terminal status; return how it ended."""
    try:
        run = await recorder.call("create_and_run", lambda c: c.create_and_run(assistant_id, CONCURRENCY_SCRIPT))
    except Exception:
        return "create_error"
    tracker.started(run.id)
    failures = 0
    must_poll = False
    try:
        while run.status not in TERMINAL:
            if time.monotonic() > deadline:
                return "unfinished"
            try:
                if run.status == "requires_action" and not must_poll:
                    thread_id, run_id, calls = run.thread_id, run.id, run.call_ids
                    run = await recorder.call("submit", lambda c, thread_id=thread_id, run_id=run_id, calls=calls: c.submit_outputs(thread_id, run_id, calls))
                else:
                    await asyncio.sleep(poll_interval)
                    thread_id, run_id = run.thread_id, run.id
                    run = await recorder.call("retrieve", lambda c, thread_id=thread_id, run_id=run_id: c.retrieve_run(thread_id, run_id))
                failures, must_poll = 0, False
            except Exception:
                failures += 1
                must_poll = True  # after a failed call, look at the run before acting again
                if failures >= 5:
                    return "client_error"
        return run.status
    finally:
        tracker.ended(run.id)


async def phase_concurrency(settings: Settings, recorder: Recorder, admin: Admin) -> dict[str, Any]:
    recorder.reset()
    assistant_id = await recorder.call("assistants.create", lambda c: c.create_assistant())
    recorder.reset()
    stats_before = await admin.stats()
    window = CpuWindow(admin.pid).start()
    tracker = ActiveRuns(origin=window.wall_start)
    # /stats renders every run and thread, so it costs the emulator more than /health: read it every ~1 s.
    sampler = Sampler(admin, tracker, settings.sample_interval, max(1, round(1.0 / settings.sample_interval)))
    stop = asyncio.Event()
    deadline = time.monotonic() + settings.phase1_timeout
    sampling = asyncio.create_task(sampler.run(window.wall_start, stop))
    try:
        outcomes = await asyncio.gather(
            *(
                drive_run(recorder, tracker, assistant_id, settings.poll_interval, deadline)
                for _ in range(settings.runs)
            )
        )
    finally:
        window.stop()
        stop.set()
        await sampling
    await sampler.take(window.wall_start, with_stats=True)
    end = admin.proc()
    stats_after = await admin.stats()

    samples = sampler.samples
    peak_sample = max(samples, key=lambda s: s.client_active, default=None)
    emulator_peaks = [s.emulator_active for s in samples if s.emulator_active is not None]
    ended = Counter(outcomes)
    requests = recorder.requests
    return {
        "runs": settings.runs,
        "outcomes": dict(ended),
        "completed": ended.get("completed", 0),
        "failed": ended.get("failed", 0),
        "expired": ended.get("expired", 0),
        "other": settings.runs - sum(ended.get(k, 0) for k in ("completed", "failed", "expired")),
        "peak_active_client": tracker.peak,
        "peak_active_emulator_sampled": max(emulator_peaks, default=0),
        "runs_held_at_end": samples[-1].runs_held if samples else None,
        # When the last create response arrived and the client first saw a run end: if
        # creating every run takes longer than a run lives, the peak stays below --runs.
        "last_created_at_seconds": _round(tracker.last_created_at, 2),
        "first_ended_at_seconds": _round(tracker.first_ended_at, 2),
        "requests": requests,
        "request_errors": recorder.errors,
        "emulator_counted_requests": api_requests_of(stats_after) - api_requests_of(stats_before),
        "requests_per_second": round(requests / max(window.wall, 1e-9), 1),
        **window.figures(),
        "rss_mib_at_peak": round(peak_sample.rss_kib / 1024, 1) if peak_sample else None,
        "rss_mib_max_sampled": round(max((s.rss_kib for s in samples), default=0) / 1024, 1),
        "rss_mib_at_end": round(end.rss_kib / 1024, 1),
        "rss_mib_high_water": round(end.hwm_kib / 1024, 1),
        "emulator_cpu_seconds_total": round(end.cpu_seconds, 2),
        "samples": len(samples),
        "stats_sample_ms_p50": _round(percentile(sorted(sampler.stats_latencies), 0.5) * 1000, 1),
        "stats_sample_ms_max": _round(max(sampler.stats_latencies, default=float("nan")) * 1000, 1),
        "sampler_errors": dict(sampler.errors),
        "operations": {op: s.figures() for op, s in recorder.ops.items()},
    }


# ---------------------------------------------------------------------------- phase 2: throughput


async def park_runs(recorder: Recorder, assistant_id: str, count: int) -> list[RunView]:
    """Create ``count`` runs and wait until each is parked in ``requires_action``."""

    async def park() -> RunView:
        run = await recorder.call("create_and_run", lambda c: c.create_and_run(assistant_id, PARKED_SCRIPT))
        for _ in range(200):
            if run.status == "requires_action":
                return run
            if run.status in TERMINAL:
                raise RuntimeError(f"run {run.id} ended {run.status} before it was parked")
            await asyncio.sleep(0.05)
            thread_id, run_id = run.thread_id, run.id
            run = await recorder.call("retrieve", lambda c, thread_id=thread_id, run_id=run_id: c.retrieve_run(thread_id, run_id))
        raise RuntimeError(f"run {run.id} did not reach requires_action (status {run.status})")

    return list(await asyncio.gather(*(park() for _ in range(count))))


async def phase_throughput(settings: Settings, recorder: Recorder, admin: Admin) -> dict[str, Any]:
    await admin.reset()
    assistant_id = await recorder.call("assistants.create", lambda c: c.create_assistant())
    setup_started = time.perf_counter()
    parked = await park_runs(recorder, assistant_id, settings.runs)
    setup_seconds = time.perf_counter() - setup_started
    stats_before = await admin.stats()
    active_before = active_runs_of(stats_before)
    recorder.reset()

    unexpected: Counter[str] = Counter()
    deadline = time.perf_counter() + settings.seconds

    async def worker(offset: int) -> None:
        # Workers walk the parked runs from different offsets, alternating the two operations.
        for i in itertools.count(offset):
            if time.perf_counter() >= deadline:
                return
            run = parked[i % len(parked)]
            try:
                if i % 2 == 0:
                    seen = await recorder.call("retrieve", lambda c, run=run: c.retrieve_run(run.thread_id, run.id))
                    if seen.status != "requires_action":
                        unexpected[f"run status {seen.status}"] += 1
                else:
                    listed = await recorder.call("messages.list", lambda c, run=run: c.list_messages(run.thread_id))
                    if listed != 1:
                        unexpected[f"{listed} messages listed"] += 1
            except Exception:
                await asyncio.sleep(0.01)  # counted by the recorder; don't spin on a broken connection

    stride = max(1, len(parked) // settings.concurrency)
    window = CpuWindow(admin.pid).start()
    await asyncio.gather(*(worker(w * stride) for w in range(settings.concurrency)))
    window.stop()
    end = admin.proc()
    stats_after = await admin.stats()
    active_after = active_runs_of(stats_after)
    requests = recorder.requests
    return {
        "parked_runs": len(parked),
        "park_seconds": round(setup_seconds, 2),
        "emulator_active_runs_before": active_before,
        "emulator_active_runs_after": active_after,
        "requests": requests,
        "request_errors": recorder.errors,
        "emulator_counted_requests": api_requests_of(stats_after) - api_requests_of(stats_before),
        "unexpected_responses": dict(unexpected),
        "requests_per_second": round(requests / max(window.wall, 1e-9), 1),
        **window.figures(),
        "rss_mib_at_end": round(end.rss_kib / 1024, 1),
        "rss_mib_high_water": round(end.hwm_kib / 1024, 1),
        "operations": {op: s.figures() for op, s in recorder.ops.items()},
    }


# ---------------------------------------------------------------------------- the benchmark


async def warm_up(recorder: Recorder, admin: Admin) -> None:
    """Runs through every endpoint on every lane (the emulator builds validators on first
    use; each lane opens its connection), then reset the emulator."""
    assistant_id = await recorder.call("assistants.create", lambda c: c.create_assistant())
    parked = await park_runs(recorder, assistant_id, recorder.lanes.count)
    for run in parked:
        await recorder.call("submit", lambda c, run=run: c.submit_outputs(run.thread_id, run.id, run.call_ids))
    await asyncio.gather(*(recorder.call("messages.list", lambda c, r=r: c.list_messages(r.thread_id)) for r in parked))
    await admin.stats()
    await admin.reset()
    recorder.reset()


async def benchmark(settings: Settings, emulator: EmulatorProcess) -> dict[str, Any]:
    admin = Admin(emulator)
    lanes = make_lanes(settings.client, settings.pool, emulator.base_url, settings.concurrency)
    recorder = Recorder(lanes)
    try:
        await warm_up(recorder, admin)
        concurrency = await phase_concurrency(settings, recorder, admin)
        throughput = await phase_throughput(settings, recorder, admin)
    finally:
        await close_lanes(lanes)
        await admin.aclose()
    return {
        "settings": vars(settings),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "concurrency": concurrency,
        "throughput": throughput,
        "admin_requests": admin.requests,  # /health, /stats and /reset calls: not in the request counts
        "requirement": requirement(settings, concurrency, throughput),
    }


def requirement(settings: Settings, concurrency: dict[str, Any], throughput: dict[str, Any]) -> dict[str, Any]:
    """The measured figures next to the required ones; ``met`` is None when ``--runs`` is
    too small to tell (a smoke check)."""
    runs = concurrency["peak_active_emulator_sampled"]
    rate = throughput["requests_per_second"]
    return {
        "concurrent_runs_required": REQUIRED_CONCURRENT_RUNS,
        "concurrent_runs_measured": runs,
        "requests_per_second_required": REQUIRED_REQUESTS_PER_SECOND,
        "requests_per_second_measured": rate,
        "met": None
        if settings.runs < REQUIRED_CONCURRENT_RUNS
        else runs >= REQUIRED_CONCURRENT_RUNS and rate >= REQUIRED_REQUESTS_PER_SECOND,
    }


# ---------------------------------------------------------------------------- the report


def _pct(share: float) -> str:
    return f"{share * 100:.0f}% of a core"


def _ms(value: float | None) -> str:
    return f"{value:>9.1f}" if value is not None else f"{'-':>9}"


def _operations_table(operations: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"    {'operation':<16}{'count':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for op, f in operations.items():
        lines.append(
            f"    {op:<16}{f['count']:>8}{f['errors']:>8}"
            f"{_ms(f['p50_ms'])}{_ms(f['p95_ms'])}{_ms(f['p99_ms'])}{_ms(f['max_ms'])}"
        )
        if f["error_kinds"]:
            lines.append(f"      errors: {f['error_kinds']}")
    return lines


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    c = result["concurrency"]
    t = result["throughput"]
    r = result["requirement"]
    lines = [
        f"emulator load benchmark: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}, "
        f"client={s['client']}, pool={s['pool']}, concurrency={s['concurrency']} requests in flight",
        "",
        f"Phase 1, concurrency: {s['runs']} runs, one thread each, 2 rounds x 2 parallel tool calls + reply, "
        f"turn {s['turn_seconds']:g} s, poll every {s['poll_interval']:g} s",
        f"  runs                  completed {c['completed']} | failed {c['failed']} | expired {c['expired']} | "
        f"other {c['other']}" + (f" {c['outcomes']}" if c["other"] else ""),
        f"  peak active runs      {c['peak_active_emulator_sampled']} (emulator /stats, sampled ~1/s) | "
        f"{c['peak_active_client']} (client bookkeeping); all created by {c['last_created_at_seconds']} s, "
        f"first ended at {c['first_ended_at_seconds']} s",
        f"  requests              {c['requests']} in {c['wall_seconds']:.1f} s = {c['requests_per_second']:.0f} req/s "
        f"({c['request_errors']} errors; emulator counted {c['emulator_counted_requests']})",
        f"  emulator RSS          {c['rss_mib_at_peak']} MiB at peak | {c['rss_mib_at_end']} MiB at end | "
        f"high-water {c['rss_mib_high_water']} MiB",
        f"  emulator CPU          {c['emulator_cpu_seconds']:.1f} s = {_pct(c['emulator_cpu_share'])} "
        f"(process total {c['emulator_cpu_seconds_total']:.1f} s)",
        f"  generator CPU         {c['generator_cpu_seconds']:.1f} s = {_pct(c['generator_cpu_share'])}",
        *_operations_table(c["operations"]),
        "",
        f"Phase 2, throughput: {t['parked_runs']} runs parked in requires_action "
        f"(parked in {t['park_seconds']:.1f} s; emulator active {t['emulator_active_runs_before']} before, "
        f"{t['emulator_active_runs_after']} after), "
        f"{s['concurrency']} workers x (runs.retrieve | messages.list) for {s['seconds']:g} s",
        f"  requests              {t['requests']} in {t['wall_seconds']:.1f} s = {t['requests_per_second']:.0f} req/s "
        f"({t['request_errors']} errors; emulator counted {t['emulator_counted_requests']}"
        + (f"; unexpected {t['unexpected_responses']}" if t["unexpected_responses"] else "")
        + ")",
        f"  emulator CPU          {t['emulator_cpu_seconds']:.1f} s = {_pct(t['emulator_cpu_share'])}",
        f"  generator CPU         {t['generator_cpu_seconds']:.1f} s = {_pct(t['generator_cpu_share'])}",
        f"  emulator RSS          {t['rss_mib_at_end']} MiB at end | high-water {t['rss_mib_high_water']} MiB",
        *_operations_table(t["operations"]),
        "",
        f"Requirement: >= {r['concurrent_runs_required']} concurrent runs (measured {r['concurrent_runs_measured']}), "
        f">= {r['requests_per_second_required']:.0f} req/s (measured {r['requests_per_second_measured']:.0f}): "
        + {True: "met", False: "NOT met", None: f"not judged (--runs {s['runs']} < 1000)"}[r["met"]],
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure concurrent runs and requests/s of one emulator process (see the module docstring).",
    )
    add = parser.add_argument
    add("--runs", type=positive_int, help="runs in each phase (default 1000; --quick: 100)")
    add("--concurrency", type=positive_int, default=64, help="requests in flight at most (default %(default)s)")
    add("--seconds", type=positive_float, help="length of the throughput phase (default 10; --quick: 3)")
    add("--quick", action="store_true", help="a smoke check: 100 runs, 3 s of throughput")
    add(
        "--client",
        choices=sorted(CLIENTS),
        default="aiohttp",
        help="aiohttp: JSON over aiohttp; raw: JSON over httpx2; sdk: AsyncOpenAI over httpx2 (default %(default)s)",
    )
    add(
        "--pool",
        choices=POOLS,
        default="lanes",
        help="raw/sdk: a connection pool per lane, or one pool shared by all (default %(default)s)",
    )
    add("--turn-seconds", type=float, default=2.0, help="emulator --turn-seconds, for phase 1 (default %(default)s)")
    add("--poll-interval", type=positive_float, default=0.5, help="seconds between polls of a run (default %(default)s)")
    add("--phase1-timeout", type=positive_float, default=300.0, help="stop driving runs after this (default %(default)s s)")
    add("--sample-interval", type=positive_float, default=0.25, help="seconds between samples (default %(default)s)")
    add("--json", action="store_true", help="after the report, print the figures as one JSON object")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        runs=args.runs or (100 if args.quick else 1000),
        concurrency=args.concurrency,
        seconds=args.seconds or (3.0 if args.quick else 10.0),
        turn_seconds=args.turn_seconds,
        poll_interval=args.poll_interval,
        phase1_timeout=args.phase1_timeout,
        sample_interval=args.sample_interval,
        client=args.client,
        pool=args.pool,
    )


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C, through the `finally` in main that stops the emulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.client == "aiohttp" and args.pool == "shared":
        parser.error("--client aiohttp has one connection per lane; --pool shared needs --client sdk or raw")
    settings = settings_from(args)
    # EmulatorProcess runs `python -m durable_assistants.emulator` in the current directory: make the package
    # importable from anywhere (the project is not necessarily pip-installed).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    signal.signal(signal.SIGTERM, _terminate)
    emulator = EmulatorProcess("--turn-seconds", str(settings.turn_seconds), "--seed", "1", "--log-level", "error")
    try:
        try:
            emulator.__enter__()
        except (RuntimeError, OSError) as exc:
            print(f"emulator_load: {exc}", file=sys.stderr)
            return 1
        result = asyncio.run(benchmark(settings, emulator))
    except KeyboardInterrupt:
        print("emulator_load: interrupted; emulator stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"emulator_load: benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        emulator.stop()  # also when interrupted while the emulator was starting
    print(render(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
