"""Bad input, across the command line and the Python API: each case gets its exit code (or
exception), one line that names the field or the value, no traceback, an answer within a
bounded time, and no run left running that will never end.

Three groups:

* CLI cases refused before anything is sent: run in-process (``cli.main([...])``), with
  ``connect`` replaced by a trap, which proves nothing reached Temporal, so nothing was
  enqueued. Python API cases that need no server (``RunRequest.model_validate``).
* CLI cases that need the dev server, the emulator or a worker: the real command as a
  subprocess, like ``tests/test_cli.py``. After each, no ``AssistantRun`` on the test's task
  queue is still running (a run that legitimately ends gets a few seconds to close).
* Python API cases against the dev server: ``enqueue_run``, ``get_run`` and ``RunHandle``.

"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

import durable_assistants.cli as cli_module
import durable_assistants.commands as commands_module
from durable_assistants import enqueue_run
from durable_assistants.client import IdempotencyConflictError, RunFailedError, RunNotFoundError, get_run
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.emulator.server import EmulatorProcess
from durable_assistants.workflows.models import MessageInput, RunRequest

REPO = Path(__file__).parent.parent
PROG = "durable-assistants"
A = ("enqueue", "--assistant", "asst_1")  # an enqueue that is fine but for what a case adds


def request(data: dict[str, Any], *extra: str) -> tuple[str, ...]:
    return (*A, "--request", json.dumps(data), *extra)


def assert_one_line(code: int, out: str, err: str, expected: int, *fragments: str) -> str:
    """The exit code, one line on stderr holding every fragment, no traceback, stdout empty."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert code == expected, f"exit {code}, expected {expected}; stderr:\n{err}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert out == "", f"stdout should be empty, got {out!r}"
    return lines[0]


# ============================================================================ fast: in-process CLI

DEEP = "[" * 100_000 + "]" * 100_000

