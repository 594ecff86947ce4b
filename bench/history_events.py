"""How many history events a run costs: the demo's shape (two rounds, parallel tools, stream
mode) and a long tool reporting progress every second, each with a follower reading its
progress stream as `durable-assistants enqueue --follow` does.

Starts a Temporal dev server, the emulator and in-process workers, runs each shape once and
prints the run's history: events in all, and by type (signals are progress batches reaching
the run; updates are a follower's polls).

    .venv/bin/python bench/history_events.py                 # the tool reports for 60 s
    .venv/bin/python bench/history_events.py --seconds 600   # the 10-minute tool of issue 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openai import AsyncOpenAI  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

import durable_assistants.tools.examples  # noqa: E402,F401
from durable_assistants import (
    enqueue_run,  # noqa: E402
    worker,  # noqa: E402
)
from durable_assistants.devstack.temporal import TemporalDevServer  # noqa: E402
from durable_assistants.emulator.server import EmulatorProcess  # noqa: E402
from durable_assistants.tools import ToolContext, registry, tool  # noqa: E402
from durable_assistants.workflows.models import MessageInput, RunRequest  # noqa: E402

DEMO_ROUNDS = [
    [{"name": "get_weather", "arguments": {"city": "Lisbon"}}, {"name": "get_weather", "arguments": {"city": "Oslo"}},
     {"name": "city_population", "arguments": {"city": "Lisbon"}}],
    [{"name": "convert_temperature", "arguments": {"value": 24, "to": "fahrenheit"}}],
]


@tool(timeout=timedelta(hours=2))
async def report_every_second(seconds: int, context: ToolContext) -> str:
    """Works for ``seconds`` seconds, reporting its progress once a second."""
    for second in range(1, seconds + 1):
        await asyncio.sleep(1)
        context.heartbeat({"second": second, "of": seconds})
    return f"worked {seconds} s"


def script(rounds: list[list[dict[str, Any]]], reply: str) -> str:
    return "Go.\n@emulator " + json.dumps({"rounds": rounds, "reply": reply, "chars_per_second": 200})


async def measure(client: Client, task_queue: str, name: str, rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    request = RunRequest(
        backend="responses", model="gpt-4o", instructions="Be brief.", mode="stream",
        messages=[MessageInput(content=script(rounds, "Done, in a reply of a few words:\n{outputs}"))],
    )
    started = time.monotonic()
    handle = await enqueue_run(client, request, task_queue=task_queue)
    followed = sum([1 async for _ in handle.progress()])  # a follower from start to end
    result = await handle.result()
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)
    return {
        "shape": name,
        "status": result.status,
        "seconds": round(time.monotonic() - started, 1),
        "events": len(history.events),
        "progress_events_followed": followed,
        "signals": kinds.get("WORKFLOW_EXECUTION_SIGNALED", 0),
        "updates": kinds.get("WORKFLOW_EXECUTION_UPDATE_ACCEPTED", 0),
        "workflow_tasks": kinds.get("WORKFLOW_TASK_COMPLETED", 0),
        "by_type": dict(kinds.most_common()),
    }


async def main(args: argparse.Namespace) -> int:
    worker.configure_logging("console", "warning")
    with TemporalDevServer() as server, EmulatorProcess("--turn-seconds", "0.3") as emulator:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-bench", max_retries=0)
        task_queue = "bench-history"
        async with worker.WorkerGroup(worker.build_workers(client, model, registry, task_queue)):
            results = [
                await measure(client, task_queue, "demo: 2 rounds, 4 tools, stream", DEMO_ROUNDS),
                await measure(client, task_queue, f"a tool reporting every second for {args.seconds} s",
                              [[{"name": "report_every_second", "arguments": {"seconds": args.seconds}}]]),
            ]
        await model.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['shape']}: {r['status']} in {r['seconds']} s; {r['events']} history events "
                  f"({r['signals']} signals, {r['updates']} follower polls, {r['workflow_tasks']} workflow tasks); "
                  f"the follower read {r['progress_events_followed']} progress events")
    return 0 if all(r["status"] == "completed" for r in results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long the reporting tool works (default %(default)s)")
    parser.add_argument("--json", action="store_true")
    code = asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
    os._exit(code)  # the Temporal SDK's runtime threads can abort a finalizing interpreter (sdk-python#300)
