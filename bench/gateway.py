"""What the HTTP gateway adds to an enqueue: enqueues/s and latency through it vs the Python
client directly, on the same dev server, interleaved.

    .venv/bin/python bench/gateway.py [--runs 300] [--concurrency 16] [--repeats 3] [--json]

It starts a file-backed Temporal dev server and the gateway as its own process
(``durable-assistants gateway``, one token), then enqueues runs (each a new thread, so one
workflow start each) on a task queue no worker polls: only the enqueue is measured. Each
repeat does the direct round and the gateway round in turn (the order flips every repeat).
It prints, per path, enqueues/s and p50/p99 latency (median over repeats), and the gateway's
added p50/p99. Nothing it starts outlives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from durable_assistants import enqueue_run  # noqa: E402
from durable_assistants.devstack.temporal import TemporalDevServer, free_port  # noqa: E402
from durable_assistants.gateway import new_token  # noqa: E402
from durable_assistants.workflows.models import MessageInput, RunRequest  # noqa: E402

TASK_QUEUE = "bench-gateway-unpolled"


def request(n: int) -> RunRequest:
    return RunRequest(assistant_id="asst_bench", messages=[MessageInput(content=f"hello {n}")])


async def measure(label: str, runs: int, concurrency: int, enqueue: Callable[[int], Awaitable[None]]) -> dict[str, Any]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            began = time.perf_counter()
            await enqueue(n)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(runs)))
    wall = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return {"path": label, "enqueues_per_second": runs / wall, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {process.returncode}")
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not answer /healthz within 30 s")
            await asyncio.sleep(0.1)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as scratch, TemporalDevServer(db_filename=Path(scratch) / "temporal.db") as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        text, entry = new_token("bench", ["*"])
        port = free_port("127.0.0.1")
        env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "DA_GATEWAY_TOKENS": json.dumps([entry.model_dump()])}
        command = [sys.executable, "-m", "durable_assistants.cli", "gateway", "--port", str(port), "--task-queue", TASK_QUEUE]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_healthy(url, process)
            limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {text}"}, limits=limits, timeout=60) as http:
                tag = uuid.uuid4().hex[:8]

                async def direct(n: int) -> None:
                    await enqueue_run(client, request(n), request_id=f"direct-{tag}-{n}", task_queue=TASK_QUEUE)

                async def through(n: int) -> None:
                    body = request(n).model_dump(mode="json", exclude_defaults=True)
                    answer = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": f"gw-{tag}-{n}"})
                    if answer.status_code != 202:
                        raise RuntimeError(f"gateway answered {answer.status_code}: {answer.text[:200]}")

                await measure("warm-up", 20, 4, direct)
                await measure("warm-up", 20, 4, through)
                repeats: list[dict[str, Any]] = []
                for repeat in range(args.repeats):
                    tag = f"{uuid.uuid4().hex[:8]}-{repeat}"
                    order = [("direct", direct), ("gateway", through)]
                    for label, enqueue in order if repeat % 2 == 0 else reversed(order):
                        figures = await measure(label, args.runs, args.concurrency, enqueue)
                        repeats.append({**figures, "repeat": repeat})
                        rate, p50, p99 = figures["enqueues_per_second"], figures["p50_ms"], figures["p99_ms"]
                        print(f"repeat {repeat}: {label:<8} {rate:7.1f}/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms", file=sys.stderr)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    summary: dict[str, Any] = {"runs": args.runs, "concurrency": args.concurrency, "repeats": repeats}
    for label in ("direct", "gateway"):
        mine = [r for r in repeats if r["path"] == label]
        summary[label] = {key: statistics.median(r[key] for r in mine) for key in ("enqueues_per_second", "p50_ms", "p99_ms")}
    summary["gateway_adds_p50_ms"] = summary["gateway"]["p50_ms"] - summary["direct"]["p50_ms"]
    summary["gateway_adds_p99_ms"] = summary["gateway"]["p99_ms"] - summary["direct"]["p99_ms"]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="enqueues per path per repeat")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    summary = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.runs} enqueues per path per repeat, {args.concurrency} at once, median of {args.repeats} repeats")
    print(f"{'path':<8} {'enqueues/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for label in ("direct", "gateway"):
        f = summary[label]
        print(f"{label:<8} {f['enqueues_per_second']:>10.1f} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f}")
    print(f"the gateway adds {summary['gateway_adds_p50_ms']:.1f} ms at p50, {summary['gateway_adds_p99_ms']:.1f} ms at p99")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