# (argv, exit code, fragments of the one line). "{tmp}" in an argument is the test's tmp_path.
FAST_CLI_CASES = [
    # --request that is not a RunRequest object
    pytest.param((*A, "--request", "[]"), 1, ["--request must be a JSON object", "got an array: '[]'"], id="request-empty-array"),
    pytest.param((*A, "--request", "[1,2]"), 1, ["--request must be a JSON object", "'[1,2]'"], id="request-array"),
    pytest.param((*A, "--request", '"hello"'), 1, ["got a string", "hello"], id="request-string"),
    pytest.param((*A, "--request", "null"), 1, ["got null"], id="request-null"),
    pytest.param((*A, "--request", "7"), 1, ["got a number: '7'"], id="request-number"),
    pytest.param((*A, "--request", "{bad json"), 1, ["--request is not JSON", "line 1 column 2"], id="request-not-json"),
    pytest.param((*A, "--request", DEEP), 1, ["nested too deeply"], id="request-nested-too-deeply"),
    pytest.param((*A, "--request", "@{tmp}/missing.json"), 1, ["cannot read", "missing.json: No such file or directory"], id="request-file-missing"),
    pytest.param((*A, "--request", "@"), 1, ["--request @: give a file name after @"], id="request-at-alone"),
    pytest.param((*A, "--request", "@{tmp}/latin1.json"), 1, ["latin1.json: not UTF-8 text (byte 0xe9 at offset"], id="request-file-not-utf8"),
    pytest.param((*A, "--request", "@{tmp}"), 1, ["cannot read", "Is a directory"], id="request-file-is-a-directory"),
    # lone surrogates: a non-UTF-8 byte in argv (as Python decodes it) and a JSON escape
    pytest.param((*A, "-m", os.fsdecode(b"caf\xe9")), 1, ["messages.0.content (character 3: '\\udce9')", "lone surrogate"], id="message-non-utf8-argv"),
    pytest.param(request({"messages": [{"content": "a\ud800"}]}), 1, ["messages.0.content (character 1: '\\ud800')", "lone surrogate"], id="message-lone-surrogate-json"),
    pytest.param(request({"metadata": {"k\udfff": "v"}}), 1, ["metadata", "'\\udfff'", "lone surrogate"], id="metadata-key-lone-surrogate"),
    # IDs
    pytest.param(request({"thread_id": ""}), 1, ["thread_id: must not be empty (got '')"], id="thread-id-empty"),
    pytest.param(request({"thread_id": "a/b"}), 1, ["thread_id: contains '/'", "'a/b'"], id="thread-id-slash"),
    pytest.param(request({"thread_id": " "}), 1, ["thread_id: contains ' '"], id="thread-id-space"),
    pytest.param((*A, "--thread", ""), 1, ["thread_id: must not be empty (got '')"], id="thread-flag-empty"),
    pytest.param((*A, "--thread", "thread_1?x=1"), 1, ["thread_id: contains '?'"], id="thread-flag-question-mark"),
    pytest.param((*A, "--thread", "t" * 513), 1, ["thread_id: is 513 characters long"], id="thread-id-too-long"),
    pytest.param(("enqueue", "--model", "m", "--request", '{"assistant_id": ""}'), 1, ["assistant_id: must not be empty"], id="assistant-id-empty"),
    pytest.param(("enqueue", "--assistant", "", "-m", "hi"), 1, ["assistant_id: must not be empty (got '')"], id="assistant-flag-empty"),
    pytest.param(("enqueue", "--model", "m", "--conversation", "", "-m", "hi"), 1, ["conversation_id: must not be empty"], id="conversation-id-empty"),
    pytest.param(("enqueue", "--model", "m", "--previous-response", "resp 1"), 1, ["previous_response_id: contains ' '", "'resp 1'"], id="previous-response-space"),
    pytest.param(("enqueue", "--request", '{"prompt": {"id": ""}}'), 1, ["prompt.id: must not be empty"], id="prompt-id-empty"),
    # metadata limits, less the worker's own pair
    pytest.param(request({"metadata": {f"k{i}": "v" for i in range(16)}}), 1, ["metadata: has 16 pairs", "at most 15"], id="metadata-16-pairs"),
    pytest.param(request({"metadata": {"k" * 65: "v"}}), 1, ["metadata: key 'kkkk", "must be 1 to 64 characters"], id="metadata-key-65-chars"),
    pytest.param(request({"metadata": {"": "v"}}), 1, ["metadata: key '' must be 1 to 64 characters"], id="metadata-key-empty"),
    pytest.param(request({"metadata": {"k": "v" * 513}}), 1, ["metadata: value of 'k' is 513 characters; at most 512"], id="metadata-value-513-chars"),
    pytest.param(request({"metadata": {"durable_assistants_key": "x"}}), 1, ["metadata: key 'durable_assistants_key' is reserved"], id="metadata-reserved-key"),
    pytest.param(request({"thread_metadata": {"durable_assistants_run": "x"}}), 1, ["thread_metadata: key 'durable_assistants_run' is reserved"], id="thread-metadata-reserved-key"),
    pytest.param(request({"messages": [{"content": "hi", "metadata": {"k": "v" * 600}}]}), 1, ["messages.0.metadata: value of 'k' is 600"], id="message-metadata-value-too-long"),
    pytest.param(request({"metadata": {"k": 1}}), 1, ["metadata.k: Input should be a valid string (got 1)"], id="metadata-value-not-a-string"),
    # messages
    pytest.param((*A, "-m", ""), 1, ["messages.0.content: message content must not be empty (got '')"], id="message-empty"),
    pytest.param((*A, "-m", "hi", "-m", " \n\t "), 1, ["messages.1.content: message content must not be empty"], id="message-whitespace-only"),
    pytest.param((*A, "-m", "x" * 256_001), 1, ["messages.0.content: message text is 256001 characters; the API takes at most 256000"], id="message-256001-chars"),
    pytest.param(request({"messages": [{"content": [{"type": "text", "text": "y" * 256_001}]}]}), 1, ["messages.0.content: message text is 256001"], id="content-part-256001-chars"),
    pytest.param(request({"messages": [{"content": []}]}), 1, ["messages.0.content: message content must not be empty (got [])"], id="content-parts-empty"),
    pytest.param(request({"messages": "hello"}), 1, ["messages: Input should be a valid list"], id="messages-not-a-list"),
    pytest.param(request({"messages": [{"role": "system", "content": "hi"}]}), 1, ["messages.0.role: Input should be 'user' or 'assistant' (got 'system')"], id="message-unknown-role"),
    pytest.param(request({"messages": [{"text": "hi"}]}), 1, ["messages.0.content: Field required"], id="message-without-content"),
    # numbers out of range
    pytest.param(request({"temperature": 3}), 1, ["temperature: Input should be less than or equal to 2 (got 3)"], id="temperature-3"),
    pytest.param((*A, "--request", '{"temperature": NaN}'), 1, ["temperature is nan, which JSON cannot carry"], id="temperature-nan"),
    pytest.param(request({"top_p": -1}), 1, ["top_p: Input should be greater than or equal to 0 (got -1)"], id="top-p-negative"),
    pytest.param(request({"max_completion_tokens": 10}), 1, ["max_completion_tokens: Input should be greater than or equal to 256 (got 10)"], id="max-completion-tokens-10"),
    pytest.param(request({"max_prompt_tokens": 0}), 1, ["max_prompt_tokens: Input should be greater than or equal to 256 (got 0)"], id="max-prompt-tokens-0"),
    pytest.param(request({"output_cap_chars": 10}), 1, ["output_cap_chars: Input should be greater than or equal to 64 (got 10)"], id="output-cap-10"),
    pytest.param((*A, "--request", '{"expiry_margin_seconds": 1e400}'), 1, ["expiry_margin_seconds is inf, which JSON cannot carry"], id="expiry-margin-infinite"),
    pytest.param(request({"expiry_margin_seconds": -1}), 1, ["expiry_margin_seconds: Input should be greater than or equal to 0"], id="expiry-margin-negative"),
    pytest.param(request({"temperature": "warm"}), 1, ["temperature: Input should be a valid number", "'warm'"], id="temperature-not-a-number"),
    # unknown names and choices
    pytest.param(request({"bogus_field": 1}), 1, ["bogus_field: Extra inputs are not permitted (got 1)"], id="unknown-field"),
    pytest.param(request({"backend": "bogus"}), 1, ["backend: Input should be 'assistants' or 'responses' (got 'bogus')"], id="unknown-backend-in-request"),
    pytest.param(request({"mode": "fast"}), 1, ["mode: Input should be 'poll' or 'stream' (got 'fast')"], id="unknown-mode-in-request"),
    pytest.param(request({"tool_failure": "ignore"}), 1, ["tool_failure: Input should be 'error_output' or 'fail_run'"], id="unknown-tool-failure-policy"),
    pytest.param((*A, "-m", "hi", "--mode", "fast"), 2, ["enqueue: error: argument --mode: invalid choice: 'fast'", "(see durable-assistants enqueue --help)"], id="mode-flag-fast"),
    pytest.param((*A, "-m", "hi", "--backend", "x"), 2, ["argument --backend: invalid choice: 'x'"], id="backend-flag-x"),
    pytest.param(("frobnicate",), 2, ["argument COMMAND: invalid choice: 'frobnicate'"], id="unknown-command"),
    pytest.param((*A, "-m", "hi", "--colour", "red"), 2, ["unrecognized arguments: --colour red"], id="unknown-option"),
    # requests that mix or miss what an API needs
    pytest.param((*A, "--conversation", "conv_1", "-m", "hi"), 1, ["assistant_id belong to the Assistants API and conversation_id to the Responses API"], id="mixing-apis"),
    pytest.param(("enqueue", "--model", "m", "--conversation", "c1", "--previous-response", "r1", "-m", "hi"), 1, ["give conversation_id ('c1') or previous_response_id ('r1'), not both"], id="conversation-and-previous-response"),
    pytest.param(
        ("enqueue", "--backend", "responses", "--model", "m", "--request", '{"messages": [{"content": "hi", "attachments": [{"file_id": "file_1"}]}]}'),
        1, ["messages [0] have attachments, which the Responses API does not take"], id="responses-with-attachments",
    ),
    pytest.param(("enqueue", "--backend", "responses", "--model", "m", "--thread", "thread_1"), 1, ["the responses backend has no thread_id (got thread_id='thread_1')"], id="responses-with-thread"),
    pytest.param(("enqueue", "--backend", "assistants", "--model", "m", "--request", '{"prompt": {"id": "pmpt_1"}}'), 1, ["the assistants backend has no prompt (got prompt="], id="assistants-with-prompt"),
    pytest.param(("enqueue", "--backend", "responses", "--model", "m", "--request", '{"response_format": "json"}'), 1, ["response_format 'json' has no Responses equivalent"], id="responses-string-response-format"),
    pytest.param(("enqueue", "-m", "hi"), 1, ["give --assistant", "or --model"], id="no-agent"),
    pytest.param(("enqueue", "--model", "", "-m", "hi"), 1, ["model: String should have at least 1 character (got '')"], id="model-empty"),
    # --timeout and --request-id
    pytest.param((*A, "-m", "hi", "--wait", "--timeout", "0"), 2, ["argument --timeout: must be more than 0 seconds, got 0"], id="timeout-0"),
    pytest.param((*A, "-m", "hi", "--wait", "--timeout", "abc"), 2, ["argument --timeout: expected seconds, got 'abc'"], id="timeout-abc"),
    pytest.param((*A, "-m", "hi", "--wait", "--timeout", "nan"), 2, ["argument --timeout: must be more than 0 seconds, got nan"], id="timeout-nan"),
    pytest.param((*A, "-m", "hi", "--timeout", "5"), 1, ["--timeout goes with --wait or --follow"], id="timeout-without-wait"),
    pytest.param((*A, "-m", "hi", "--request-id", ""), 1, ["invalid --request-id: '' must be 1 to 200 printable characters"], id="request-id-empty"),
    pytest.param((*A, "-m", "hi", "--request-id", "order 1"), 1, ["invalid --request-id: 'order 1'"], id="request-id-with-space"),
    pytest.param((*A, "-m", "hi", "--request-id", "r" * 201), 1, ["invalid --request-id: 'rrrr", "1 to 200"], id="request-id-201-chars"),
    # other commands
    pytest.param(("list", "--limit", "0"), 2, ["list: error: argument --limit: must be at least 1, got 0"], id="list-limit-0"),
    pytest.param(("list", "--limit", "-3"), 2, ["argument --limit: must be at least 1, got -3"], id="list-limit-negative"),
    pytest.param(("list", "--limit", "x"), 2, ["argument --limit: expected a whole number, got 'x'"], id="list-limit-x"),
    pytest.param(("list", "--status", "a'b"), 1, ["invalid value for RunStatus: \"a'b\""], id="list-status-quote"),
    pytest.param(("list", "--thread", 'thread_"1'), 1, ["invalid value for ThreadId"], id="list-thread-double-quote"),
    pytest.param(("status",), 2, ["status: error: the following arguments are required: workflow_id"], id="status-without-id"),
    pytest.param(("cancel", "assistant-run/x", "--timeout", "-1"), 2, ["argument --timeout: must be more than 0 seconds, got -1"], id="cancel-timeout-negative"),
    pytest.param(("dev", "--once"), 2, ["dev --once goes with --demo"], id="dev-once-without-demo"),
    pytest.param(("assistant", "create"), 2, ["assistant create: error: the following arguments are required: --model"], id="assistant-create-without-model"),
    pytest.param(("assistant",), 2, ["the following arguments are required: ACTION"], id="assistant-without-action"),
    pytest.param(("assistant", "create", "--model", "m", "--tools", "no_such_module"), 1, ["cannot import tool module 'no_such_module': no module named 'no_such_module'"], id="assistant-create-unknown-tools"),
    pytest.param(("sync-tools", "--assistant", "asst_1", "--tools", "tools.no_such_module"), 1, ["cannot import tool module 'tools.no_such_module'"], id="sync-tools-unknown-tools"),
    pytest.param(("sync-tools",), 2, ["the following arguments are required: --assistant"], id="sync-tools-without-assistant"),
]


