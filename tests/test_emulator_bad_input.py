"""Bad input never gets a 500 or a traceback: always a 4xx with OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``, and the server keeps serving.

Raw ``httpx`` sends what the SDK refuses to (broken JSON, wrong types); the SDK sends the
rest. Also here: the ``--api-key`` check and the command line (exit codes, signals).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from durable_assistants.emulator.server import READY_LINE, EmulatorProcess
from tests.openapi_spec import validate_schema

ERROR_FIELDS = {"message", "type", "param", "code"}
ANY = object()


def assert_openai_error(
    response: httpx.Response,
    status: int,
    *,
    code: Any = ANY,
    param: Any = ANY,
    fragments: tuple[str, ...] = (),
    message: str | None = None,
) -> dict[str, Any]:
    """A JSON error with OpenAI's envelope, the given status, and the given details."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    validate_schema("ErrorResponse", body)
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    if code is not ANY:
        assert error["code"] == code, error
    if param is not ANY:
        assert error["param"] == param, error
    if message is not None:
        assert error["message"] == message
    for fragment in fragments:
        assert fragment in error["message"], error
    return error


@pytest.fixture(scope="module")
def _raw_http(emulator: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, timeout=10, headers={"Authorization": "Bearer sk-test"}) as client:
        yield client


@pytest.fixture
def http(_raw_http: httpx.Client, admin: httpx.Client) -> httpx.Client:
    """Raw HTTP on ``/v1``; ``admin`` resets the emulator after the test."""
    return _raw_http


