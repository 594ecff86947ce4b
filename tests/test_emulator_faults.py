"""Faults and counters through the admin API, seen by the real SDK.

Every test proves what happened on the server from ``/_emulator/stats`` and the objects that
exist, not only from what the client saw: a fault with ``when: "after"`` must leave the
request's effect behind, one with ``when: "before"`` must not.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import answer_all


def add_fault(admin: httpx.Client, **rule: Any) -> dict[str, Any]:
    response = admin.post("/faults", json=rule)
    assert response.status_code == 200, response.text
    added = response.json()
    assert added["id"].startswith("fault_") and (added["seen"], added["fired"]) == (0, 0)
    return added


def stats(admin: httpx.Client) -> dict[str, Any]:
    response = admin.get("/stats")
    assert response.status_code == 200
    return response.json()


def fault(admin: httpx.Client, fault_id: str) -> dict[str, Any]:
    return next(r for r in admin.get("/faults").json()["data"] if r["id"] == fault_id)


# ---------------------------------------------------------------------------- 429 and SDK retries


def test_rate_limit_carries_retry_after_headers(client: OpenAI, assistant, admin: httpx.Client) -> None:
    thread = client.beta.threads.create()
    add_fault(admin, operation="runs.create", status=429, retry_after_ms=1500, nth=1)

    with pytest.raises(openai.RateLimitError) as limited:
        client.beta.threads.runs.with_raw_response.create(thread_id=thread.id, assistant_id=assistant.id)
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after-ms"] == "1500"
    assert limited.value.response.headers["retry-after"] == "2"  # whole seconds, rounded up
    assert limited.value.response.headers["x-request-id"].startswith("req_")
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.json()["error"]["message"].startswith("Rate limit reached")
    # `before`: the refused create left nothing behind.
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert stats(admin)["threads"].get(thread.id, {}).get("runs_created", 0) == 0


def test_sdk_retry_after_a_429_creates_exactly_one_run(client: OpenAI, assistant, admin: httpx.Client) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    add_fault(admin, operation="runs.create", status=429, retry_after_ms=50, nth=1)

    retrying = client.with_options(max_retries=1)
    run = retrying.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    assert run.id.startswith("run_") and run.thread_id == thread.id
    counters = stats(admin)
    assert counters["requests"]["runs.create"] == 2
    assert counters["responses"]["runs.create 429"] == 1
    assert counters["responses"]["runs.create 200"] == 1
    assert counters["faults_fired"] == {"runs.create": 1}
    assert counters["threads"][thread.id]["runs_created"] == 1
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id)] == [run.id]


# ---------------------------------------------------------------------------- error statuses and triggers


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        (500, openai.InternalServerError, "The server had an error while processing your request."),
        (503, openai.InternalServerError, "The server had an error while processing your request."),
        (400, openai.BadRequestError, "Error injected by the emulator."),
    ],
)
def test_error_fault_gives_an_openai_error_body(
    client: OpenAI, admin: httpx.Client, status: int, error_type: type[openai.APIStatusError], message: str
) -> None:
    add_fault(admin, operation="threads.create", status=status)

    with pytest.raises(error_type) as failed:
        client.beta.threads.create()
    error = failed.value
    assert isinstance(error, openai.APIStatusError) and error.status_code == status
    body = error.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"].startswith(message)
    assert body["error"]["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert error.body == body["error"]  # what the SDK exposes
    # `before`: the thread was never created.
    assert admin.get("/health").json()["threads"] == 0
    assert stats(admin)["responses"] == {f"threads.create {status}": 1}


def test_rate_fault_fires_times_then_stops(client: OpenAI, admin: httpx.Client) -> None:
    rule = add_fault(admin, operation="assistants.list", status=500, rate=1.0, times=2)

    outcomes = []
    for _ in range(4):
        try:
            client.beta.assistants.list()
            outcomes.append("ok")
        except openai.InternalServerError:
            outcomes.append("500")
    assert outcomes == ["500", "500", "ok", "ok"]
    assert (fault(admin, rule["id"])["seen"], fault(admin, rule["id"])["fired"]) == (4, 2)
    counters = stats(admin)
    assert counters["faults_fired"] == {"assistants.list": 2}
    assert counters["responses"] == {"assistants.list 500": 2, "assistants.list 200": 2}


def test_nth_fault_fires_only_on_that_call(client: OpenAI, admin: httpx.Client) -> None:
    rule = add_fault(admin, operation="assistants.list", status=503, nth=3)
    assert rule["times"] == 1  # `nth` fires once unless told otherwise

    outcomes = []
    for _ in range(5):
        try:
            client.beta.assistants.list()
            outcomes.append("ok")
        except openai.InternalServerError as exc:
            outcomes.append(str(exc.status_code))
    assert outcomes == ["ok", "ok", "503", "ok", "ok"]
    assert fault(admin, rule["id"])["fired"] == 1


def test_fault_only_matches_its_operation(client: OpenAI, admin: httpx.Client) -> None:
    add_fault(admin, operation="assistants.retrieve", status=500)
    created = client.beta.assistants.create(model="gpt-4o")
    assert [a.id for a in client.beta.assistants.list()] == [created.id]
    with pytest.raises(openai.InternalServerError):
        client.beta.assistants.retrieve(created.id)
    assert stats(admin)["faults_fired"] == {"assistants.retrieve": 1}


# ---------------------------------------------------------------------------- dropped connections


def test_drop_before_raises_connection_error_and_has_no_effect(client: OpenAI, admin: httpx.Client) -> None:
    add_fault(admin, operation="assistants.create", action="drop", nth=1)

    with pytest.raises(openai.APIConnectionError) as dropped:
        client.beta.assistants.create(model="gpt-4o")
    assert not isinstance(dropped.value, openai.APITimeoutError)
    assert client.beta.assistants.list().data == []
    assert stats(admin)["responses"]["assistants.create dropped"] == 1
    # The next call goes through on a fresh connection.
    assert client.beta.assistants.create(model="gpt-4o").id.startswith("asst_")


def test_drop_after_run_create_leaves_the_run(client: OpenAI, assistant, admin: httpx.Client) -> None:
    """The idempotency case: the client saw a broken connection, the server did the work."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    add_fault(admin, operation="runs.create", action="drop", when="after", nth=1)

    with pytest.raises(openai.APIConnectionError):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    runs = client.beta.threads.runs.list(thread_id=thread.id).data
    assert len(runs) == 1 and runs[0].assistant_id == assistant.id
    counters = stats(admin)
    assert counters["threads"][thread.id]["runs_created"] == 1
    assert counters["responses"]["runs.create dropped"] == 1
    assert "runs.create 200" not in counters["responses"]
    # A blind retry is refused: the thread already has that run active (or it has finished).
    run = client.beta.threads.runs.poll(thread_id=thread.id, run_id=runs[0].id)
    assert run.status == "requires_action"
    with pytest.raises(openai.BadRequestError) as retry:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert retry.value.message.endswith(f"Thread {thread.id} already has an active run {run.id}.")