@pytest.fixture
def request_files(tmp_path: Path) -> Path:
    (tmp_path / "latin1.json").write_bytes('{"assistant_id": "café"}'.encode("latin-1"))
    return tmp_path


@pytest.mark.parametrize(("argv", "expected", "fragments"), FAST_CLI_CASES)
def test_cli_refuses_before_sending_anything(
    argv: tuple[str, ...], expected: int, fragments: list[str], request_files: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connected: list[bool] = []

    async def no_connect() -> Client:
        connected.append(True)
        raise AssertionError("this case must be refused before connecting to Temporal")

    monkeypatch.setattr(commands_module, "connect", no_connect)  # where the commands look it up
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # were it to connect anyway, nothing is there
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    args = [a.replace("{tmp}", str(request_files)) for a in argv]
    started = time.monotonic()
    try:
        code = cli_module.main(args)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    line = assert_one_line(code, out, err, expected, *fragments)
    assert line.startswith(PROG) and ": error: " in line, line
    if expected == 2 and argv[0] != "dev":
        assert line.endswith("--help)"), line
    assert not connected  # nothing reached Temporal, so nothing was enqueued
    assert elapsed < 5, f"took {elapsed:.1f} s"


# ============================================================================ fast: RunRequest.model_validate

GOOD = {"assistant_id": "asst_1", "messages": [{"content": "hi"}]}

# (the request, the field the error names (its loc), a fragment of the message)
BAD_REQUESTS = [
    pytest.param({**GOOD, "thread_id": ""}, "thread_id", "must not be empty", id="thread-id-empty"),
    pytest.param({**GOOD, "thread_id": "a/b"}, "thread_id", "'/'", id="thread-id-slash"),
    pytest.param({**GOOD, "thread_id": " "}, "thread_id", "' '", id="thread-id-space"),
    pytest.param({**GOOD, "thread_id": "t\x00"}, "thread_id", "'\\x00'", id="thread-id-nul"),
    pytest.param({**GOOD, "assistant_id": ""}, "assistant_id", "must not be empty", id="assistant-id-empty"),
    pytest.param({"model": "gpt-4o", "conversation_id": ""}, "conversation_id", "must not be empty", id="conversation-id-empty"),
    pytest.param({"model": "gpt-4o", "previous_response_id": "resp 1"}, "previous_response_id", "' '", id="previous-response-space"),
    pytest.param({"prompt": {"id": ""}}, "prompt.id", "must not be empty", id="prompt-id-empty"),
    pytest.param({"prompt": {"id": "p", "bogus": 1}}, "prompt.bogus", "Extra inputs", id="prompt-unknown-field"),
    pytest.param({**GOOD, "metadata": {f"k{i}": "v" for i in range(16)}}, "metadata", "16 pairs", id="metadata-16-pairs"),
    pytest.param({**GOOD, "metadata": {"k" * 65: "v"}}, "metadata", "1 to 64 characters", id="metadata-key-65"),
    pytest.param({**GOOD, "metadata": {"k": "v" * 513}}, "metadata", "513 characters", id="metadata-value-513"),
    pytest.param({**GOOD, "metadata": {"durable_assistants_key": "v"}}, "metadata", "reserved", id="metadata-reserved"),
    pytest.param({**GOOD, "messages": [{"content": ""}]}, "messages.0.content", "must not be empty", id="message-empty"),
    pytest.param({**GOOD, "messages": [{"content": "   "}]}, "messages.0.content", "must not be empty", id="message-whitespace"),
    pytest.param({**GOOD, "messages": [{"content": "x" * 256_001}]}, "messages.0.content", "256001 characters", id="message-256001"),
    pytest.param({**GOOD, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "'user' or 'assistant'", id="message-role"),
    pytest.param({**GOOD, "messages": [{"content": "a\ud800"}]}, "", "lone surrogate", id="message-lone-surrogate"),
    pytest.param({**GOOD, "temperature": 3}, "temperature", "less than or equal to 2", id="temperature-3"),
    pytest.param({**GOOD, "top_p": -1}, "top_p", "greater than or equal to 0", id="top-p-negative"),
    pytest.param({**GOOD, "max_completion_tokens": 10}, "max_completion_tokens", "256", id="max-completion-tokens-10"),
    pytest.param({**GOOD, "expiry_margin_seconds": float("inf")}, "", "expiry_margin_seconds is inf", id="expiry-margin-inf"),
    pytest.param({**GOOD, "tools": [{"type": "function", "function": {"name": "f", "x": float("nan")}}]}, "", "tools.0.function.x is nan", id="tools-nan"),
    pytest.param({**GOOD, "model": ""}, "model", "at least 1 character", id="model-empty"),
    pytest.param({**GOOD, "bogus": 1}, "bogus", "Extra inputs are not permitted", id="unknown-field"),
    pytest.param({**GOOD, "backend": "bogus"}, "backend", "'assistants' or 'responses'", id="unknown-backend"),
    pytest.param({**GOOD, "conversation_id": "conv_1"}, "", "a request speaks one of them", id="mixing-apis"),
    pytest.param({"model": "gpt-4o", "conversation_id": "c", "previous_response_id": "r"}, "", "not both", id="conversation-and-previous"),
    pytest.param({"backend": "responses", "model": "gpt-4o", "messages": [{"content": "x", "attachments": [{"file_id": "f"}]}]}, "", "attachments", id="responses-attachments"),
    pytest.param({"backend": "assistants"}, "", "the assistants backend needs an assistant_id", id="assistants-without-agent"),
    pytest.param({"backend": "responses"}, "", "the responses backend needs a model or a stored prompt", id="responses-without-agent"),
]


@pytest.mark.parametrize(("data", "field", "fragment"), BAD_REQUESTS)
def test_run_request_names_the_bad_field(data: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RunRequest.model_validate(data)
    error = caught.value.errors(include_url=False)[0]
    assert ".".join(str(p) for p in error["loc"]) == field
    assert fragment in str(error["msg"])
    assert len(caught.value.errors()) == 1


# ============================================================================ the server group

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cli(temporal_server: TemporalDevServer, emulator: EmulatorProcess, task_queue: str) -> Any:
    """The CLI as a real process against the dev server and the emulator: (code, stdout,
    stderr, seconds). Arguments may be bytes (argv that is not UTF-8)."""

    async def run(*args: str | bytes, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str, float]:
        full_env = {
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_server.address,
            "OPENAI_BASE_URL": emulator.base_url,
            "OPENAI_API_KEY": "sk-test",
            "DA_TASK_QUEUE": task_queue,
            **(env or {}),
        }
        started = time.monotonic()
        # Not subprocess.run: the in-process workers share this event loop.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "durable_assistants.cli", *args, cwd=REPO, env=full_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{args!r} still running after {timeout} s") from None
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - started

    return run


async def running_runs(client: Client, task_queue: str) -> list[str]:
    query = f"WorkflowType = 'AssistantRun' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
    return [w.id async for w in client.list_workflows(query)]


async def assert_nothing_left_running(client: Client, *task_queues: str, limit: float = 15.0) -> None:
    """No run on these task queues is still running; one that is ending gets ``limit`` seconds
    (visibility also lags history by a moment)."""
    deadline = time.monotonic() + limit
    for task_queue in task_queues:
        while left := await running_runs(client, task_queue):
            assert time.monotonic() < deadline, f"still running on {task_queue}: {left}"
            await asyncio.sleep(0.2)


async def executions(client: Client, workflow_id: str, limit: float = 10.0, expected: int = 1) -> list[Any]:
    """The executions visibility knows for ``workflow_id`` (polled until ``expected`` show)."""
    deadline = time.monotonic() + limit
    while True:
        found = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def exists(client: Client, workflow_id: str) -> bool:
    """Whether the server has a workflow with this ID (from history: no visibility lag)."""
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", instructions="Be brief.").id


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------- runs that fail while the CLI waits


# (the enqueue arguments after `enqueue`, needs a real assistant, fragments of the reason)
FAILING_RUNS = [
    pytest.param(("--assistant", "asst_missing", "-m", "hi", "--wait"), False, ["No assistant found with id 'asst_missing'"], id="unknown-assistant-wait"),
    pytest.param(
        ("--assistant", "asst_missing", "-m", "hi", "--follow"), False, ["No assistant found with id 'asst_missing'"],
        id="unknown-assistant-follow",
    ),
    # Unknown threads and conversations get an ID of their own per case ({uid}): a thread's
    # queue outlives its run by minutes, bound to the task queue of the test that started it.
    pytest.param(("--thread", "thread_missing{uid}", "-m", "hi", "--wait"), True, ["thread_missing{uid}"], id="unknown-thread-wait"),
    pytest.param(
        ("--thread", "thread_missing{uid}", "-m", "hi", "--follow"), True, ["thread_missing{uid}"], id="unknown-thread-follow",
    ),
    pytest.param(("--model", "gpt-4o", "--previous-response", "resp_missing", "-m", "hi", "--wait"), False, ["resp_missing"], id="unknown-previous-response"),
    pytest.param(
        ("--model", "gpt-4o", "--conversation", "conv_missing{uid}", "-m", "hi", "--follow"), False, ["conv_missing{uid}"],
        id="unknown-conversation",
    ),
    # The emulator's 400 names the part (messages[0].content[0]) but not its type; OpenAI's
    # names the type ("Invalid value: 'hologram'"). Only the position is asserted here.
    pytest.param(
        ("--request", json.dumps({"messages": [{"content": [{"type": "hologram", "text": "x"}]}]}), "--wait"), True,
        ["HTTP 400", "messages[0].content[0]"], id="unknown-content-part-assistants",
    ),
    pytest.param(
        ("--backend", "responses", "--model", "gpt-4o", "--request", json.dumps({"messages": [{"content": [{"type": "hologram", "text": "x"}]}]}), "--follow"),
        False, ["hologram"], id="unknown-content-part-responses",
    ),
]


@pytest.mark.parametrize(("args", "needs_assistant", "fragments"), FAILING_RUNS)
async def test_a_run_that_fails_while_the_cli_waits(
    cli: Any, workers: None, temporal_client: Client, task_queue: str, client: OpenAI,
    args: tuple[str, ...], needs_assistant: bool, fragments: list[str],
) -> None:
    request_id = unique("bad")
    workflow_id = f"assistant-run/{request_id}"
    uid = request_id.removeprefix("bad")
    args = tuple(a.replace("{uid}", uid) for a in args)
    fragments = [f.replace("{uid}", uid) for f in fragments]
    extra = ("--assistant", client.beta.assistants.create(model="gpt-4o").id) if needs_assistant else ()
    code, out, err, seconds = await cli("enqueue", *extra, *args, "--request-id", request_id)
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert line.startswith(f"{PROG}: error: run failed: "), err
    if "--follow" in args:  # it printed the run's ID (and any progress) before it failed
        assert out.startswith(f"run {workflow_id}\n")
        out = ""
    assert_one_line(code, out, err, 1, *fragments)
    assert seconds < 30

    code, out, err_status, seconds = await cli("status", workflow_id)
    assert_one_line(code, out, err_status, 1, *fragments)
    assert err_status == err  # the same reason
    assert seconds < 15
    assert len(await executions(temporal_client, workflow_id)) == 1
    await assert_nothing_left_running(temporal_client, task_queue)


# ---------------------------------------------------------------------------- request IDs

async def test_a_reused_request_id_with_another_request_is_refused(
    cli: Any, workers: None, temporal_client: Client, task_queue: str, assistant_id: str
) -> None:
    request_id = unique("order")
    first = ("enqueue", "--assistant", assistant_id, "-m", "first", "--request", '{"tool_choice": "none"}', "--request-id", request_id)
    code, out, err, _ = await cli(*first)
    assert (code, out.strip()) == (0, f"assistant-run/{request_id}"), err

    code, out, err, seconds = await cli("enqueue", "--assistant", assistant_id, "-m", "second", "--request-id", request_id)
    assert_one_line(code, out, err, 1, f"request ID '{request_id}' was already used for a different request")
    assert seconds < 15

    code, out, err, _ = await cli(*first)  # the same request again: the same run
    assert (code, out.strip(), err) == (0, f"assistant-run/{request_id}", "")
    await assert_nothing_left_running(temporal_client, task_queue)
    assert len(await executions(temporal_client, f"assistant-run/{request_id}")) == 1


async def test_a_reused_request_id_on_a_thread_with_another_request_is_refused(
    cli: Any, workers: None, temporal_client: Client, task_queue: str, assistant_id: str, client: OpenAI
) -> None:
    thread = client.beta.threads.create().id
    request_id = unique("order")
    first = ("enqueue", "--assistant", assistant_id, "--thread", thread, "-m", "first", "--request", '{"tool_choice": "none"}', "--request-id", request_id, "--wait")
    code, out, err, _ = await cli(*first)
    assert code == 0 and out.startswith("completed: run run_"), err

    code, out, err, _ = await cli("enqueue", "--assistant", assistant_id, "--thread", thread, "-m", "other", "--request-id", request_id)
    assert_one_line(code, out, err, 1, f"request ID '{request_id}' was already used for a different request")
    code, out, err, _ = await cli(*first)
    assert code == 0 and out.startswith("completed: run run_"), err
    await assert_nothing_left_running(temporal_client, task_queue)
    assert len(await executions(temporal_client, f"assistant-run/{request_id}")) == 1


# ---------------------------------------------------------------------------- Temporal: queues, unknown runs, no server

@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param((*A[1:], "-m", "hi", "--wait"), "so the run would never start; nothing was enqueued", id="wait"),
        pytest.param((*A[1:], "--thread", "thread_{uid}", "-m", "hi"), "a run on thread_{uid} is enqueued through that thread's queue", id="thread-no-wait"),
        pytest.param(("--model", "gpt-4o", "--conversation", "conv_{uid}", "-m", "hi"), "through that conversation's queue", id="conversation-no-wait"),
    ],
)
async def test_a_queue_no_worker_polls_gets_nothing(cli: Any, temporal_client: Client, task_queue: str, args: tuple[str, ...], fragment: str) -> None:
    from durable_assistants.workflows.thread_queue import queue_workflow_id

    queue = unique("nobody-polls")
    request_id = unique("never")
    uid = request_id.removeprefix("never-")
    args = tuple(a.replace("{uid}", uid) for a in args)
    code, out, err, seconds = await cli("enqueue", *args, "--task-queue", queue, "--request-id", request_id)
    assert_one_line(code, out, err, 1, f"no worker is polling task queue '{queue}'", fragment.replace("{uid}", uid), "nothing was enqueued")
    assert seconds < 15
    for workflow_id in (f"assistant-run/{request_id}", queue_workflow_id(f"thread_{uid}"), queue_workflow_id(f"conv_{uid}")):
        assert not await exists(temporal_client, workflow_id), workflow_id
    await assert_nothing_left_running(temporal_client, queue, task_queue)


@pytest.mark.parametrize("command", ["status", "cancel"])
async def test_an_unknown_run_is_named(cli: Any, temporal_client: Client, task_queue: str, command: str) -> None:
    code, out, err, seconds = await cli(command, "assistant-run/typo")
    assert_one_line(code, out, err, 1, "no run with workflow ID 'assistant-run/typo'")
    assert seconds < 10
    assert not await exists(temporal_client, "assistant-run/typo")
    await assert_nothing_left_running(temporal_client, task_queue)


@pytest.mark.server
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("enqueue", *A[1:], "-m", "hi"), id="enqueue"),
        pytest.param(("status", "assistant-run/x"), id="status"),
        pytest.param(("list",), id="list"),
        pytest.param(("cancel", "assistant-run/x"), id="cancel"),
    ],
)
async def test_an_unreachable_temporal_is_named(args: tuple[str, ...]) -> None:
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable_assistants.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    assert_one_line(process.returncode, out.decode(), err.decode(), 1, "cannot connect to Temporal at 127.0.0.1:1")
    assert time.monotonic() - started < 15


