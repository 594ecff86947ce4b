"""The `durable-assistants` command line, run as a real process against the dev server,
the emulator and in-process workers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

import durable_assistants.tools.examples  # noqa: F401
import tests.worker_tools  # noqa: F401
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.tools import registry
from tests.conftest import ADD, script
from tests.test_worker_lifecycle import slow_round
from tests.test_worker_runs import TOOLS

REPO = Path(__file__).parent.parent




@pytest.fixture
def cli(temporal_server: TemporalDevServer, emulator: Any, task_queue: str) -> Any:
    async def run(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> tuple[int, str, str]:
        full_env = {
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_server.address,
            "OPENAI_BASE_URL": emulator.base_url,
            "OPENAI_API_KEY": "sk-test",
            "DA_TASK_QUEUE": task_queue,
            **(env or {}),
        }
        # Not subprocess.run: the in-process workers share this event loop.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "durable_assistants.cli", *args, cwd=REPO, env=full_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    return run


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]


async def test_enqueue_follow_renders_the_run(cli: Any, workers: None, assistant_id: str) -> None:
    rounds = [[{"name": "slow", "arguments": {"seconds": 0.3, "marker": ""}}, {"name": "get_weather", "arguments": {"city": "Quito"}}]]
    message = "Go\n" + script(rounds=rounds, reply="Done: {outputs}")
    code, out, err = await cli("enqueue", "--assistant", assistant_id, "-m", message, "--mode", "stream", "--follow")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("run assistant-run/")
    assert "● requires_action (round 1)" in lines and "● completed after 1 tool round" in lines
    assert any(line.startswith('  → get_weather({"city":"Quito"})') for line in lines)
    assert any(line.startswith("  ✓ slow (") and "attempt 1" in line for line in lines)
    assert any(line.startswith("    … slow: {\"elapsed\"") for line in lines)
    assert "completed: run run_" in out and '- get_weather: {"city": "Quito"' in out


async def test_enqueue_wait_json_is_idempotent_by_request_id(cli: Any, workers: None, assistant_id: str) -> None:
    message = "hi\n" + script(rounds=[[{"name": "get_weather", "arguments": {"city": "Bern"}}]])
    args = ("enqueue", "--assistant", assistant_id, "-m", message, "--request-id", "cli-req-1", "--wait", "--json")
    code, out, err = await cli(*args)
    assert code == 0, err
    first = json.loads(out)
    code, out, _ = await cli(*args)
    assert code == 0 and json.loads(out)["run_id"] == first["run_id"]
    assert first["status"] == "completed" and first["tool_calls"][0]["name"] == "get_weather"


async def test_enqueue_a_responses_run_with_the_same_command(cli: Any, workers: None) -> None:
    message = "hi\n" + script(rounds=[[{"name": "get_weather", "arguments": {"city": "Lima"}}]], reply="Done: {outputs}")
    code, out, err = await cli("enqueue", "--backend", "responses", "--model", "gpt-4o", "-m", message, "--follow")
    assert code == 0, err
    assert "● requires_action (round 1)" in out and '  → get_weather({"city":"Lima"})' in out
    assert "completed: response resp_" in out and "Done: - get_weather" in out


async def test_status_cancel_and_list(cli: Any, workers: None, assistant_id: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    message = script(rounds=slow_round(60, marker))
    code, out, err = await cli("enqueue", "--assistant", assistant_id, "-m", message)
    assert code == 0, err
    workflow_id = out.strip()
    deadline = asyncio.get_running_loop().time() + 30
    while not marker.exists():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)

    code, out, err = await cli("status", workflow_id)
    assert code == 0, err
    assert out.startswith("requires_action, round 1, ") and "  running slow(" in out
    code, out, err = await cli("status", workflow_id, "--json")
    assert json.loads(out)["pending_tool_calls"][0]["name"] == "slow"

    code, out, err = await cli("cancel", workflow_id)
    assert (code, out.strip()) == (0, f"{workflow_id}: cancelled"), err
    code, out, _ = await cli("status", workflow_id)
    assert out.startswith("cancelled: run run_")

    thread_id = json.loads((await cli("status", workflow_id, "--json"))[1])["thread_id"]
    for _ in range(50):
        code, out, err = await cli("list", "--thread", thread_id, "--json")
        rows = json.loads(out) if code == 0 else []
        if rows and rows[0]["run_status"] == "cancelled":
            break
        await asyncio.sleep(0.2)
    assert [(r["workflow_id"], r["run_status"]) for r in rows] == [(workflow_id, "cancelled")], err


async def test_sync_tools_reports_drift_and_fixes_it(cli: Any, client: OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[ADD, {"type": "code_interpreter"}])
    code, out, _ = await cli("sync-tools", "--assistant", assistant.id, "--check")
    assert code == 1
    assert "missing on the assistant: city_population, compile_report, convert_temperature, get_weather" in out
    assert "not in the registry: add" in out
    code, out, err = await cli("sync-tools", "--assistant", assistant.id)
    assert code == 0, err
    synced = client.beta.assistants.retrieve(assistant.id).tools
    assert sorted(t.function.name for t in synced if t.type == "function") == sorted(t.name for t in registry if t.name in {"city_population", "compile_report", "convert_temperature", "get_weather"})
    assert [t.type for t in synced if t.type != "function"] == ["code_interpreter"]  # left alone
    code, out, _ = await cli("sync-tools", "--assistant", assistant.id, "--check")
    assert code == 0 and "tools match the registry (4 function tools)" in out


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (("status", "assistant-run/nope"), {}, 1, "durable-assistants: error: no run with workflow ID 'assistant-run/nope'"),
        (("cancel", "assistant-run/nope"), {}, 1, "durable-assistants: error: no run with workflow ID 'assistant-run/nope'"),
        (("enqueue", "-m", "hi"), {}, 1, "durable-assistants: error: give --assistant"),
        (("enqueue", "--assistant", "a", "--request", '{"top_p": 3}'), {}, 1, "durable-assistants: error: invalid run request: top_p"),
        (
            ("enqueue", "--assistant", "a", "--conversation", "conv_1", "-m", "hi"), {}, 1,
            "durable-assistants: error: invalid run request: assistant_id belong to the Assistants API and conversation_id to the Responses API",
        ),
        (("list",), {"TEMPORAL_ADDRESS": "127.0.0.1:1"}, 1, "durable-assistants: error: cannot connect to Temporal at 127.0.0.1:1"),
        (("sync-tools", "--assistant", "asst_nope"), {}, 1, "durable-assistants: error: no assistant 'asst_nope'"),
        (("frobnicate",), {}, 2, "durable-assistants: error: argument COMMAND: invalid choice"),
    ],
)
async def test_bad_arguments_get_one_clear_line(cli: Any, args: tuple[str, ...], env: dict[str, str], code: int, message: str) -> None:
    got, out, err = await cli(*args, env=env)
    assert got == code
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


def _children_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


async def test_dev_brings_the_stack_up_and_ctrl_c_takes_it_all_down(tmp_path: Path) -> None:
    import signal

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable_assistants.cli", "dev", cwd=REPO,
        env={**os.environ, "DA_STATE_DIR": str(tmp_path)},  # not the repo's .local, which a user's `make demo` may hold
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen = []
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line, "dev exited early:\n" + "".join(seen)
        seen.append(line)
        if line.startswith("The stack is up"):
            break
    children = _children_of(process.pid)
    assert len(children) == 3  # Temporal dev server, emulator, worker
    assert any(line.startswith("nexus: created Nexus endpoint durable-assistants -> default/durable-assistants") for line in seen), seen
    process.send_signal(signal.SIGINT)
    rest = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
    assert await process.wait() == 0, rest
    assert "stopped; nothing left running" in rest
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()]


async def test_emulator_command_serves_and_stops_cleanly() -> None:
    import signal

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable_assistants.cli", "emulator", "--port", "0", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    assert line.startswith("emulator listening on http://127.0.0.1:")
    base_url = line.split()[-1]
    async with AsyncOpenAI(base_url=base_url, api_key="k") as sdk:
        assert (await sdk.beta.assistants.create(model="gpt-4o")).id.startswith("asst_")
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0


def test_the_local_stack_keeps_its_state_where_it_was_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`durable-assistants dev` from an installed package: its state goes to the directory it
    was started from (never into site-packages), or to $DA_STATE_DIR."""
    from durable_assistants.devstack.demo import state_dir

    monkeypatch.delenv("DA_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert state_dir() == tmp_path / ".local"
    monkeypatch.setenv("DA_STATE_DIR", str(tmp_path / "elsewhere"))
    assert state_dir() == tmp_path / "elsewhere"
