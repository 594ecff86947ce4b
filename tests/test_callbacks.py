"""Completion callbacks: a receiver on loopback, a real dev server, workers (in process, or a
subprocess killed during delivery), the emulator."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from durable_assistants import enqueue_run
from durable_assistants.activities.callbacks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.render import describe_callback
from durable_assistants.workflows.models import Callback
from tests.apis import Api
from tests.conftest import eventually, script
from tests.test_worker_lifecycle import KilledWorker

SECRET = "s3cret-" + uuid.uuid4().hex


@dataclass
class Post:
    headers: dict[str, str]
    body: str
    answered: int


@dataclass
class Receiver:
    """Answers each POST with the next status of ``plan`` (then 200); ``"hold"`` keeps the
    request open ``hold_seconds`` and then answers 500."""

    url: str = ""
    plan: list[int | str] = field(default_factory=list)
    hold_seconds: float = 30.0
    posts: list[Post] = field(default_factory=list)
    arrived: int = 0

    async def endpoint(self, request: Request) -> Response:
        body = (await request.body()).decode()
        self.arrived += 1
        step = self.plan.pop(0) if self.plan else 200
        if step == "hold":
            await asyncio.sleep(self.hold_seconds)
            step = 500
        assert isinstance(step, int)
        self.posts.append(Post(dict(request.headers), body, step))
        return JSONResponse({"ok": step < 300}, status_code=step)

    def accepted(self) -> list[Post]:
        return [p for p in self.posts if 200 <= p.answered < 300]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = Starlette(routes=[Route("/hook", found.endpoint, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: asyncio.sleep(0, server.started), bool, "the receiver to start", 10)
    found.url = f"http://127.0.0.1:{port}/hook"
    yield found
    server.should_exit = True
    server.force_exit = True  # a held request does not keep the test waiting
    await asyncio.wait_for(serving, 10)


def with_callback(api: Api, text: str, url: str, max_seconds: float = 60) -> Any:
    # A plain message gets a plain reply (the test assistant has every tool; "none" keeps them out).
    fields = {} if "@emulator" in text else {"tool_choice": "none"}
    return api.request([text], callback=Callback(url=url, secret=SECRET, max_seconds=max_seconds), **fields)


async def test_the_result_is_posted_signed_and_retried_until_the_receiver_takes_it(
    api: Api, temporal_client: Client, task_queue: str, workers: None, receiver: Receiver
) -> None:
    receiver.plan = [500, 500]
    request = with_callback(api, script(rounds=[[{"name": "get_weather", "arguments": {"city": "Oslo"}}]], reply="done: {outputs}"), receiver.url)
    handle = await enqueue_run(temporal_client, request, request_id=f"cb-{uuid.uuid4()}", task_queue=task_queue)
    result = await handle.result()

    assert result.status == "completed" and result.callback is not None
    delivery = result.callback
    assert delivery.delivered and delivery.attempts == 3 and [a.status for a in delivery.last_attempts] == [500, 500, 200]
    assert describe_callback(delivery) == f"delivered to {receiver.url} (3 attempts)"
    assert [p.answered for p in receiver.posts] == [500, 500, 200]
    assert {p.headers[DELIVERY_HEADER.lower()] for p in receiver.posts} == {delivery.delivery_id} == {f"{handle.workflow_id}/callback"}
    for post in receiver.posts:
        assert post.body == receiver.posts[0].body  # the same event, signed afresh each time
        assert verify(SECRET, post.headers[SIGNATURE_HEADER.lower()], post.body)
        assert not verify("a-wrong-secret-0123456789", post.headers[SIGNATURE_HEADER.lower()], post.body)
        assert not verify(SECRET, post.headers[SIGNATURE_HEADER.lower()], post.body + " ")  # tampered
        assert post.headers[EVENT_HEADER.lower()] == "run.completed"
    event = json.loads(receiver.posts[-1].body)
    assert (event["type"], event["workflow_id"], event["error"]) == ("run.completed", handle.workflow_id, None)
    assert event["result"]["final_text"] == result.final_text and event["result"]["status"] == "completed"


@pytest.mark.parametrize("api", ["assistants"], indirect=True)
async def test_a_callback_that_never_succeeds_does_not_change_the_outcome(
    api: Api, temporal_client: Client, task_queue: str, workers: None, receiver: Receiver
) -> None:
    receiver.plan = [503] * 100
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"  # bound, never listening: refused
    try:
        # 6 s: long enough for the snapshot below to catch the delivery under way.
        refused = await enqueue_run(temporal_client, with_callback(api, "hello", receiver.url, max_seconds=6), task_queue=task_queue)
        unreachable = await enqueue_run(temporal_client, with_callback(api, "hello", nowhere, max_seconds=2.5), task_queue=task_queue)
        # While it delivers, the snapshot says so (the run has ended; its workflow has not).
        during = await eventually(refused.status, lambda s: getattr(s, "callback", None) is not None, "the delivery under way", 10)
        assert during.callback.url == receiver.url and not during.callback.delivered
        assert describe_callback(during.callback).startswith(f"delivering to {receiver.url} (")
        first, second = await asyncio.gather(refused.result(), unreachable.result())
    finally:
        closed.close()
    for result, budget in ((first, "6"), (second, "2.5")):
        assert result.status == "completed" and result.final_text == "You said: hello"
        assert result.callback is not None and not result.callback.delivered and result.callback.attempts >= 2
        assert result.callback.gave_up is not None and f"within {budget} s" in result.callback.gave_up
    assert {a.status for a in first.callback.last_attempts} == {503}  # type: ignore[union-attr]
    assert all(a.status is None and a.error and "Connect" in a.error for a in second.callback.last_attempts)  # type: ignore[union-attr]
    assert "not delivered" in describe_callback(first.callback) and "503" in describe_callback(first.callback)  # type: ignore[arg-type]


@pytest.mark.parametrize("api", ["assistants"], indirect=True)
async def test_failed_and_cancelled_runs_call_back_too(
    api: Api, temporal_client: Client, task_queue: str, workers: None, receiver: Receiver
) -> None:
    failed = await enqueue_run(temporal_client, with_callback(api, script(end="failed", error_code="server_error"), receiver.url), task_queue=task_queue)
    slow = script(rounds=[[{"name": "slow", "arguments": {"seconds": 30, "marker": ""}}]], reply="never")
    cancelled = await enqueue_run(temporal_client, with_callback(api, slow, receiver.url), task_queue=task_queue)
    await eventually(cancelled.status, lambda s: getattr(s, "status", None) == "requires_action", "the slow tool")
    await cancelled.cancel()
    outcomes = {(await failed.result()).status, (await cancelled.result()).status}
    assert outcomes == {"failed", "cancelled"}
    await eventually(lambda: asyncio.sleep(0, len(receiver.accepted())), lambda n: n == 2, "both callbacks")
    events = {json.loads(p.body)["workflow_id"]: json.loads(p.body) for p in receiver.accepted()}
    assert events[failed.workflow_id]["type"] == "run.failed" and events[failed.workflow_id]["result"]["status"] == "failed"
    assert events[cancelled.workflow_id]["type"] == "run.cancelled"
    assert (await cancelled.result()).callback.delivered  # type: ignore[union-attr]


@pytest.mark.parametrize("api", ["assistants"], indirect=True)
async def test_a_worker_killed_during_delivery_leaves_one_delivery(
    api: Api, temporal_client: Client, temporal_server: TemporalDevServer, emulator: Any, task_queue: str, receiver: Receiver, tmp_path: Path
) -> None:
    """500 twice, then a POST held open while its worker is SIGKILLed: the next worker's
    attempt is taken, once, with the same delivery ID."""
    receiver.plan = [500, 500, "hold"]
    receiver.hold_seconds = 20
    log = tmp_path / "workers.log"
    with KilledWorker(temporal_server, emulator, task_queue, log, api.name) as workers:
        handle = await enqueue_run(temporal_client, with_callback(api, "hello", receiver.url), request_id=f"cb-kill-{uuid.uuid4()}", task_queue=task_queue)
        await eventually(lambda: asyncio.sleep(0, receiver.arrived), lambda n: n == 3, "the third attempt to arrive", 60)
        workers.kill_and_replace()
        result = await asyncio.wait_for(handle.result(), 90)
    assert result.status == "completed" and result.callback is not None and result.callback.delivered, log.read_text()[-2000:]
    assert result.callback.attempts == 4
    assert "timed out" in (result.callback.last_attempts[2].error or "")  # the attempt the kill cut
    [taken] = receiver.accepted()
    assert {p.headers[DELIVERY_HEADER.lower()] for p in receiver.posts} == {result.callback.delivery_id}
    assert verify(SECRET, taken.headers[SIGNATURE_HEADER.lower()], taken.body)


def test_a_bad_callback_is_refused_with_the_field_named() -> None:
    from pydantic import ValidationError

    from durable_assistants.workflows.models import RunRequest

    for bad, fragment in (({"url": "ftp://x/hook", "secret": SECRET}, "callback.url"), ({"url": "https://x/hook", "secret": "short"}, "callback.secret")):
        with pytest.raises(ValidationError) as caught:
            RunRequest(assistant_id="asst_1", callback=bad)
        assert fragment in str(caught.value)