async def test_sync_tools_names_an_unknown_assistant(cli: Any, temporal_client: Client, task_queue: str) -> None:
    code, out, err, seconds = await cli("sync-tools", "--assistant", "asst_missing")
    assert_one_line(code, out, err, 1, "no assistant 'asst_missing'")
    assert seconds < 15
    await assert_nothing_left_running(temporal_client, task_queue)


async def test_a_non_utf8_message_byte_from_the_shell(cli: Any, temporal_client: Client, task_queue: str) -> None:
    code, out, err, _ = await cli("enqueue", "--assistant", "asst_1", "-m", os.fsencode("caf") + b"\xe9")
    assert_one_line(code, out, err, 1, "messages.0.content (character 3: '\\udce9') is not valid Unicode text")
    await assert_nothing_left_running(temporal_client, task_queue)


# ---------------------------------------------------------------------------- the worker command

@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        pytest.param(("--tools", "no_such_module"), {}, ["cannot import tool module 'no_such_module'"], id="unknown-tool-module"),
        pytest.param((), {"DA_LOG_LEVEL": "bogus"}, ["DA_LOG_LEVEL='bogus' is not valid"], id="bad-log-level"),
        pytest.param((), {"DA_BACKEND": "bogus"}, ["DA_BACKEND='bogus' is not valid"], id="bad-backend"),
        pytest.param(
            (), {"OPENAI_BASE_URL": "http://127.0.0.1:{closed}/v1", "DA_STARTUP_RETRY_SECONDS": "0"},
            ["cannot reach the model API at http://127.0.0.1:{closed}/v1"], id="model-api-unreachable",
        ),
        pytest.param((), {"TEMPORAL_ADDRESS": "127.0.0.1:{closed}"}, ["cannot connect to Temporal (127.0.0.1:{closed})"], id="temporal-unreachable"),
        pytest.param(("--backend", "x"), {}, ["argument --backend: invalid choice: 'x'"], id="backend-flag-x"),
    ],
)
async def test_a_worker_that_cannot_start_says_why(
    cli: Any, temporal_client: Client, task_queue: str, args: tuple[str, ...], env: dict[str, str], fragments: list[str]
) -> None:
    port = str(closed_port())
    env = {k: v.replace("{closed}", port) for k, v in env.items()}
    code, out, err, seconds = await cli("worker", *args, env={"DA_LOG_FORMAT": "json", **env}, timeout=30)
    assert_one_line(code, out, err, 2, *(f.replace("{closed}", port) for f in fragments))
    assert seconds < 20
    await assert_nothing_left_running(temporal_client, task_queue)


