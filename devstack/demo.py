"""`make demo`: the whole local stack and one durable run you can watch.

Starts the Temporal dev server (state in .local/temporal.db, UI on port 8233), the emulator
(unless OPENAI_BASE_URL points at a real Assistants-compatible API), and the worker; creates
or updates a demo assistant whose tools come from the registry; enqueues a run that calls
several tools in parallel over two rounds, one of them long-running; prints each tool call
as it starts and finishes, the final answer, and the Temporal UI link to the workflow. The
stack stays up for inspection until Ctrl-C or SIGTERM; `--once` exits after the run.
`--backend responses` runs the same pipeline on the Responses API (no assistant: the request
carries the model and instructions, the worker sends its registry's tools).

With DA_CODEC_KEYS (or DA_CODEC_KEYS_FILE) set, payloads are encrypted (docs/encryption.md):
the stack also starts the codec server on a free loopback port and points the UI at it
(`--ui-codec-endpoint`), so the UI shows decrypted payloads; it stops with the rest.

One stack per state directory (`.local`, or `$DA_STATE_DIR`): a second one refuses to start
and names the running one, since two dev servers on one SQLite file break each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from openai import AsyncOpenAI
from temporalio.client import Client

from durable_assistants.client import enqueue_run
from durable_assistants.codec import CodecConfigError, KeyRing, data_converter, keys_from_env
from durable_assistants.codec_server import TOKEN_VARIABLE, CodecServerProcess
from durable_assistants.devstack.temporal import TemporalDevServer, free_port
from durable_assistants.emulator.server import EmulatorProcess
from durable_assistants.processes import die_with_parent, stop_process
from durable_assistants.render import describe_cost, render_progress
from durable_assistants.workflows.models import MessageInput, RunRequest

warnings.filterwarnings("ignore", category=DeprecationWarning)

ASSISTANT_NAME = "durable-assistants-demo"
QUESTION = "Compare the weather and population of Lisbon and Oslo, convert the temperatures to Fahrenheit, and compile a short report."
# What the emulator's scripted model does for the demo assistant (a real model decides for itself).
DEMO_SCENARIO: dict[str, Any] = {
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
# --approval: the second round also refunds an order, over the amount that needs a person's
# approval (tools/refunds.py); with --once the demo approves it itself after a moment.
APPROVAL_CALL = {"name": "issue_refund", "arguments": {"order_id": "order-1042", "amount": 240}}
APPROVAL_MODULES = "durable_assistants.tools.examples,durable_assistants.tools.refunds"
SELF_APPROVAL_SECONDS = 2.0


def demo_scenario(approval: bool) -> dict[str, Any]:
    if not approval:
        return DEMO_SCENARIO
    rounds = [list(DEMO_SCENARIO["rounds"][0]), [*DEMO_SCENARIO["rounds"][1], APPROVAL_CALL]]
    return {**DEMO_SCENARIO, "rounds": rounds}


def state_dir() -> Path:
    """Where the stack keeps Temporal's SQLite file, the logs and its lock: ``$DA_STATE_DIR``,
    else ``.local`` in the directory it was started from (the checkout, for `make demo`; never
    the installed package's own directory)."""
    return Path(os.environ.get("DA_STATE_DIR") or Path.cwd() / ".local")


class StackRunning(Exception):
    """Another stack holds the state directory; the message names it."""


class StackLock:
    """At most one local stack per state directory.

    Two Temporal dev servers on one SQLite file fail each other (SQLITE_BUSY), so a second
    stack must refuse rather than move to other ports. ``flock`` is released by the kernel
    when the holder exits, however it exits, so a crashed stack never leaves a stale lock.
    The file says who holds it: the pid at once, the addresses once the stack is up.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> StackLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace")
            os.close(fd)
            raise StackRunning(
                f"another local stack is already running ({_describe(holder)}, state in {self.path.parent}); "
                "stop it first, or give this one its own DA_STATE_DIR"
            ) from None
        self.fd = fd
        self.describe()
        return self

    def describe(self, **addresses: str | None) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps({"pid": os.getpid(), **addresses}).encode(), 0)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # kept, not deleted: a waiting opener would lock a removed file
            os.close(self.fd)  # releases the lock
            self.fd = None


def _describe(holder: str) -> str:
    try:
        info: dict[str, Any] = json.loads(holder)
    except ValueError:
        return "its lock file names no process yet"
    parts = [f"pid {info.get('pid')}"]
    if info.get("temporal"):
        parts.append(f"Temporal {info['temporal']}")
        parts += [f"UI {info['ui']}"] if info.get("ui") else []
        parts += [f"model API {info['model_api']}"] if info.get("model_api") else []
    else:
        parts.append("still starting")
    return ", ".join(parts)


def port_or_free(preferred: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


@contextlib.contextmanager
def worker_process(env: dict[str, str], state: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (state / "worker.log").open("ab")
    process = subprocess.Popen(
        # In the caller's directory: the worker imports tool modules from there (DA_TOOL_MODULES).
        [sys.executable, "-m", "durable_assistants.worker"], cwd=Path.cwd(), env=env, stdout=log, stderr=log, preexec_fn=die_with_parent
    )
    try:
        yield process
    finally:
        stop_process(process, timeout=20)  # more than the worker's own limit: grace 10 s + 5 s
        log.close()


async def prepare_assistant(model: AsyncOpenAI, admin_url: str | None, approval: bool = False) -> str:
    """Create the demo assistant, or bring an existing one's tools up to date with the registry."""
    import durable_assistants.tools.examples  # noqa: F401  (registers the example tools)
    from durable_assistants.tools import registry

    if approval:
        import durable_assistants.tools.refunds  # noqa: F401
    schemas = registry.schemas()
    metadata = {}
    if admin_url is not None:
        httpx.put(f"{admin_url}/scenarios/durable-demo", json=demo_scenario(approval)).raise_for_status()
        metadata["emulator_scenario"] = "durable-demo"
    async for assistant in model.beta.assistants.list(limit=100):
        if assistant.name == ASSISTANT_NAME:
            await model.beta.assistants.update(assistant.id, tools=schemas, metadata=metadata)  # type: ignore[arg-type]
            return assistant.id
    created = await model.beta.assistants.create(
        model="gpt-4o-mini", name=ASSISTANT_NAME, instructions="Use the tools, then answer briefly.", tools=schemas, metadata=metadata  # type: ignore[arg-type]
    )
    return created.id


async def demo_request(backend: str, base_url: str, api_key: str, admin_url: str | None, approval: bool = False) -> RunRequest:
    """The demo's run: the demo assistant's (Assistants), or the same agent as request fields (Responses)."""
    message = [MessageInput(content=QUESTION)]
    if backend == "assistants":
        model = AsyncOpenAI(base_url=base_url, api_key=api_key)
        try:
            assistant_id = await prepare_assistant(model, admin_url, approval)
        finally:
            await model.close()
        return RunRequest(assistant_id=assistant_id, messages=message, mode="stream")
    metadata = None
    if admin_url is not None:
        httpx.put(f"{admin_url}/scenarios/durable-demo", json=demo_scenario(approval)).raise_for_status()
        metadata = {"emulator_scenario": "durable-demo"}
    # No tools given: the worker sends its registry's, in the Responses shape.
    return RunRequest(
        backend="responses", model="gpt-4o-mini", instructions="Use the tools, then answer briefly.",
        messages=message, mode="stream", metadata=metadata,
    )


def start_codec_server(stack: contextlib.ExitStack, keys: KeyRing, ui_port: int, state: Path) -> list[str]:
    """The codec server for the UI on ``ui_port``, stopped by ``stack``; the dev server's
    arguments that point its UI at it. It listens on loopback and asks for no token: the UI
    can't send a fixed one (``DA_CODEC_TOKEN`` is for servers others can reach)."""
    origins = [f"http://127.0.0.1:{ui_port}", f"http://localhost:{ui_port}"]
    env = {name: value for name, value in os.environ.items() if name != TOKEN_VARIABLE}
    print("codec server … ", end="", flush=True)
    codec = stack.enter_context(
        CodecServerProcess(*(arg for origin in origins for arg in ("--cors-origin", origin)), env=env, log_file=state / "codec-server.log")
    )
    print(f"{codec.url} (payloads encrypted with key {keys.current_id!r}; the UI decrypts them through it)")
    return ["--ui-codec-endpoint", codec.url]


async def run_demo(args: argparse.Namespace) -> int:
    # SIGTERM (a service manager, `kill`) stops the stack the way Ctrl-C does: cancelling this
    # task unwinds the ExitStack, which stops every process it started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # type: ignore[union-attr]
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    real_api = os.environ.get("OPENAI_BASE_URL")
    keys = keys_from_env()  # bad keys stop the stack before anything starts
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(StackLock(state / "dev.lock"))
        # Registered before the processes, so it runs after every one of them has stopped.
        stack.callback(lambda: print("stopped; nothing left running", flush=True))
        ui_port = port_or_free(8233)
        # Started before the dev server (its UI must know the endpoint), so stopped after it.
        codec_args = start_codec_server(stack, keys, ui_port, state) if keys is not None else []
        server = TemporalDevServer(
            port=port_or_free(7233), ui=True, ui_port=ui_port,
            db_filename=state / "temporal.db", log_file=state / "temporal.log", extra_args=codec_args,
        )
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
        if getattr(args, "approval", False):
            env["DA_TOOL_MODULES"] = APPROVAL_MODULES
        if env.get("DA_CODEC_KEYS_FILE"):  # the worker runs in the repository, maybe not in this directory
            env["DA_CODEC_KEYS_FILE"] = os.path.abspath(env["DA_CODEC_KEYS_FILE"])
        worker = stack.enter_context(worker_process(env, state))
        lock.describe(temporal=server.address, ui=server.ui_url, model_api=base_url)
        print(f"worker: pid {worker.pid}, log {state / 'worker.log'}")
        if args.stack_only:
            await _nexus_endpoint(server.address)
            print("\nThe stack is up. In another shell:")
            print(f"  export TEMPORAL_ADDRESS={server.address} OPENAI_BASE_URL={base_url} OPENAI_API_KEY={env['OPENAI_API_KEY']}")
            if keys is not None:
                print("  export DA_CODEC_KEYS=...   # payloads are encrypted: the same keys as this shell (or its DA_CODEC_KEYS_FILE)")
            print("  durable-assistants enqueue --assistant <id> --message 'Hello' --follow")
            print("Ctrl-C (or SIGTERM) stops everything.", flush=True)
            await _until_interrupted()
            return 0

        request = await demo_request(args.backend, base_url, env["OPENAI_API_KEY"], admin_url, args.approval)
        client = await Client.connect(server.address, data_converter=data_converter())
        handle = await enqueue_run(client, request, request_id=f"demo-{uuid.uuid4().hex[:8]}", summary=f"make demo ({args.backend})")
        workflow_id = handle.workflow_id
        print(f"\n{request.agent_label} ({args.backend} API): {QUESTION}")
        link = f"{server.ui_url}/namespaces/default/workflows/{quote(workflow_id, safe='')}"
        print(f"workflow {workflow_id}: {link}\n")
        if args.approval and not args.once:
            print(f"A refund will wait for your decision: run the approve or reject command it prints in another shell, "
                  f"with TEMPORAL_ADDRESS={server.address}.\n", flush=True)
        decided: list[asyncio.Task[Any]] = []

        async def approve_when_asked(event: Any) -> None:
            # --once has no person to wait for: the demo decides, as `approve` would, and says so.
            if args.once and event.kind == "approval_requested":
                async def approve() -> None:
                    await asyncio.sleep(SELF_APPROVAL_SECONDS)
                    print(f"      (--once: approving call {event.call_id} as demo-operator)", flush=True)
                    await handle.approve(event.call_id, note="approved by make demo --once", by="demo-operator")

                decided.append(asyncio.create_task(approve()))

        await render_progress(handle, clock=True, on_event=approve_when_asked)
        for task in decided:
            await task
        result = await handle.result()
        what = "response" if result.backend == "responses" else "run"
        print(f"\n{what} {result.run_id} ended {result.status} after {result.rounds} tool rounds, {len(result.tool_calls)} tool calls")
        if result.cost is not None:
            print(f"cost: {describe_cost(result.cost)}")
        print(f"Inspect it in the Temporal UI: {link}")
        if worker.poll() is not None:
            print(f"the worker exited early (code {worker.returncode}); see {state / 'worker.log'}", file=sys.stderr)
            return 1
        if not args.once:
            print("The stack stays up for inspection. Ctrl-C (or SIGTERM) stops everything.", flush=True)
            await _until_interrupted()
        return 0 if result.status == "completed" else 1


async def _nexus_endpoint(address: str) -> None:
    """The Nexus endpoint of the local stack, for callers' workflows to try (docs/nexus.md)."""
    from durable_assistants.nexus import DEFAULT_ENDPOINT
    from durable_assistants.operate import SetupError, setup_nexus_endpoint
    from durable_assistants.workflows.models import DEFAULT_TASK_QUEUE

    client = await Client.connect(address)
    try:
        print(f"nexus: {await setup_nexus_endpoint(client, DEFAULT_ENDPOINT, DEFAULT_TASK_QUEUE)}")
    except SetupError as exc:  # the stack serves runs all the same
        print(f"nexus: no endpoint ({exc})")


async def _until_interrupted() -> None:
    """Wait for Ctrl-C or SIGTERM (both cancel the main task)."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def main(argv: list[str] | None = None, prog: str = "durable-assistants dev") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after the demo run instead of keeping the stack up")
    parser.add_argument("--stack-only", action="store_true", help="start the stack without the demo run")
    parser.add_argument(
        "--backend", choices=["assistants", "responses"], default="assistants", help="the model API the demo run uses (default: assistants)"
    )
    parser.add_argument(
        "--approval", action="store_true",
        help="the run also refunds an order over the amount that needs a person's approval (tools/refunds.py): "
        "decide with durable-assistants approve|reject (with --once the demo approves it itself)",
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run_demo(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0  # stopped while starting or mid-run: the ExitStack has stopped what had started
    except StackRunning as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except CodecConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Whoever read our output is gone (`dev | tee`, stopped by the same Ctrl-C). The stack
        # has stopped; don't let the final flush at exit fail again with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # one line, no traceback
        print(f"{prog} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    code = main(prog="make demo")
    sys.stdout.flush()
    sys.stderr.flush()
    # See worker.py: skip interpreter finalization after using the Temporal client
    # (https://github.com/temporalio/sdk-python/issues/300).
    os._exit(code)