class Objects:
    """IDs to put in request paths, created on first use: ``{assistant}``, ``{thread}``,
    ``{message}``, ``{run}`` (a completed run on ``{thread}``), ``{step}``."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.ids: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.ids:
            getattr(self, f"_make_{name}")()
        return self.ids[name]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def _make_assistant(self) -> None:
        self.ids["assistant"] = self._post("/assistants", {"model": "gpt-4o"})["id"]

    def _make_thread(self) -> None:
        thread = self._post("/threads", {"messages": [{"role": "user", "content": "hi"}]})
        self.ids["thread"] = thread["id"]
        self.ids["message"] = self.http.get(f"/threads/{thread['id']}/messages").json()["data"][0]["id"]

    _make_message = _make_thread

    def _make_run(self) -> None:
        run = self._post(f"/threads/{self['thread']}/runs", {"assistant_id": self["assistant"]})
        deadline = time.monotonic() + 10
        while run["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
            time.sleep(0.01)
            run = self.http.get(f"/threads/{run['thread_id']}/runs/{run['id']}").json()
        assert run["status"] == "completed", run
        self.ids["run"] = run["id"]
        self.ids["step"] = self.http.get(f"/threads/{run['thread_id']}/runs/{run['id']}/steps").json()["data"][0]["id"]

    _make_step = _make_run

    def fill(self, value: Any) -> Any:
        """``value`` with every ``{name}`` placeholder in its strings replaced by an ID."""
        if isinstance(value, str):
            for name in ("assistant", "thread", "message", "run", "step"):
                if "{" + name + "}" in value:
                    value = value.replace("{" + name + "}", self[name])
            return value
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


@pytest.fixture
def objects(http: httpx.Client) -> Objects:
    return Objects(http)


def send(http: httpx.Client, objects: Objects, method: str, path: str, body: Any = None) -> httpx.Response:
    """``body``: bytes are sent as they are, anything else as JSON."""
    path = objects.fill(path)
    if isinstance(body, bytes):
        return http.request(method, path, content=body, headers={"content-type": "application/json"})
    return http.request(method, path, json=objects.fill(body) if body is not None else None)


# ---------------------------------------------------------------------------- request bodies

TOOL = {"type": "function", "function": {"name": "ok_name", "parameters": {"type": "object", "properties": {}}}}

# (method, path, body, code, param, message fragments)
BODY_CASES = [
    pytest.param("POST", "/assistants", b'{"model":', None, None, ["could not parse the JSON body"], id="malformed-json"),
    pytest.param("POST", "/threads/{thread}/messages", b"{'role': 'user'}", None, None, ["not valid JSON"], id="single-quoted-json"),
    pytest.param("POST", "/assistants", b"\xff\xfe\x00", None, None, ["could not parse the JSON body"], id="not-utf8"),
    pytest.param("POST", "/assistants", b"[1, 2]", "invalid_type", None, ["expected a JSON object", "an array"], id="array-body"),
    pytest.param("POST", "/threads", b'"thread"', "invalid_type", None, ["expected a JSON object", "a string"], id="string-body"),
    pytest.param("POST", "/threads", b"null", "invalid_type", None, ["expected a JSON object", "null"], id="null-body"),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "temperature": "hot"}, "invalid_type", "temperature", ["'hot'"], id="temperature-string"),
    pytest.param("POST", "/assistants", {"model": 5}, "invalid_type", "model", ["valid string", "5"], id="model-int"),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "metadata": "x"}, "invalid_type", "metadata", ["'x'"], id="metadata-string"),
    pytest.param("POST", "/threads", {"metadata": {"k": 5}}, "invalid_type", "metadata.k", ["valid string"], id="metadata-value-int"),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "tools": "add"}, "invalid_type", ANY, ["tools"], id="tools-string"),
    pytest.param("POST", "/threads/{thread}/messages", {"role": "robot", "content": "x"}, "invalid_value", "role", ["'robot'"], id="bad-role"),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "colour": "red"}, "unknown_parameter", "colour", ["colour"], id="unknown-field"),
    pytest.param(
        "POST", "/threads/{thread}/runs", {"assistant_id": "{assistant}", "priority": "high"},
        "unknown_parameter", "priority", ["Unrecognized request argument supplied: priority"], id="unknown-field-run",
    ),
    pytest.param(
        "POST", "/threads/{thread}/runs/{run}/submit_tool_outputs", {"tool_outputs": [], "thread_id": "{thread}"},
        "unknown_parameter", "thread_id", ["thread_id"], id="path-param-in-body",
    ),
    pytest.param(
        "POST", "/threads/{thread}/runs", {}, "missing_required_parameter", "assistant_id",
        ["Missing required parameter: 'assistant_id'."], id="missing-assistant-id",
    ),
    pytest.param("POST", "/assistants", {}, "missing_required_parameter", "model", ["'model'"], id="missing-model"),
    pytest.param(
        "POST", "/threads/{thread}/messages", {"role": "user"}, "missing_required_parameter", "content", ["'content'"],
        id="missing-content",
    ),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "tools": [{"type": "nope"}]}, "invalid_value", "tools[0].type", ["'nope'"], id="tool-type-nope"),
    pytest.param(
        "POST", "/assistants", {"model": "gpt-4o", "tools": [{"type": "function", "function": {"description": "no name"}}]},
        "missing_required_parameter", "tools[0].function.name", ["'tools[0].function.name'"], id="function-without-name",
    ),
    pytest.param(
        "POST", "/assistants", {"model": "gpt-4o", "tools": [TOOL, {"type": "function", "function": {"name": "get the weather"}}]},
        "invalid_value", "tools[1].function.name", ["'get the weather'", "^[a-zA-Z0-9_-]{1,64}$"], id="function-name-with-spaces",
    ),
    pytest.param(
        "POST", "/threads/{thread}/runs", {"assistant_id": "{assistant}", "tools": [{"type": "function", "function": {"name": "x" * 65}}]},
        "invalid_value", "tools[0].function.name", ["'" + "x" * 65 + "'"], id="function-name-too-long-on-run",
    ),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "temperature": 3}, "decimal_above_max_value", "temperature", ["<= 2", "3"], id="temperature-3"),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "temperature": -0.1}, "decimal_below_min_value", "temperature", [">= 0", "-0.1"], id="temperature-negative"),
    pytest.param("POST", "/assistants", {"model": "gpt-4o", "top_p": 2}, "decimal_above_max_value", "top_p", ["<= 1", "2"], id="top-p-2"),
    pytest.param(
        "POST", "/threads/{thread}/runs", {"assistant_id": "{assistant}", "top_p": 2}, "decimal_above_max_value", "top_p", ["<= 1"],
        id="top-p-2-on-run",
    ),
    pytest.param(
        "POST", "/threads/runs", {"assistant_id": "{assistant}", "temperature": 3}, "decimal_above_max_value", "temperature", ["<= 2"],
        id="temperature-3-on-create-and-run",
    ),
    pytest.param(
        "POST", "/threads", {"metadata": {f"k{i}": "v" for i in range(17)}}, "object_above_max_properties", "metadata",
        ["at most 16 properties", "17 properties"], id="metadata-17-pairs",
    ),
    pytest.param(
        "POST", "/assistants", {"model": "gpt-4o", "metadata": {"k" * 65: "v"}}, "string_above_max_length", ANY,
        ["at most 64 characters", "65 characters"], id="metadata-key-65",
    ),
    pytest.param(
        "POST", "/threads/{thread}/messages", {"role": "user", "content": "x", "metadata": {"k": "v" * 513}},
        "string_above_max_length", "metadata.k", ["maximum length 512", "length 513"], id="metadata-value-513",
    ),
    pytest.param(
        "POST", "/threads/{thread}/messages", {"role": "user", "content": ""}, "string_too_short", "content",
        ["minimum length 1", "empty string"], id="empty-content",
    ),
    pytest.param(
        "POST", "/threads/{thread}/messages", {"role": "user", "content": []}, "empty_array", "content", ["empty array"],
        id="empty-content-array",
    ),
    pytest.param(
        "POST", "/threads/{thread}/messages", {"role": "user", "content": [{"type": "text", "text": ""}]}, ANY, "content[0].text", [],
        id="empty-text-part",
    ),
    pytest.param(
        "POST", "/threads/{thread}/messages", {"role": "user", "content": [{"type": "text"}]}, "missing_required_parameter",
        "content[0].text", ["'content[0].text'"], id="text-part-without-text",
    ),
    pytest.param(
        "POST", "/threads", {"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": ""}]},
        "string_too_short", "messages[1].content", ["'messages[1].content'"], id="empty-content-in-thread",
    ),
    pytest.param(
        "POST", "/threads/{thread}/runs", {"assistant_id": "{assistant}", "additional_messages": [{"role": "user", "content": ""}]},
        "string_too_short", "additional_messages[0].content", ["'additional_messages[0].content'"], id="empty-additional-message",
    ),
    pytest.param(
        # The spec says >= 256; OpenAI took less (docs/emulator.md), but not 0.
        "POST", "/threads/{thread}/runs", {"assistant_id": "{assistant}", "max_completion_tokens": 0},
        "integer_below_min_value", "max_completion_tokens", [">= 1", "0"], id="max-completion-tokens-0",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "code", "param", "fragments"), BODY_CASES)
def test_bad_body_is_a_400(
    http: httpx.Client, objects: Objects, method: str, path: str, body: Any, code: Any, param: Any, fragments: list[str]
) -> None:
    response = send(http, objects, method, path, body)
    error = assert_openai_error(response, 400, code=code, param=param, fragments=tuple(fragments))
    if param is ANY and code == "string_above_max_length":
        assert error["param"].startswith("metadata.")


# JSON that parses in Python but that no OpenAI server accepted: nesting deeper than any
# parser allows, and lone UTF-16 surrogates (``\ud800``), which have no UTF-8 encoding.
HOSTILE_BODIES = [
    pytest.param("/assistants", b'{"model": "gpt-4o", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "/assistants", id="nested-100000-deep"),
    pytest.param("/assistants", b'{"model": "gpt-4o", "name": "bad \\ud800"}', "/assistants", id="surrogate-in-name"),
    pytest.param("/threads/{thread}/messages", b'{"role": "user", "content": "hi \\udfff"}', "/threads/{thread}/messages", id="surrogate-in-content"),
    pytest.param("/threads", b'{"metadata": {"k": "\\ud83d"}}', None, id="surrogate-in-metadata"),
]


@pytest.mark.parametrize(("path", "body", "list_path"), HOSTILE_BODIES)
def test_hostile_json_is_a_400_and_leaves_nothing_behind(
    http: httpx.Client, objects: Objects, admin: httpx.Client, path: str, body: bytes, list_path: str | None
) -> None:
    objects.fill(path)  # create the thread before counting
    before = admin.get("/health").json()
    response = send(http, objects, "POST", path, body)
    # First the worse failure: something unrenderable was stored and breaks later reads.
    if list_path is not None:
        listed = send(http, objects, "GET", list_path)
        assert listed.status_code == 200, f"GET {list_path} after the bad body: {listed.status_code} {listed.text[:200]}"
    assert admin.get("/health").json() == before
    assert_openai_error(response, 400)


def test_bad_body_creates_nothing(http: httpx.Client, objects: Objects, admin: httpx.Client) -> None:
    before = admin.get("/health").json()
    for body in (
        {"messages": [{"role": "user", "content": "fine"}, {"role": "user", "content": ""}]},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"messages": [{"role": "user", "content": "fine"}], "colour": "red"},
    ):
        assert_openai_error(send(http, objects, "POST", "/threads", body), 400)
    assert admin.get("/health").json() == before
    assert admin.get("/stats").json()["threads"] == {}


# ---------------------------------------------------------------------------- list queries

LIST_PATHS = ["/assistants", "/threads/{thread}/messages", "/threads/{thread}/runs", "/threads/{thread}/runs/{run}/steps"]


BAD_QUERIES = [("limit=0", "limit", "'0'"), ("limit=101", "limit", "'101'"), ("limit=ten", "limit", "'ten'"), ("order=sideways", "order", "'sideways'")]


@pytest.mark.parametrize("path", LIST_PATHS, ids=["assistants", "messages", "runs", "steps"])
def test_bad_list_query_is_a_400(http: httpx.Client, objects: Objects, path: str) -> None:
    failures = []
    for query, param, fragment in BAD_QUERIES:
        response = send(http, objects, "GET", f"{path}?{query}")
        try:
            assert_openai_error(response, 400, code="invalid_value", param=param, fragments=(fragment,))
        except AssertionError as exc:
            failures.append(f"?{query}: {exc}")
    assert not failures, "\n".join(failures)


def test_list_limits_at_the_edges_are_accepted(http: httpx.Client, objects: Objects) -> None:
    for query in ("limit=1", "limit=100", "order=asc", "order=desc"):
        response = send(http, objects, "GET", f"/threads/{{thread}}/messages?{query}")
        assert response.status_code == 200 and response.json()["object"] == "list"


# ---------------------------------------------------------------------------- unknown IDs

NOT_FOUND_CASES = [
    pytest.param("GET", "/assistants/asst_nope", None, "No assistant found with id 'asst_nope'.", id="assistant"),
    pytest.param("POST", "/assistants/asst_nope", {"name": "x"}, "No assistant found with id 'asst_nope'.", id="assistant-update"),
    pytest.param("DELETE", "/assistants/asst_nope", None, "No assistant found with id 'asst_nope'.", id="assistant-delete"),
    pytest.param("GET", "/threads/thread_nope", None, "No thread found with id 'thread_nope'.", id="thread"),
    pytest.param("DELETE", "/threads/thread_nope", None, "No thread found with id 'thread_nope'.", id="thread-delete"),
    pytest.param("GET", "/threads/thread_nope/messages", None, "No thread found with id 'thread_nope'.", id="thread-of-messages"),
    pytest.param(
        "POST", "/threads/thread_nope/messages", {"role": "user", "content": "x"}, "No thread found with id 'thread_nope'.",
        id="thread-of-message-create",
    ),
    pytest.param("GET", "/threads/{thread}/messages/msg_nope", None, "No message found with id 'msg_nope'.", id="message"),
    pytest.param("DELETE", "/threads/{thread}/messages/msg_nope", None, "No message found with id 'msg_nope'.", id="message-delete"),
    pytest.param("GET", "/threads/thread_nope/messages/{message}", None, "No thread found with id 'thread_nope'.", id="message-on-unknown-thread"),
    pytest.param("GET", "/threads/{thread}/runs/run_nope", None, "No run found with id 'run_nope'.", id="run"),
    pytest.param("POST", "/threads/{thread}/runs/run_nope/cancel", None, "No run found with id 'run_nope'.", id="run-cancel"),
    pytest.param(
        "POST", "/threads/{thread}/runs/run_nope/submit_tool_outputs", {"tool_outputs": []}, "No run found with id 'run_nope'.",
        id="run-submit",
    ),
    pytest.param("GET", "/threads/{thread}/runs/run_nope/steps", None, "No run found with id 'run_nope'.", id="run-of-steps"),
    pytest.param("GET", "/threads/{thread}/runs/{run}/steps/step_nope", None, "No run step found with id 'step_nope'.", id="step"),
    pytest.param(
        "POST", "/threads/{thread}/runs", {"assistant_id": "asst_nope"}, "No assistant found with id 'asst_nope'.",
        id="run-with-unknown-assistant",
    ),
    pytest.param(
        "POST", "/threads/runs", {"assistant_id": "asst_nope", "thread": {"messages": [{"role": "user", "content": "x"}]}},
        "No assistant found with id 'asst_nope'.", id="create-and-run-with-unknown-assistant",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), NOT_FOUND_CASES)
def test_unknown_id_is_a_404(http: httpx.Client, objects: Objects, method: str, path: str, body: Any, message: str) -> None:
    assert_openai_error(send(http, objects, method, path, body), 404, code=None, param=None, message=message)


def test_run_of_another_thread_is_not_found(http: httpx.Client, objects: Objects) -> None:
    other = http.post("/threads", json={}).json()["id"]
    response = send(http, objects, "GET", f"/threads/{other}/runs/{{run}}")
    assert_openai_error(response, 404, message=f"No run found with id '{objects['run']}'.")


def test_unknown_assistant_creates_no_thread(http: httpx.Client, objects: Objects, admin: httpx.Client) -> None:
    body = {"assistant_id": "asst_nope", "thread": {"messages": [{"role": "user", "content": "x"}]}}
    assert_openai_error(send(http, objects, "POST", "/threads/runs", body), 404)
    assert admin.get("/health").json()["threads"] == 0


# ---------------------------------------------------------------------------- the SDK sends these


SDK_CASES: list[Any] = [
    pytest.param(
        lambda c, o: c.beta.assistants.create(model="gpt-4o", temperature=3), openai.BadRequestError, "temperature", "decimal_above_max_value",
        id="temperature-3",
    ),
    pytest.param(
        lambda c, o: c.beta.threads.runs.create(thread_id=o["thread"], assistant_id=o["assistant"], top_p=2),
        openai.BadRequestError, "top_p", "decimal_above_max_value", id="top-p-2-on-run",
    ),
    pytest.param(
        lambda c, o: c.beta.assistants.create(model="gpt-4o", extra_body={"colour": "red"}), openai.BadRequestError, "colour",
        "unknown_parameter", id="unknown-field",
    ),
    pytest.param(
        lambda c, o: c.beta.threads.messages.list(thread_id=o["thread"], limit=0), openai.BadRequestError, "limit", "invalid_value",
        id="limit-0",
    ),
    pytest.param(
        lambda c, o: c.beta.threads.runs.list(thread_id=o["thread"], order="sideways"), openai.BadRequestError, "order",
        "invalid_value", id="order-sideways",
    ),
    pytest.param(
        lambda c, o: c.beta.threads.messages.create(thread_id=o["thread"], role="user", content=""), openai.BadRequestError,
        "content", "string_too_short", id="empty-content",
    ),
    pytest.param(
        lambda c, o: c.beta.threads.create(metadata={f"k{i}": "v" for i in range(17)}), openai.BadRequestError, "metadata",
        "object_above_max_properties", id="metadata-17-pairs",
    ),
    pytest.param(
        lambda c, o: c.beta.assistants.create(model="gpt-4o", tools=[{"type": "function", "function": {"name": "a b"}}]),
        openai.BadRequestError, "tools[0].function.name", "invalid_value", id="function-name-with-space",
    ),
    pytest.param(lambda c, o: c.beta.assistants.retrieve("asst_nope"), openai.NotFoundError, None, None, id="unknown-assistant"),
    pytest.param(
        lambda c, o: c.beta.threads.runs.steps.retrieve(thread_id=o["thread"], run_id="run_nope", step_id="step_nope"),
        openai.NotFoundError, None, None, id="unknown-run-of-step",
    ),
    pytest.param(
        lambda c, o: c.beta.threads.runs.create(thread_id=o["thread"], assistant_id="asst_nope"), openai.NotFoundError, None, None,
        id="run-with-unknown-assistant",
    ),
]


@pytest.mark.parametrize(("call", "error_type", "param", "code"), SDK_CASES)
def test_sdk_gets_typed_errors(
    client: OpenAI, objects: Objects, call: Callable[[OpenAI, Objects], Any], error_type: type[openai.APIStatusError], param: Any, code: Any
) -> None:
    with pytest.raises(error_type) as failed:
        call(client, objects)
    error = failed.value
    assert (error.param, error.code, error.type) == (param, code, "invalid_request_error")
    assert error.response.headers["x-request-id"].startswith("req_")
    assert error.status_code == (404 if error_type is openai.NotFoundError else 400)


# ---------------------------------------------------------------------------- streams that fail validation


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/threads/{thread}/runs", {"assistant_id": "{assistant}", "stream": True, "temperature": 3}, 400, "temperature"),
        ("/threads/{thread}/runs", {"assistant_id": "{assistant}", "stream": True, "colour": "red"}, 400, "colour"),
        ("/threads/{thread}/runs", {"assistant_id": "{assistant}", "stream": "yes"}, 400, "stream"),
        ("/threads/{thread}/runs", {"assistant_id": "asst_nope", "stream": True}, 404, None),
        ("/threads/runs", {"assistant_id": "{assistant}", "stream": True, "thread": {"messages": [{"role": "user", "content": ""}]}}, 400,
         "thread.messages[0].content"),
        ("/threads/{thread}/runs/run_nope/submit_tool_outputs", {"tool_outputs": [], "stream": True}, 404, None),
    ],
    ids=["temperature", "unknown-field", "stream-not-bool", "unknown-assistant", "create-and-run-empty-content", "submit-unknown-run"],
)
def test_stream_request_that_fails_validation_gets_json(
    http: httpx.Client, objects: Objects, path: str, body: dict[str, Any], status: int, param: Any
) -> None:
    response = send(http, objects, "POST", path, body)
    assert "text/event-stream" not in response.headers["content-type"]
    assert_openai_error(response, status, param=param)


def test_sdk_stream_helper_raises_bad_request(client: OpenAI, objects: Objects) -> None:
    with pytest.raises(openai.BadRequestError) as failed:
        with client.beta.threads.runs.stream(thread_id=objects["thread"], assistant_id=objects["assistant"], temperature=3):
            pytest.fail("the stream must not open")
    assert failed.value.param == "temperature" and failed.value.code == "decimal_above_max_value"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.create(thread_id=objects["thread"], assistant_id=objects["assistant"], stream=True, top_p=5)
    # Neither request started a run.
    assert client.beta.threads.runs.list(thread_id=objects["thread"]).data == []


# ---------------------------------------------------------------------------- URLs and methods


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nope"), ("POST", "/v1/threads/{thread}/explode"), ("GET", "/v2/assistants"), ("GET", "/"), ("GET", "/v1")],
)
def test_unknown_url_is_a_404(http: httpx.Client, objects: Objects, emulator: EmulatorProcess, method: str, path: str) -> None:
    root = emulator.base_url.removesuffix("/v1")
    path = objects.fill(path)
    response = http.request(method, root + path)
    assert_openai_error(response, 404, code=None, param=None, message=f"Invalid URL ({method} {path})")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/threads/{thread}/runs"), ("PATCH", "/assistants"), ("PUT", "/threads/{thread}"), ("GET", "/threads/{thread}/runs/{run}/cancel")],
)
def test_wrong_method_gets_an_openai_error(http: httpx.Client, objects: Objects, method: str, path: str) -> None:
    path = objects.fill(path)
    response = http.request(method, path)
    error = assert_openai_error(response, response.status_code, code=None, param=None)
    assert response.status_code in (404, 405)
    assert method in error["message"] and f"/v1{path}" in error["message"]


# ---------------------------------------------------------------------------- request IDs


def test_every_response_has_a_request_id(http: httpx.Client, objects: Objects, admin: httpx.Client) -> None:
    responses = [
        send(http, objects, "GET", "/assistants"),
        send(http, objects, "POST", "/assistants", b"{"),
        send(http, objects, "GET", "/assistants/asst_nope"),
        send(http, objects, "DELETE", "/assistants"),
        send(http, objects, "GET", "/nope"),
        send(http, objects, "POST", "/threads/{thread}/runs", {"assistant_id": "{assistant}", "stream": True}),
        admin.get("/health"),
        admin.post("/faults", json={"operation": "nope"}),
    ]
    ids = [r.headers.get("x-request-id", "") for r in responses]
    assert all(i.startswith("req_") and len(i) > len("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------- still serving


def test_server_still_serves_after_bad_input(http: httpx.Client, objects: Objects, client: OpenAI, admin: httpx.Client) -> None:
    for param in BODY_CASES:
        method, path, body, *_ = param.values
        response = send(http, objects, method, path, body)
        assert response.status_code < 500 and "Traceback" not in response.text
    assert not any(key.endswith((" 500", " 502", " 503")) for key in admin.get("/stats").json()["responses"])

    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "still there?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.content[0].text.value == "You said: still there?"


# ---------------------------------------------------------------------------- child processes

# Each child spends ~2 s of CPU importing. The CLI children start with the module's first
# test, so those imports overlap the HTTP tests above; their own tests collect the results.


class Child:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durable_assistants.emulator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stdout_lines: list[str] = []

    def wait_for_ready(self, timeout: float = 30.0) -> str:
        """The base URL from the ``emulator listening on`` line."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                line = self.process.stdout.readline()
                if not line:
                    break
                self.stdout_lines.append(line)
                match = READY_LINE.search(line)
                if match:
                    return match.group("url")
        raise AssertionError(f"no ready line; stdout so far: {self.stdout_lines!r}")

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, "".join(self.stdout_lines) + stdout, stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture(scope="module", autouse=True)
def cli_children() -> Iterator[dict[str, Any]]:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy_port = blocker.getsockname()[1]
    children = {
        "bad_port": Child("--port", "notanumber"),
        "busy_port": Child("--port", str(busy_port)),
        "sigterm": Child("--port", "0"),
        "sigint": Child("--port", "0"),
    }
    try:
        yield {"blocked_port": busy_port, **children}
    finally:
        for child in children.values():
            child.kill()
        blocker.close()


