"""The HTTP gateway over real HTTP: uvicorn on loopback, the real dev server, workers and emulator."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client

from durable_assistants.gateway import Gateway, GatewayConfigError, build_app, hash_token, load_tokens, new_token, openapi_document
from durable_assistants.schemas import GATEWAY_OPENAPI, SCHEMA_DIR
from tests.apis import Api
from tests.conftest import eventually, script

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
SCOPED_TOKEN = "scoped-" + uuid.uuid4().hex
MAX_BODY = 4096


@dataclass
class Gw:
    url: str
    assistant: str  # the assistant the scoped token may use

    def client(self, token: str | None = ADMIN_TOKEN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def gateway(temporal_client: Client, task_queue: str, workers: None, api: Api) -> AsyncIterator[Gw]:
    assistant = getattr(api, "assistant_id", "asst_none")
    tokens = [
        load_tokens({"DA_GATEWAY_TOKENS": json.dumps([{"name": "ops", "sha256": hash_token(ADMIN_TOKEN), "assistants": ["*"]}])})[0],
        load_tokens({"DA_GATEWAY_TOKENS": json.dumps([{"name": "web", "sha256": hash_token(SCOPED_TOKEN), "assistants": [assistant]}])})[0],
    ]
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(Gateway(temporal_client, tokens, task_queue, MAX_BODY)), host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: asyncio.sleep(0, server.started), bool, "the gateway to start", 10)
    yield Gw(f"http://127.0.0.1:{port}", assistant)
    server.should_exit = True
    await asyncio.wait_for(serving, 10)


def body_of(api: Api, text: str, **fields: Any) -> dict[str, Any]:
    return api.request([text], **fields).model_dump(mode="json", exclude_none=True, exclude_defaults=True)


async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        answer = await http.get(f"/v1/runs/{run_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    return await eventually(probe, lambda body: body["done"], f"run {run_id} to end", 60)


async def test_a_run_enqueued_over_http_ends_with_its_result(gateway: Gw, api: Api) -> None:
    body = body_of(api, script(rounds=[[{"name": "get_weather", "arguments": {"city": "Oslo"}}]], reply="done: {outputs}"))
    async with gateway.client() as http:
        accepted = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": f"gw-{uuid.uuid4()}"})
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["id"]
        assert accepted.headers["location"] == f"/v1/runs/{run_id}"
        status = await finished(http, run_id)
    assert status["status"] == "completed" and status["result"]["final_text"].startswith("done: ")
    assert status["result"]["tool_calls"][0]["name"] == "get_weather"


async def test_the_idempotency_key_is_the_request_id(gateway: Gw, api: Api) -> None:
    key = f"gw-{uuid.uuid4()}"
    async with gateway.client() as http:
        first = await http.post("/v1/runs", json=body_of(api, "hello"), headers={"Idempotency-Key": key})
        again = await http.post("/v1/runs", json=body_of(api, "hello"), headers={"Idempotency-Key": key})
        other = await http.post("/v1/runs", json=body_of(api, "something else"), headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert first.json()["request_id"] == key
    assert other.status_code == 409 and other.json()["error"]["type"] == "idempotency_conflict"
    assert other.json()["error"]["param"] == "Idempotency-Key" and key in other.json()["error"]["message"]


async def test_events_stream_the_progress_and_resume_after_the_last_event_id(gateway: Gw, api: Api) -> None:
    calls = [{"name": "get_weather", "arguments": {"city": c}} for c in ("Oslo", "Lima")]
    body = body_of(api, script(rounds=[calls], reply="done"))
    async with gateway.client() as http:
        run_id = (await http.post("/v1/runs", json=body)).json()["id"]
        first = await read_events(http, run_id)
        middle = first[len(first) // 2]
        again = await read_events(http, run_id, headers={"Last-Event-ID": middle["id"]})
    kinds = [e["event"] for e in first]
    assert kinds[-1] == "end" and json.loads(first[-1]["data"]) == {"status": "completed"}
    assert "tool_started" in kinds and "tool_finished" in kinds
    ids = [int(e["id"]) for e in first if "id" in e]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert again == first[first.index(middle) + 1 :]  # the rest, exactly, and the end


async def read_events(http: httpx.AsyncClient, run_id: str, headers: dict[str, str] | None = None) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    async with http.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        async for line in answer.aiter_lines():
            if not line:
                if block:
                    events.append(block)
                block = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                block[field] = value
    return events


@pytest.mark.parametrize("api", ["assistants"], indirect=True)
async def test_tokens_and_assistants_decide_who_may_do_what(gateway: Gw, api: Api, temporal_client: Client) -> None:
    body = body_of(api, "hello")
    async with gateway.client(None) as nobody, gateway.client("not-a-token") as stranger, gateway.client(SCOPED_TOKEN) as web, gateway.client() as ops:
        missing = await nobody.post("/v1/runs", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"]["type"] == "unauthorized"
        assert (await stranger.get("/v1/runs")).status_code == 401
        other = await web.post("/v1/runs", json={**body, "assistant_id": "asst_someone_else"})
        assert other.status_code == 403 and other.json()["error"]["param"] == "assistant_id"
        assert "asst_someone_else" in other.json()["error"]["message"] and "'web'" in other.json()["error"]["message"]
        mine = await web.post("/v1/runs", json=body)
        assert mine.status_code == 202, mine.text
        await finished(web, mine.json()["id"])
        # A run of another assistant: as if it did not exist.
        theirs = await ops.post("/v1/runs", json={**body_of(api, "hi"), "assistant_id": await other_assistant(api)})
        await finished(ops, theirs.json()["id"])
        assert (await web.get(f"/v1/runs/{theirs.json()['id']}")).status_code == 404
        assert (await web.get("/v1/runs", params={"assistant_id": "asst_someone_else"})).status_code == 403
        listed = await eventually(lambda: web.get("/v1/runs"), lambda r: mine.json()["id"] in str(r.json()), "the run to be listed")
        assert {row["assistant_id"] for row in listed.json()["data"]} == {gateway.assistant}
        everyone = await eventually(lambda: ops.get("/v1/runs", params={"limit": 100}), lambda r: theirs.json()["id"] in str(r.json()), "both runs")
        assert mine.json()["id"] in str(everyone.json())


async def other_assistant(api: Api) -> str:
    return api.client.beta.assistants.create(model="gpt-4o", name="other").id  # type: ignore[attr-defined]


@pytest.mark.parametrize("api", ["assistants"], indirect=True)
@pytest.mark.parametrize(
    ("content", "status", "kind", "param", "fragment"),
    [
        (b"{not json", 400, "invalid_json", None, "not JSON"),
        (b"[1, 2]", 400, "invalid_request", None, "a JSON object"),
        (json.dumps({"messages": [{"content": 5}]}).encode(), 400, "invalid_request", "messages.0.content", "messages.0.content"),
        (json.dumps({"mesages": []}).encode(), 400, "invalid_request", "mesages", "mesages"),
        (b'{"messages": [{"content": "' + b"x" * MAX_BODY + b'"}]}', 413, "request_too_large", None, str(MAX_BODY)),
    ],
)
async def test_bad_requests_get_json_errors_that_name_the_field(
    gateway: Gw, api: Api, content: bytes, status: int, kind: str, param: str | None, fragment: str
) -> None:
    async with gateway.client() as http:
        answer = await http.post("/v1/runs", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == (kind, param) and fragment in error["message"]


@pytest.mark.parametrize("api", ["assistants"], indirect=True)
async def test_cancel_over_http(gateway: Gw, api: Api) -> None:
    body = body_of(api, script(rounds=[[{"name": "slow", "arguments": {"seconds": 30, "marker": ""}}]], reply="never"))
    async with gateway.client() as http:
        run_id = (await http.post("/v1/runs", json=body)).json()["id"]
        await eventually(lambda: http.get(f"/v1/runs/{run_id}"), lambda r: r.json()["status"] == "requires_action", "the tool round")
        cancel = await http.post(f"/v1/runs/{run_id}/cancel")
        assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
        status = await finished(http, run_id)
        assert status["status"] == "cancelled"
        again = await http.post(f"/v1/runs/{run_id}/cancel")
        assert again.status_code == 409 and again.json()["error"]["type"] == "run_ended"
        unknown = await http.get("/v1/runs/assistant-run%2Fnope")
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "id"
        route = await http.get("/v2/nothing")
        assert route.status_code == 404 and route.json()["error"]["type"] == "not_found"
        served = await http.get("/openapi.json")
    assert served.json() == openapi_document()


def test_the_committed_openapi_document_is_current() -> None:
    committed = json.loads((SCHEMA_DIR / GATEWAY_OPENAPI).read_text())
    assert committed == openapi_document(), "run: python -m durable_assistants.schemas"
    assert {"/v1/runs", "/v1/runs/{id}", "/v1/runs/{id}/cancel", "/v1/runs/{id}/events"} == set(committed["paths"])
    assert "RunRequest" in committed["components"]["schemas"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no tokens: set DA_GATEWAY_TOKENS"),
        ({"DA_GATEWAY_TOKENS": "[]"}, "holds no token"),
        ({"DA_GATEWAY_TOKENS": '[{"name": "a", "sha256": "abc", "assistants": ["*"]}]'}, "[0.sha256] String should match pattern"),
        ({"DA_GATEWAY_TOKENS": '[{"name": "a", "sha256": "' + "0" * 64 + '", "assistants": []}]'}, "[0.assistants]"),
        ({"DA_GATEWAY_TOKENS_FILE": "/nonexistent/tokens.json"}, "DA_GATEWAY_TOKENS_FILE=/nonexistent/tokens.json: cannot read it"),
    ],
)
def test_a_token_configuration_that_cannot_be_used_says_why(environ: dict[str, str], message: str) -> None:
    with pytest.raises(GatewayConfigError) as caught:
        load_tokens(environ)
    assert message in str(caught.value)


def test_a_new_token_is_stored_only_as_its_hash(tmp_path: Path) -> None:
    text, entry = new_token("web", ["asst_1"])
    assert text not in entry.model_dump_json() and entry.sha256 == hash_token(text)
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([entry.model_dump()]))
    [loaded] = load_tokens({"DA_GATEWAY_TOKENS_FILE": str(path)})
    assert loaded.allows("asst_1") and not loaded.allows("asst_2") and not loaded.allows(None)
