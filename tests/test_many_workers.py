"""Several worker processes against one Temporal server, as replicas of a Deployment run:
the runs spread over all of them, one is killed mid-round, the others finish its runs, and
nothing reaches the model API twice. And which workers the server lists for a task queue of
several partitions."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from openai import OpenAI
from temporalio.api.enums.v1 import DescribeTaskQueueMode
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueueTypeInfo, TaskQueueVersionInfo
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, DescribeTaskQueueResponse
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from durable_assistants import enqueue_run
from durable_assistants.client import has_pollers, pollers
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.processes import stop_process
from tests.apis import AssistantsApi, Seen
from tests.conftest import script
from tests.test_worker_lifecycle import spawn_worker

RUNS = 12


def tools_started(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "tool started":
            found.append(entry)
    return found


def attempts_written(folder: Path) -> set[str]:
    """The call IDs whose slow tool has written an attempt to its marker file."""
    return {line.split()[0].rpartition(":")[2] for marker in folder.glob("slow-*") for line in marker.read_text().splitlines() if line}


async def test_three_workers_share_the_runs_and_finish_those_of_one_that_is_killed(
    temporal_server: TemporalDevServer, temporal_client: Client, emulator: Any, task_queue: str, admin: httpx.Client, client: OpenAI, tmp_path: Path
) -> None:
    api = AssistantsApi(client)
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    workers = [spawn_worker(temporal_server, emulator, task_queue, log) for log in logs]
    try:
        # All three poll before the runs come (a worker still starting would get none of them).
        deadline = time.monotonic() + 60
        while len({p.identity for p in await pollers(temporal_client, task_queue)}) < 3:
            assert time.monotonic() < deadline, "the three workers did not all poll"
            await asyncio.sleep(0.2)
        handles = []
        for i in range(RUNS):
            marker = tmp_path / f"slow-{i}"
            rounds = [[{"name": "slow", "arguments": {"seconds": 3, "marker": str(marker)}}, {"name": "structured", "arguments": {"n": i}}],
                      [{"name": "structured", "arguments": {"n": 1}}]]
            handles.append(await enqueue_run(temporal_client, api.request([script(rounds=rounds, reply=f"done {i}")]), task_queue=task_queue))
        # Kill a worker while a slow tool runs on it (mid-round). A round's tools start on the
        # worker that ran the workflow task (eager), so wait for one that has one, and whose
        # tool has written its attempt (a kill between "tool started" and the write leaves
        # no trace of the first attempt: seen in CI).
        deadline = time.monotonic() + 60
        while not (busy := [i for i, log in enumerate(logs) if any(e["tool"] == "slow" and e["call_id"] in attempts_written(tmp_path) for e in tools_started(log))]):
            assert time.monotonic() < deadline, "no slow tool started"
            await asyncio.sleep(0.1)
        killed = busy[0]
        workers[killed].send_signal(signal.SIGKILL)
        workers[killed].wait()
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 180)
    finally:
        codes = [stop_process(w) for w in workers]

    assert [r.status for r in results] == ["completed"] * RUNS
    assert [r.final_text for r in results] == [f"done {i}" for i in range(RUNS)]
    assert [c for i, c in enumerate(codes) if i != killed] == [0, 0]  # the survivors stop cleanly on SIGTERM
    # Every worker ran tools; the survivors ran again what the killed one had under way.
    per_worker = [{e["workflow_id"] for e in tools_started(log)} for log in logs]
    assert all(per_worker), [len(w) for w in per_worker]
    survivors_slow = {e["workflow_id"] for i, log in enumerate(logs) if i != killed for e in tools_started(log) if e["tool"] == "slow"}
    # Nothing duplicated: per thread, one API run, one user message, two rounds submitted.
    stats = admin.get("/stats").json()
    assert all(api.seen(stats, r) == Seen(turns_created=1, user_messages=1, rounds_submitted=2) for r in results), [
        api.seen(stats, r) for r in results
    ]
    # Each run's slow tool ran once, or once more on a survivor when the kill cut it short
    # (with the same idempotency key); the kill cut at least one.
    again = 0
    for i, (handle, _result) in enumerate(zip(handles, results, strict=True)):
        attempts = (tmp_path / f"slow-{i}").read_text().splitlines()
        assert 1 <= len(attempts) <= 2 and len({a.split()[0] for a in attempts}) == 1, attempts
        if len(attempts) == 2:
            again += 1
            assert handle.workflow_id in survivors_slow
    assert again >= 1


class _Service:
    """A workflow service that answers DescribeTaskQueue as a server with partitions does:
    the plain request from the root partition, the enhanced one from all (or refuses it)."""

    def __init__(self, root: list[PollerInfo], everywhere: list[PollerInfo] | RPCStatusCode) -> None:
        self.root, self.everywhere = root, everywhere

    async def describe_task_queue(self, request: DescribeTaskQueueRequest, timeout: Any = None) -> DescribeTaskQueueResponse:
        if request.api_mode != DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED:
            return DescribeTaskQueueResponse(pollers=self.root)
        if isinstance(self.everywhere, RPCStatusCode):
            raise RPCError("refused", self.everywhere, b"")
        types = {int(request.task_queue_types[0]): TaskQueueTypeInfo(pollers=self.everywhere)}
        return DescribeTaskQueueResponse(versions_info={"": TaskQueueVersionInfo(types_info=types)})


def _poller(identity: str, seconds: int) -> PollerInfo:
    return PollerInfo(identity=identity, last_access_time=Timestamp(seconds=seconds))


async def test_pollers_include_workers_the_root_partition_has_not_seen() -> None:
    # The CI failure this guards: the third replica polled another partition only, and the
    # root partition's view missed it for a minute.
    client = SimpleNamespace(namespace="default", workflow_service=_Service(
        root=[_poller("a@host", 10), _poller("b@host", 10)],
        everywhere=[_poller("b@host", 12), _poller("c@host", 11)],
    ))
    found = await pollers(client, "q")  # type: ignore[arg-type]
    assert {p.identity: p.last_access_time.seconds for p in found} == {"a@host": 10, "b@host": 12, "c@host": 11}
    assert await has_pollers(client, "q")  # type: ignore[arg-type]
    client.workflow_service = _Service(root=[], everywhere=[_poller("c@host", 11)])
    assert await has_pollers(client, "q")  # type: ignore[arg-type]
    client.workflow_service = _Service(root=[], everywhere=[])
    assert not await has_pollers(client, "q")  # type: ignore[arg-type]
    # A server that refuses the enhanced mode (deprecated in the API), or does not answer it
    # in time, leaves the root's view.
    for refusal in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.DEADLINE_EXCEEDED):
        client.workflow_service = _Service(root=[_poller("a@host", 10)], everywhere=refusal)
        assert [p.identity for p in await pollers(client, "q", "activity")] == ["a@host"]  # type: ignore[arg-type]
        assert await has_pollers(client, "q")  # type: ignore[arg-type]