def test_error_after_message_create_leaves_the_message(client: OpenAI, admin: httpx.Client) -> None:
    thread = client.beta.threads.create()
    add_fault(admin, operation="messages.create", status=500, when="after", nth=1)

    with pytest.raises(openai.InternalServerError) as failed:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="written once")
    assert failed.value.status_code == 500

    messages = client.beta.threads.messages.list(thread_id=thread.id).data
    assert [m.content[0].text.value for m in messages] == ["written once"]
    counters = stats(admin)
    assert counters["threads"][thread.id]["user_messages_created"] == 1
    assert counters["responses"]["messages.create 500"] == 1


# ---------------------------------------------------------------------------- delays


def test_delay_fault_still_succeeds(client: OpenAI, admin: httpx.Client) -> None:
    rule = add_fault(admin, operation="threads.create", action="delay", delay_seconds=0.1, nth=1)
    thread = client.beta.threads.create(metadata={"k": "v"})
    assert thread.id.startswith("thread_") and thread.metadata == {"k": "v"}
    assert fault(admin, rule["id"])["fired"] == 1
    assert stats(admin)["responses"] == {"threads.create 200": 1}


def test_delay_longer_than_the_client_timeout(client: OpenAI, admin: httpx.Client) -> None:
    add_fault(admin, operation="assistants.list", action="delay", delay_seconds=0.6, nth=1)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.15).beta.assistants.list()
    assert client.beta.assistants.list().data == []  # the rule fired once; the next call is prompt