# ---------------------------------------------------------------------------- a wrong API key

@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[EmulatorProcess]:
    """An emulator that requires ``Authorization: Bearer sk-right`` (``--api-key``)."""
    with EmulatorProcess("--turn-seconds", "0.02", "--poll-after-ms", "20", "--api-key", "sk-right") as process:
        yield process


async def test_a_worker_with_a_wrong_api_key_does_not_start(
    cli: Any, keyed_emulator: EmulatorProcess, temporal_client: Client, task_queue: str
) -> None:
    code, out, err, seconds = await cli("worker", env={"OPENAI_BASE_URL": keyed_emulator.base_url, "OPENAI_API_KEY": "sk-wrong"}, timeout=30)
    assert_one_line(code, out, err, 2, "401", "Incorrect API key")
    assert "sk-wrong" not in err and seconds < 20
    await assert_nothing_left_running(temporal_client, task_queue)


@pytest.mark.parametrize("backend", ["assistants", "responses"])
async def test_a_run_with_a_wrong_api_key_fails_with_the_401(
    cli: Any, keyed_emulator: EmulatorProcess, temporal_client: Client, task_queue: str, backend: str
) -> None:
    import durable_assistants.tools.examples  # noqa: F401
    from durable_assistants import worker
    from durable_assistants.tools import registry

    with OpenAI(base_url=keyed_emulator.base_url, api_key="sk-right") as right:
        assistant = right.beta.assistants.create(model="gpt-4o").id
    model = AsyncOpenAI(base_url=keyed_emulator.base_url, api_key="sk-wrong", max_retries=0, timeout=5)
    agent = ("--assistant", assistant) if backend == "assistants" else ("--backend", "responses", "--model", "gpt-4o")
    async with worker.WorkerGroup(worker.build_workers(temporal_client, model, registry, task_queue)):
        code, out, err, seconds = await cli("enqueue", *agent, "-m", "hi", "--wait")
    await model.close()
    assert_one_line(code, out, err, 1, "run failed: ", "401", "Incorrect API key")
    assert seconds < 30
    await assert_nothing_left_running(temporal_client, task_queue)