@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--api-key", "sk-right") as process:
        yield process


# ---------------------------------------------------------------------------- --api-key

WRONG_KEY = "sk-wrong-0123456789abcdef"


def test_api_key_missing_is_a_401(keyed_emulator: EmulatorProcess) -> None:
    response = httpx.get(f"{keyed_emulator.base_url}/assistants")
    error = assert_openai_error(response, 401, code=None, param=None)
    assert error["message"].startswith("You didn't provide an API key.")


@pytest.mark.parametrize("header", [f"Bearer {WRONG_KEY}", "Bearer sk-right-but-longer", "Bearer", "Basic c2stcmlnaHQ="])
def test_api_key_wrong_is_a_401_that_hides_the_key(keyed_emulator: EmulatorProcess, header: str) -> None:
    response = httpx.post(f"{keyed_emulator.base_url}/threads", json={}, headers={"Authorization": header})
    error = assert_openai_error(response, 401, code="invalid_api_key", param=None)
    assert error["message"].startswith("Incorrect API key provided")
    # Neither the key sent nor the server's own key is echoed whole.
    assert WRONG_KEY not in error["message"] and "sk-right" not in error["message"]


def test_api_key_right_is_served(keyed_emulator: EmulatorProcess) -> None:
    headers = {"Authorization": "Bearer sk-right"}
    response = httpx.post(f"{keyed_emulator.base_url}/assistants", json={"model": "gpt-4o"}, headers=headers)
    assert response.status_code == 200 and response.json()["id"].startswith("asst_")
    response = httpx.get(f"{keyed_emulator.base_url}/assistants", headers=headers)
    assert response.status_code == 200 and len(response.json()["data"]) == 1