# ---------------------------------------------------------------------------- submit_tool_outputs


@pytest.mark.parametrize(
    ("rule", "error_type"),
    [
        ({"action": "error", "status": 500}, openai.InternalServerError),
        ({"action": "error", "status": 429}, openai.RateLimitError),
        ({"action": "drop"}, openai.APIConnectionError),
    ],
    ids=["500", "429", "drop"],
)
def test_submit_spoiled_after_it_was_accepted(
    client: OpenAI, assistant, admin: httpx.Client, rule: dict[str, Any], error_type: type[Exception]
) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"
    outputs = answer_all(run, "42")
    add_fault(admin, operation="runs.submit_tool_outputs", when="after", nth=1, **rule)

    with pytest.raises(error_type):
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=outputs)

    # The submit took effect: the run went on and finished, the outputs are on the step.
    run = client.beta.threads.runs.poll(thread_id=thread.id, run_id=run.id)
    assert run.status == "completed"
    tool_step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    assert [c.function.output for c in tool_step.step_details.tool_calls] == ["42", "42"]

    with pytest.raises(openai.BadRequestError) as again:
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=outputs)
    assert again.value.status_code == 400
    assert again.value.message.endswith('Runs in status "completed" do not accept tool outputs.')

    counters = stats(admin)["runs"][run.id]
    assert counters["submits_accepted"] == 1 and counters["submits_rejected"] == 1


# ---------------------------------------------------------------------------- the admin API


def test_list_delete_and_clear_faults(admin: httpx.Client) -> None:
    first = add_fault(admin, operation="runs.create", status=500, nth=2)
    second = add_fault(admin, operation="*", action="delay", delay_seconds=0.5, rate=0.5)
    assert first["id"] != second["id"]
    assert (first["operation"], first["status"], first["nth"], first["times"], first["when"]) == (
        "runs.create", 500, 2, 1, "before",
    )
    assert [r["id"] for r in admin.get("/faults").json()["data"]] == [first["id"], second["id"]]

    deleted = admin.delete(f"/faults/{first['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": first["id"], "deleted": True}
    assert [r["id"] for r in admin.get("/faults").json()["data"]] == [second["id"]]

    for unknown in (first["id"], "fault_nope"):
        missing = admin.delete(f"/faults/{unknown}")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == f"No fault found with id '{unknown}'."

    cleared = admin.delete("/faults")
    assert cleared.status_code == 200 and cleared.json() == {"deleted": True}
    assert admin.get("/faults").json() == {"data": []}