# ============================================================================ the Python API against the server

def a_request(**fields: Any) -> RunRequest:
    return RunRequest(assistant_id="asst_1", messages=[MessageInput(content="hi")], **fields)


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        pytest.param(lambda c: enqueue_run(c, {"assistant_id": "a"}), TypeError, "request must be a RunRequest, got dict; build one with RunRequest.model_validate", id="request-dict"),
        pytest.param(lambda c: enqueue_run(c, None), TypeError, "request must be a RunRequest, got NoneType", id="request-none"),
        pytest.param(lambda c: enqueue_run(None, a_request()), TypeError, "client must be a temporalio.client.Client", id="client-none"),
        pytest.param(lambda c: enqueue_run("localhost:7233", a_request()), TypeError, "client must be a temporalio.client.Client (see connect_temporal()), got str", id="client-address"),
        pytest.param(lambda c: enqueue_run(c, a_request(), request_id=""), ValueError, "request_id '' must be 1 to 200", id="request-id-empty"),
        pytest.param(lambda c: enqueue_run(c, a_request(), request_id="a b"), ValueError, "request_id 'a b'", id="request-id-space"),
        pytest.param(lambda c: enqueue_run(c, a_request(), request_id="x" * 201), ValueError, "1 to 200 printable", id="request-id-201"),
        pytest.param(lambda c: enqueue_run(c, a_request(), request_id="a\nb"), ValueError, "'a\\nb'", id="request-id-newline"),
        pytest.param(lambda c: enqueue_run(c, a_request(), request_id=5), TypeError, "request_id must be a str, got int", id="request-id-int"),
        pytest.param(lambda c: enqueue_run(c, a_request(), task_queue=""), ValueError, "task_queue must be a non-empty str, got ''", id="task-queue-empty"),
        pytest.param(lambda c: enqueue_run(c, a_request(), task_queue=None), ValueError, "task_queue must be a non-empty str, got None", id="task-queue-none"),
        pytest.param(
            lambda c: enqueue_run(c, RunRequest(assistant_id="a", messages=[MessageInput(content="x" * 200_000) for _ in range(6)])),
            ValueError, "may be at most 1000000 bytes", id="request-over-1mb",
        ),
        pytest.param(lambda c: asyncio.sleep(0, get_run(c, "")), ValueError, "workflow_id must be a non-empty str, got ''", id="get-run-empty-id"),
        pytest.param(lambda c: asyncio.sleep(0, get_run(None, "assistant-run/x")), TypeError, "get_run: client must be", id="get-run-client-none"),
    ],
)
async def test_enqueue_run_refuses_bad_arguments(
    temporal_client: Client, task_queue: str, call: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        await asyncio.wait_for(call(temporal_client), 10)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    await assert_nothing_left_running(temporal_client, task_queue)


async def _drain(handle: Any) -> None:
    async for _ in handle.progress():
        pass


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(lambda h: h.result(), id="result"),
        pytest.param(lambda h: h.status(), id="status"),
        pytest.param(lambda h: h.cancel(), id="cancel"),
        pytest.param(lambda h: _drain(h), id="progress"),
        pytest.param(lambda h: h.started(), id="started"),
    ],
)
async def test_a_handle_on_an_unknown_run_raises_run_not_found(temporal_client: Client, method: Any) -> None:
    handle = get_run(temporal_client, "assistant-run/typo")
    started = time.monotonic()
    with pytest.raises(RunNotFoundError) as caught:
        await asyncio.wait_for(method(handle), 20)
    assert "no run with workflow ID 'assistant-run/typo'" in str(caught.value)
    assert time.monotonic() - started < 20