def test_api_key_with_the_sdk(keyed_emulator: EmulatorProcess) -> None:
    with OpenAI(base_url=keyed_emulator.base_url, api_key=WRONG_KEY, max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as denied:
            wrong.beta.assistants.list()
    assert denied.value.status_code == 401 and denied.value.code == "invalid_api_key"
    assert WRONG_KEY not in denied.value.message
    with OpenAI(base_url=keyed_emulator.base_url, api_key="sk-right", max_retries=0) as right:
        thread = right.beta.threads.create()
        assert right.beta.threads.retrieve(thread.id).id == thread.id


# ---------------------------------------------------------------------------- the command line


def test_cli_rejects_a_port_that_is_not_a_number(cli_children: dict[str, Any]) -> None:
    code, stdout, stderr = cli_children["bad_port"].finish()
    assert code == 2
    assert "Traceback" not in stderr and stdout == ""
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert errors == ["python -m durable_assistants.emulator: error: argument --port: invalid int value: 'notanumber'"]
    assert stderr.startswith("usage: python -m durable_assistants.emulator")


def test_cli_port_in_use_exits_1(cli_children: dict[str, Any]) -> None:
    code, stdout, stderr = cli_children["busy_port"].finish()
    port = cli_children["blocked_port"]
    assert code == 1
    assert "listening" not in stdout
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"emulator: cannot listen on 127.0.0.1:{port}: "), stderr


@pytest.mark.parametrize("name", ["sigterm", "sigint"])
def test_cli_stops_cleanly_on_a_signal(cli_children: dict[str, Any], name: str) -> None:
    child: Child = cli_children[name]
    base_url = child.wait_for_ready()
    assert httpx.get(base_url.removesuffix("/v1") + "/_emulator/health").json()["status"] == "ok"

    child.process.send_signal(signal.SIGTERM if name == "sigterm" else signal.SIGINT)
    code, _, stderr = child.finish(timeout=15)
    assert code == 0, stderr
    assert "Traceback" not in stderr
