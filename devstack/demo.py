"""`make demo`: the whole local stack and one durable run you can watch.

Starts the Temporal dev server (state in .local/temporal.db, UI on port 8233), the emulator
(unless OPENAI_BASE_URL points at a real Assistants-compatible API), and the worker; creates
or updates a demo assistant whose tools come from the registry; enqueues a run that calls
several tools in parallel over two rounds, one of them long-running; prints each tool call
as it starts and finishes, the final answer, and the Temporal UI link to the workflow. The
stack stays up for inspection until Ctrl-C; `--once` exits after the run. `--backend
responses` runs the same pipeline on the Responses API (no assistant: the request carries
the model and instructions, the worker sends its registry's tools).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from urllib.parse import quote
from typing import Iterator

import httpx
from openai import AsyncOpenAI
from temporalio.client import Client

from devstack.temporal import TemporalDevServer, free_port
from durable_assistants.cli import render_progress
from durable_assistants.client import enqueue_run
from emulator.server import EmulatorProcess, die_with_parent, stop_process
from workflows.models import MessageInput, RunRequest

warnings.filterwarnings("ignore", category=DeprecationWarning)

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".local"
ASSISTANT_NAME = "durable-assistants-demo"
QUESTION = "Compare the weather and population of Lisbon and Oslo, convert the temperatures to Fahrenheit, and compile a short report."
# What the emulator's scripted model does for the demo assistant (a real model decides for itself).
DEMO_SCENARIO = {
    "rounds": [
        [
            {"name": "get_weather", "arguments": {"city": "Lisbon"}},
            {"name": "get_weather", "arguments": {"city": "Oslo"}},
            {"name": "city_population", "arguments": {"city": "Lisbon"}},
            {"name": "city_population", "arguments": {"city": "Oslo"}},
        ],
        [
            {"name": "convert_temperature", "arguments": {"value": 24, "to": "fahrenheit"}},
            {"name": "convert_temperature", "arguments": {"value": 7, "to": "fahrenheit"}},
            {"name": "compile_report", "arguments": {"topic": "Lisbon vs Oslo", "sections": 6}},
        ],
    ],
    "reply": "Here is what I found:\n{outputs}",
    "turn_seconds": 0.5,
}


def port_or_free(preferred: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


@contextlib.contextmanager
def worker_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    log = (STATE / "worker.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "worker.py")], cwd=REPO, env=env, stdout=log, stderr=log, preexec_fn=die_with_parent
    )
    try:
        yield process
    finally:
        stop_process(process, timeout=20)
        log.close()


async def prepare_assistant(model: AsyncOpenAI, admin_url: str | None) -> str:
    """Create the demo assistant, or bring an existing one's tools up to date with the registry."""
    import tools.examples  # noqa: F401  (registers the example tools)
    from tools import registry

    schemas = registry.schemas()
    metadata = {}
    if admin_url is not None:
        httpx.put(f"{admin_url}/scenarios/durable-demo", json=DEMO_SCENARIO).raise_for_status()
        metadata["emulator_scenario"] = "durable-demo"
    async for assistant in model.beta.assistants.list(limit=100):
        if assistant.name == ASSISTANT_NAME:
            await model.beta.assistants.update(assistant.id, tools=schemas, metadata=metadata)  # type: ignore[arg-type]
            return assistant.id
    created = await model.beta.assistants.create(
        model="gpt-4o-mini", name=ASSISTANT_NAME, instructions="Use the tools, then answer briefly.", tools=schemas, metadata=metadata  # type: ignore[arg-type]
    )
    return created.id


async def demo_request(backend: str, base_url: str, api_key: str, admin_url: str | None) -> RunRequest:
    """The demo's run: the demo assistant's (Assistants), or the same agent as request fields (Responses)."""
    message = [MessageInput(content=QUESTION)]
    if backend == "assistants":
        model = AsyncOpenAI(base_url=base_url, api_key=api_key)
        try:
            assistant_id = await prepare_assistant(model, admin_url)
        finally:
            await model.close()
        return RunRequest(assistant_id=assistant_id, messages=message, mode="stream")
    metadata = None
    if admin_url is not None:
        httpx.put(f"{admin_url}/scenarios/durable-demo", json=DEMO_SCENARIO).raise_for_status()
        metadata = {"emulator_scenario": "durable-demo"}
    # No tools given: the worker sends its registry's, in the Responses shape.
    return RunRequest(
        backend="responses", model="gpt-4o-mini", instructions="Use the tools, then answer briefly.",
        messages=message, mode="stream", metadata=metadata,
    )