async def test_a_failed_run_raises_run_failed_with_the_api_message(
    temporal_client: Client, task_queue: str, workers: None
) -> None:
    handle = await enqueue_run(temporal_client, RunRequest(assistant_id="asst_missing", messages=[MessageInput(content="hi")]), task_queue=task_queue)
    with pytest.raises(RunFailedError) as caught:
        await asyncio.wait_for(handle.result(), 30)
    assert "No assistant found with id 'asst_missing'" in str(caught.value) and "\n" not in str(caught.value)
    assert "No assistant found with id 'asst_missing'" in caught.value.reason
    with pytest.raises(RunFailedError):  # and again, from a handle got later
        await asyncio.wait_for(get_run(temporal_client, handle.workflow_id).result(), 20)
    await assert_nothing_left_running(temporal_client, task_queue)


async def test_a_failing_run_leaves_no_follower_poll_behind(
    temporal_client: Client, task_queue: str, workers: None, admin: httpx.Client
) -> None:
    # The lookup of the assistant answers its 404 after 2 s: the follower is polling by then.
    admin.post("/faults", json={"operation": "assistants.retrieve", "action": "delay", "delay_seconds": 2}).raise_for_status()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # recorded, not raised: the run fails as in production
        handle = await enqueue_run(temporal_client, RunRequest(assistant_id="asst_missing", messages=[MessageInput(content="hi")]), task_queue=task_queue)
        follower = asyncio.create_task(_drain(handle))
        with pytest.raises(RunFailedError):
            await asyncio.wait_for(handle.result(), 30)
        await asyncio.wait_for(asyncio.gather(follower, return_exceptions=True), 10)
    await assert_nothing_left_running(temporal_client, task_queue)
    unfinished = [str(w.message)[:120] for w in caught if type(w.message).__name__ == "UnfinishedUpdateHandlersWarning"]
    assert not unfinished