@pytest.mark.parametrize(
    ("rule", "param", "fragment"),
    [
        ({"operation": "runs.explode"}, "operation", "Unknown operation 'runs.explode'"),
        ({"operation": "runs.create", "nth": 1, "rate": 0.5}, None, "either 'nth' or 'rate', not both"),
        ({"operation": "runs.create", "status": 200}, "status", "greater than or equal to 400"),
        ({"operation": "runs.create", "action": "explode"}, "action", "'explode'"),
        ({"operation": "runs.create", "rate": 1.5}, "rate", "less than or equal to 1"),
        ({"operation": "runs.create", "nth": 0}, "nth", "greater than or equal to 1"),
        ({"operation": "runs.create", "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
    ids=["unknown-operation", "nth-and-rate", "status-200", "bad-action", "rate-above-1", "nth-0", "unknown-field"],
)
def test_bad_fault_rules_are_rejected(admin: httpx.Client, rule: dict[str, Any], param: str | None, fragment: str) -> None:
    response = admin.post("/faults", json=rule)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"]
    if param is not None:
        assert error["param"] == param
    assert admin.get("/faults").json() == {"data": []}


def test_unknown_operation_error_lists_the_known_ones(admin: httpx.Client) -> None:
    message = admin.post("/faults", json={"operation": "nope"}).json()["error"]["message"]
    for operation in ("runs.create", "runs.submit_tool_outputs", "messages.create", "steps.retrieve", "threads.create_and_run"):
        assert operation in message


def test_reset_empties_everything(client: OpenAI, assistant, admin: httpx.Client) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    add_fault(admin, operation="steps.list", status=500)
    assert admin.put("/scenarios/keep-me", json={"reply": "x"}).status_code == 200

    reset = admin.post("/reset")
    assert reset.status_code == 200 and reset.json() == {"reset": True}

    assert admin.get("/health").json() == {
        "status": "ok", "runs": 0, "threads": 0, "active_runs": 0, "conversations": 0, "responses": 0, "active_responses": 0
    }
    assert admin.get("/faults").json() == {"data": []}
    assert admin.get("/scenarios").json() == {}
    assert stats(admin) == {"requests": {}, "responses": {}, "faults_fired": {}, "totals": {}, "threads": {}, "runs": {}}
    with pytest.raises(openai.NotFoundError) as gone:
        client.beta.threads.retrieve(thread.id)
    assert gone.value.message.endswith(f"No thread found with id '{thread.id}'.")
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(assistant.id)


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        ({"expiry_seconds": -1}, "expiry_seconds", "greater than 0"),
        ({"expiry_seconds": 0}, "expiry_seconds", "greater than 0"),
        ({"poll_after_ms": "soon"}, "poll_after_ms", "valid integer"),
        ({"queue_seconds": -0.5}, "queue_seconds", "greater than or equal to 0"),
        ({"no_such_setting": 1}, "no_such_setting", "Extra inputs are not permitted"),
        ({"api_key": "sk-new"}, "api_key", "--api-key"),
    ],
    ids=["negative-expiry", "zero-expiry", "non-integer-poll", "negative-queue", "unknown-setting", "api-key"],
)
def test_config_patch_is_validated(admin: httpx.Client, change: dict[str, Any], param: str, fragment: str) -> None:
    before = admin.get("/config").json()
    response = admin.patch("/config", json=change)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"]
    assert admin.get("/config").json() == before  # nothing half-applied


def test_config_patch_applies_and_hides_the_api_key(admin: httpx.Client) -> None:
    response = admin.patch("/config", json={"expiry_seconds": 42, "poll_after_ms": 5})
    assert response.status_code == 200
    config = admin.get("/config").json()
    assert (config["expiry_seconds"], config["poll_after_ms"]) == (42, 5)
    assert "api_key" not in config and "api_key" not in response.json()


# ---------------------------------------------------------------------------- counters


def test_message_counters_per_thread(client: OpenAI, admin: httpx.Client) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")  # no tools: the model replies at once
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    )
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="three")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, additional_messages=[{"role": "user", "content": "four"}]
    )
    assert run.status == "completed"

    counters = stats(admin)["threads"][thread.id]
    assert counters["user_messages_created"] == 4
    assert counters["assistant_messages_created"] == 1
    assert counters["runs_created"] == 1

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    counters = stats(admin)
    assert counters["threads"][thread.id]["assistant_messages_created"] == 2
    assert counters["threads"][thread.id]["user_messages_created"] == 4
    assert counters["threads"][thread.id]["runs_created"] == 2
    assert counters["runs"][run.id]["ended_completed"] == 1
    assert counters["totals"]["user_messages_created"] == 4 and counters["totals"]["runs_created"] == 2


