"""A user's first hour with the commands, run as real processes: a worker that can't start says
why in one line; a worker stops on SIGTERM even when a tool hangs; `dev` stops on SIGTERM and
refuses to run twice on one state directory; stdout carries only a command's output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle

from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.processes import die_with_parent, stop_process
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult
from durable_assistants.workflows.run import AssistantRunWorkflow
from tests.conftest import script
from tests.test_worker_runs import start

REPO = Path(__file__).parent.parent
CLI = str(Path(sys.executable).parent / "durable-assistants")  # the console script a user runs
GRACE_SECONDS = 2


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# ------------------------------------------------------------------ a worker that can't start


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ("--tools", "no_such_module"), {},
            "worker: cannot import tool module 'no_such_module': no module named 'no_such_module'",
        ),
        (
            (), {"DA_TOOL_MODULES": "durable_assistants.tools.examples,no_such_package.tools"},
            "worker: cannot import tool module 'no_such_package.tools': no module named 'no_such_package'",
        ),
        (
            (), {"DA_LOG_LEVEL": "bogus"},
            "worker: DA_LOG_LEVEL='bogus' is not valid; choose one of: debug, info, warning, error, critical",
        ),
        ((), {"DA_LOG_FORMAT": "xml"}, "worker: DA_LOG_FORMAT='xml' is not valid; choose one of: auto, json, console"),
        ((), {"DA_BACKEND": "chat"}, "worker: DA_BACKEND='chat' is not valid; choose one of: assistants, responses"),
        ((), {"DA_SHUTDOWN_GRACE_SECONDS": "soon"}, "worker: DA_SHUTDOWN_GRACE_SECONDS='soon' is not valid"),
    ],
)
def test_a_worker_that_cannot_start_says_why_in_one_line(args: tuple[str, ...], env: dict[str, str], expected: str) -> None:
    # Nothing is listening at these addresses: each problem must be found before connecting.
    env = {"TEMPORAL_ADDRESS": "127.0.0.1:1", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1", **env}
    done = run_cli("worker", *args, env=env)
    assert done.returncode == 2
    assert one_error_line(done).startswith(expected)
    assert done.stdout == ""


def test_a_flag_wins_over_a_bad_variable() -> None:
    """DA_BACKEND is not even read when --backend is given; the start then fails further on."""
    env = {"DA_BACKEND": "chat", "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    done = run_cli("worker", "--backend", "responses", env=env)
    assert done.returncode == 2 and one_error_line(done).startswith("worker: cannot connect to Temporal (127.0.0.1:1)")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "import socket\nfrom durable_assistants.tools import tool\n\n@tool\ndef peek(conn: socket.socket) -> str:\n    return ''\n",
            "worker: tool module 'user_tools' failed to import: TypeError: tool 'peek': parameter 'conn' has type socket.socket, "
            "which has no JSON schema",
        ),
        (
            "import requests_that_are_not_installed\n",
            "worker: tool module 'user_tools' failed to import: ModuleNotFoundError: No module named 'requests_that_are_not_installed'",
        ),
        ("def broken(:\n", "worker: tool module 'user_tools' failed to import: SyntaxError: "),
    ],
)
def test_a_tool_module_that_fails_is_named_with_its_error(tmp_path: Path, source: str, expected: str) -> None:
    """The module sits in the user's current directory: the console script finds it there."""
    (tmp_path / "user_tools.py").write_text(source)
    env = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}
    done = run_cli("worker", "--tools", "user_tools", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert one_error_line(done).startswith(expected)


def test_a_tool_module_in_the_current_directory_is_found(tmp_path: Path) -> None:
    """Found and loaded: the worker gets as far as connecting (nothing listens there)."""
    (tmp_path / "user_tools.py").write_text("from durable_assistants.tools import tool\n\n@tool\ndef echo(text: str) -> str:\n    return text\n")
    done = run_cli("worker", "--tools", "user_tools", env={"TEMPORAL_ADDRESS": "127.0.0.1:1"}, cwd=tmp_path)
    assert done.returncode == 2 and one_error_line(done).startswith("worker: cannot connect to Temporal")


@pytest.mark.parametrize(
    ("command", "usage"),
    [(["worker"], "usage: durable-assistants worker "), (["emulator"], "usage: durable-assistants emulator ")],
)
def test_help_names_the_command_the_user_typed(command: list[str], usage: str) -> None:
    done = run_cli(*command, "--help")
    assert done.returncode == 0 and done.stdout.startswith(usage), done.stdout


def test_python_worker_py_still_works_and_says_so_in_its_help() -> None:
    done = subprocess.run([sys.executable, "worker.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python worker.py "), done.stdout


# ------------------------------------------------------------------ stdout is the command's output


BIG_REQUEST = {"model": "gpt-4o", "backend": "responses", "messages": [{"content": "x" * 200_000}] * 3}


async def test_json_output_stays_json_when_the_sdk_core_warns(
    temporal_server: TemporalDevServer, temporal_client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A request over 512 KB makes the SDK's Rust core warn about the payload size. The warning
    used to come on stdout, in colour, before the JSON."""
    (tmp_path / "request.json").write_text(json.dumps(BIG_REQUEST))
    env = {"TEMPORAL_ADDRESS": temporal_server.address, "DA_TASK_QUEUE": task_queue}
    # No worker serves the queue: the run is enqueued, never run.
    done = await asyncio.to_thread(run_cli, "enqueue", "--request", f"@{tmp_path / 'request.json'}", "--json", env=env)
    assert done.returncode == 0, done.stderr
    workflow_id = json.loads(done.stdout)["workflow_id"]
    await temporal_client.get_workflow_handle(workflow_id).terminate("test over")
    assert "\x1b[" not in done.stdout


async def test_sdk_core_warnings_reach_python_logging(temporal_server: TemporalDevServer, task_queue: str, monkeypatch: Any) -> None:
    """Where the warning went instead: the `temporalio.core` logger (so stderr). Seen here in
    process, because the core forwards its logs every 10 ms and a command may exit sooner."""
    import logging

    from durable_assistants import worker

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    core_log = logging.getLogger("temporalio.core")
    core_log.addHandler(handler)
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_server.address)
    try:
        client = await worker.connect_temporal()
        request = RunRequest.model_validate(BIG_REQUEST)
        handle = await client.start_workflow(AssistantRunWorkflow.run, request, id=f"run-{uuid.uuid4()}", task_queue=task_queue)
        await handle.terminate("test over")
        deadline = time.monotonic() + 30
        while not any("TMPRL1103" in r.getMessage() for r in records):
            assert time.monotonic() < deadline, [r.getMessage() for r in records]
            await asyncio.sleep(0.05)
    finally:
        core_log.removeHandler(handler)
    warning = next(r for r in records if "TMPRL1103" in r.getMessage())
    assert warning.levelname == "WARNING" and warning.name.startswith("temporalio.core")


def test_a_huge_core_log_line_is_cut() -> None:
    import logging

    from durable_assistants import worker

    record = logging.LogRecord("temporalio.core", logging.WARNING, "(sdk-core)", 0, "y" * 1_000_000, (), None)
    assert worker._shorten(record) is True
    assert len(record.getMessage()) < worker.CORE_LOG_CHARS + 50 and record.getMessage().endswith("[998000 more characters]")


# ------------------------------------------------------------------ a worker stopping with a hung tool


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"


@pytest.fixture
def spawn(temporal_server: TemporalDevServer, emulator: Any, task_queue: str, worker_log: Path) -> Iterator[Any]:
    """Start `durable-assistants worker` serving the example tools and tests/bad_tools.py; the
    tools module is found in the current directory (the repo root). Stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_server.address,
            "OPENAI_BASE_URL": emulator.base_url,
            "OPENAI_API_KEY": "sk-test",
            "DA_TASK_QUEUE": task_queue,
            "DA_LOG_FORMAT": "json",
            **env,
        }
        with worker_log.open("ab") as log:
            process = subprocess.Popen(
                [CLI, "worker", "--tools", "tests.bad_tools,durable_assistants.tools.examples"],
                cwd=REPO, env=full_env, stdout=log, stderr=log, preexec_fn=die_with_parent,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process, timeout=5)


async def wait_for_log(process: subprocess.Popen[bytes], log: Path, event: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not (log.exists() and f'"event": "{event}"' in log.read_text()):
        assert process.poll() is None, f"the worker exited ({process.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {event!r} in the worker log:\n{log.read_text()}"
        await asyncio.sleep(0.1)


async def start_run(client: Client, task_queue: str, tool: str, arguments: dict[str, Any]) -> WorkflowHandle[Any, RunResult]:
    """A Responses run (an inline agent: no assistant needed) whose model calls ``tool`` once."""
    rounds = [[{"name": tool, "arguments": arguments}]]
    request = RunRequest(backend="responses", model="gpt-4o", messages=[MessageInput(content=script(rounds=rounds))])
    return await start(client, task_queue, request)


async def wait_until_running(handle: WorkflowHandle[Any, Any], tool: str, limit: float = 60) -> None:
    """Until Temporal says an attempt of ``tool`` has started on a worker."""
    deadline = time.monotonic() + limit
    while True:
        pending = (await handle.describe()).raw_description.pending_activities
        if any(a.activity_type.name == tool and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for a in pending):
            return
        assert time.monotonic() < deadline, f"{tool} never started: {pending}"
        await asyncio.sleep(0.1)


def leaving_line(log: Path) -> dict[str, Any]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if '"tools_still_running"' in line]
    assert len(lines) == 1, log.read_text()
    return lines[0]


async def wait_exit(process: subprocess.Popen[bytes], limit: float) -> int | None:
    try:
        return await asyncio.to_thread(process.wait, limit)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize(
    ("tool", "code", "message"),
    [
        # A sync tool: its activity is cancelled after the grace period, but its thread runs on.
        ("hang", 0, "worker stopped; leaving tools still running in their threads"),
        # An async tool that swallows its cancellation: the shutdown itself never ends.
        ("deaf", 1, f"worker did not stop within {GRACE_SECONDS + 5} s; leaving"),
    ],
)
async def test_sigterm_stops_a_worker_whose_tool_never_returns(
    spawn: Any, worker_log: Path, temporal_client: Client, task_queue: str, tmp_path: Path, tool: str, code: int, message: str
) -> None:
    worker = spawn(DA_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    await wait_for_log(worker, worker_log, "worker started")
    handle = await start_run(temporal_client, task_queue, tool, {"marker": str(tmp_path / "marker")})
    try:
        await wait_until_running(handle, tool)
        worker.send_signal(signal.SIGTERM)
        exited = await wait_exit(worker, GRACE_SECONDS + 15)
        assert exited == code, worker_log.read_text()
    finally:
        await handle.terminate("test over")
    line = leaving_line(worker_log)
    assert line["event"] == message and line["tools_still_running"] == [tool]
    assert "Traceback" not in worker_log.read_text()


async def test_sigterm_with_nothing_running_is_a_quiet_clean_stop(spawn: Any, worker_log: Path) -> None:
    worker = spawn()
    await wait_for_log(worker, worker_log, "worker started")
    worker.send_signal(signal.SIGTERM)
    assert await wait_exit(worker, 30) == 0, worker_log.read_text()
    assert '"event": "worker stopped"' in worker_log.read_text() and "tools_still_running" not in worker_log.read_text()


# ------------------------------------------------------------------ the local stack


def _children_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except FileNotFoundError:
        return False


async def _read_until(stream: asyncio.StreamReader, marker: str, limit: float = 90) -> str:
    seen = ""
    while marker not in seen:
        line = (await asyncio.wait_for(stream.readline(), limit)).decode()
        assert line, f"the stack exited before {marker!r}:\n{seen}"
        seen += line
    return seen


async def test_a_second_dev_stack_is_refused_and_sigterm_stops_the_first(tmp_path: Path) -> None:
    env = {**os.environ, "DA_STATE_DIR": str(tmp_path / "state")}
    env.pop("OPENAI_BASE_URL", None)  # the stack's own emulator
    first = await asyncio.create_subprocess_exec(
        CLI, "dev", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent
    )
    try:
        assert first.stdout is not None and first.stderr is not None
        shown = await _read_until(first.stdout, "stops everything")
        temporal = shown.split("Temporal dev server … ")[1].split(",")[0]
        children = _children_of(first.pid)
        assert len(children) == 3, shown  # Temporal dev server, emulator, worker

        second = await asyncio.to_thread(run_cli, "dev", env=env, timeout=60)
        assert second.returncode == 1
        line = one_error_line(second)
        assert line.startswith("durable-assistants dev: another local stack is already running")
        assert f"pid {first.pid}" in line and f"Temporal {temporal}" in line, line
        assert all(_alive(pid) for pid in children)  # the first stack never noticed

        first.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(first.stdout.read(), 60)).decode()
        errors = (await asyncio.wait_for(first.stderr.read(), 10)).decode()
        assert await asyncio.wait_for(first.wait(), 10) == 0, errors
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert "stopped; nothing left running" in rest
    assert errors == ""  # no BrokenPipeError (or any other) traceback
    assert not [pid for pid in children if _alive(pid)]
    # The lock went with it: a new stack may start on this state directory.
    import fcntl

    with (tmp_path / "state" / "dev.lock").open("r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