async def run_demo(args: argparse.Namespace) -> int:
    STATE.mkdir(exist_ok=True)
    real_api = os.environ.get("OPENAI_BASE_URL")
    server = TemporalDevServer(
        port=port_or_free(7233), ui=True, ui_port=port_or_free(8233), db_filename=STATE / "temporal.db", log_file=STATE / "temporal.log"
    )
    with contextlib.ExitStack() as stack:
        # Registered first, so it runs last: after every process of the stack has stopped.
        stack.callback(lambda: print("stopped; nothing left running", flush=True))
        print("Temporal dev server … ", end="", flush=True)
        stack.enter_context(server)
        print(f"{server.address}, UI {server.ui_url}")
        if real_api:
            base_url, admin_url = real_api, None
            print(f"model API: {base_url} (OPENAI_BASE_URL)")
        else:
            emulator = stack.enter_context(EmulatorProcess())
            base_url, admin_url = emulator.base_url, emulator.admin_url
            print(f"model API: the emulator at {base_url}")
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_NAMESPACE": "default",
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "sk-local"),
            "DA_LOG_FORMAT": "json",
        }
        worker = stack.enter_context(worker_process(env))
        print(f"worker: pid {worker.pid}, log {STATE / 'worker.log'}")
        if args.stack_only:
            print("\nThe stack is up. In another shell:")
            print(f"  export TEMPORAL_ADDRESS={server.address} OPENAI_BASE_URL={base_url} OPENAI_API_KEY={env['OPENAI_API_KEY']}")
            print("  durable-assistants enqueue --assistant <id> --message 'Hello' --follow")
            print("Ctrl-C stops everything.", flush=True)
            await _until_interrupted()
            return 0

        request = await demo_request(args.backend, base_url, env["OPENAI_API_KEY"], admin_url)
        from temporalio.contrib.pydantic import pydantic_data_converter

        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        handle = await enqueue_run(client, request, request_id=f"demo-{uuid.uuid4().hex[:8]}", summary=f"make demo ({args.backend})")
        workflow_id = handle.workflow_id
        print(f"\n{request.agent_label} ({args.backend} API): {QUESTION}")
        link = f"{server.ui_url}/namespaces/default/workflows/{quote(workflow_id, safe='')}"
        print(f"workflow {workflow_id}: {link}\n")
        await render_progress(handle, clock=True)
        result = await handle.result()
        what = "response" if result.backend == "responses" else "run"
        print(f"\n{what} {result.run_id} ended {result.status} after {result.rounds} tool rounds, {len(result.tool_calls)} tool calls")
        print(f"Inspect it in the Temporal UI: {link}")
        if worker.poll() is not None:
            print(f"the worker exited early (code {worker.returncode}); see {STATE / 'worker.log'}", file=sys.stderr)
            return 1
        if not args.once:
            print("The stack stays up for inspection. Ctrl-C stops everything.", flush=True)
            await _until_interrupted()
        return 0 if result.status == "completed" else 1


async def _until_interrupted() -> None:
    """Wait for Ctrl-C (asyncio cancels the main task on it)."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after the demo run instead of keeping the stack up")
    parser.add_argument("--stack-only", action="store_true", help="start the stack without the demo run")
    parser.add_argument(
        "--backend", choices=["assistants", "responses"], default="assistants", help="the model API the demo run uses (default: assistants)"
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run_demo(args))
    except KeyboardInterrupt:
        return 0  # interrupted while starting: the ExitStack has stopped what had started
    except Exception as exc:  # one line, no traceback
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # See worker.py: skip interpreter finalization after using the Temporal client
    # (https://github.com/temporalio/sdk-python/issues/300).
    os._exit(code)