def test_counters_are_per_thread(client: OpenAI, admin: httpx.Client) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "a"}]}
    )
    other = client.beta.threads.create(messages=[{"role": "user", "content": "b"}, {"role": "user", "content": "c"}])
    threads = stats(admin)["threads"]
    assert threads[run.thread_id]["user_messages_created"] == 1
    assert threads[run.thread_id]["assistant_messages_created"] == 1
    assert threads[other.id] == {"user_messages_created": 2}


def test_requests_and_responses_are_counted_per_operation(client: OpenAI, admin: httpx.Client) -> None:
    client.beta.assistants.create(model="gpt-4o")
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve("asst_nope")
    with pytest.raises(openai.BadRequestError):
        client.beta.assistants.create(model="gpt-4o", temperature=3)
    counters = stats(admin)
    assert counters["requests"] == {"assistants.create": 2, "assistants.retrieve": 1}
    assert counters["responses"] == {"assistants.create 200": 1, "assistants.create 400": 1, "assistants.retrieve 404": 1}
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+ (\d{3}|dropped)", key) for key in counters["responses"])


def test_cut_breaks_a_stream_after_some_events_and_the_rest_can_be_read_again(client: OpenAI, admin: httpx.Client) -> None:
    """A stream that dies mid-way, as a network failure would: the client gets the first
    events, then a broken connection; the response goes on and its stream can be resumed."""
    admin.post("/faults", json={"operation": "responses.create", "nth": 1, "action": "cut", "after_events": 3}).raise_for_status()
    stream = client.responses.create(model="gpt-4o", input="hello there", background=True, stream=True)
    seen = []
    with pytest.raises(Exception) as broken:  # the HTTP library's error for a truncated body
        for event in stream:
            seen.append(event)
    assert type(broken.value).__name__ in ("RemoteProtocolError", "APIConnectionError"), repr(broken.value)
    assert [e.sequence_number for e in seen] == [0, 1, 2]
    response_id = seen[0].response.id
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=2))
    assert rest[0].sequence_number == 3 and rest[-1].type == "response.completed"
    assert rest[-1].response.output_text == "You said: hello there"
    stats = admin.get("/stats").json()
    assert stats["faults_fired"] == {"responses.create": 1}


def test_cut_on_a_run_stream_and_on_a_plain_response(client: OpenAI, assistant, admin: httpx.Client) -> None:
    admin.post("/faults", json={"operation": "runs.create", "nth": 1, "action": "cut", "after_events": 2}).raise_for_status()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    names = []
    with pytest.raises(Exception):  # noqa: B017 - a cut stream surfaces as the SDK's or its HTTP client's error, by version
        for event in client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, stream=True):
            names.append(event.event)
    assert names == ["thread.run.created", "thread.run.queued"]
    # Not a stream: the connection is dropped, as with `drop`.
    admin.post("/faults", json={"operation": "threads.retrieve", "nth": 1, "action": "cut"}).raise_for_status()
    with pytest.raises(openai.APIConnectionError):
        client.beta.threads.retrieve(thread.id)


def test_reset_lets_a_held_request_go_as_a_dropped_connection(client: OpenAI, admin: httpx.Client) -> None:
    """A request a `delay` fault still holds when the emulator is reset must not act on the
    state after the reset: it ends as a dropped connection, having created nothing."""
    import threading

    add_fault(admin, operation="threads.create", action="delay", delay_seconds=30)
    outcome: list[BaseException | str] = []

    def create() -> None:
        try:
            outcome.append(client.with_options(max_retries=0, timeout=60).beta.threads.create().id)
        except BaseException as exc:  # noqa: BLE001  (the outcome is what the test reads)
            outcome.append(exc)

    held = threading.Thread(target=create)
    held.start()
    deadline = time.monotonic() + 10
    while not stats(admin).get("faults_fired") and time.monotonic() < deadline:
        time.sleep(0.05)
    admin.post("/reset").raise_for_status()
    held.join(10)

    assert not held.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], openai.APIConnectionError), outcome
    assert admin.get("/health").json()["threads"] == 0