@pytest.mark.parametrize("on_thread", [False, True], ids=["new-thread", "on-a-thread"])
async def test_the_same_request_id_with_another_request_is_a_conflict(
    temporal_client: Client, task_queue: str, workers: None, assistant_id: str, client: OpenAI, on_thread: bool
) -> None:
    thread_id = client.beta.threads.create().id if on_thread else None
    request_id = unique("req")

    def make(text: str) -> RunRequest:
        return RunRequest(assistant_id=assistant_id, thread_id=thread_id, messages=[MessageInput(content=text)], tool_choice="none")

    first = await enqueue_run(temporal_client, make("one"), request_id=request_id, task_queue=task_queue)
    with pytest.raises(IdempotencyConflictError) as caught:
        await asyncio.wait_for(enqueue_run(temporal_client, make("two"), request_id=request_id, task_queue=task_queue), 20)
    assert f"request ID '{request_id}' was already used for a different request" in str(caught.value)
    again = await enqueue_run(temporal_client, make("one"), request_id=request_id, task_queue=task_queue)
    assert again.workflow_id == first.workflow_id
    assert (await asyncio.wait_for(first.result(), 30)).final_text == "You said: one"
    await assert_nothing_left_running(temporal_client, task_queue)
    assert len(await executions(temporal_client, first.workflow_id)) == 1
