"""The run lifecycle through the real SDK: polling helpers, tool rounds, steps, usage, rules."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import ADD, WEATHER, answer_all, function_tool, script


def test_default_policy_calls_every_tool_then_summarises_outputs(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris and 1+1?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)

    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in calls] == ["add", "get_weather"]
    assert json.loads(calls[1].function.arguments) == {"city": "Paris"}  # from the schema's examples
    assert all(c.id.startswith("call_") for c in calls)

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run, "42")
    )
    assert run.status == "completed"
    assert run.expires_at is None and run.completed_at is not None
    assert run.usage is not None and run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert len(reply) == 1 and reply[0].role == "assistant" and reply[0].assistant_id == assistant.id
    assert reply[0].content[0].text.value == "Here is what the 2 tool calls returned:\n- add: 42\n- get_weather: 42"


def test_scripted_three_rounds_of_sixteen_parallel_calls(client: OpenAI, assistant) -> None:
    rounds = [[{"name": "add", "arguments": {"a": r, "b": 1}, "count": 16}] for r in range(3)]
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Add things.\n" + script(rounds=rounds, reply="Totals:\n{outputs}")}]
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    seen_rounds = []
    while run.status == "requires_action":
        calls = run.required_action.submit_tool_outputs.tool_calls
        seen_rounds.append(calls)
        outputs = [{"tool_call_id": c.id, "output": str(sum(json.loads(c.function.arguments).values()))} for c in calls]
        run = client.beta.threads.runs.submit_tool_outputs_and_poll(thread_id=thread.id, run_id=run.id, tool_outputs=outputs)

    assert run.status == "completed"
    assert [len(r) for r in seen_rounds] == [16, 16, 16]
    assert len({c.id for r in seen_rounds for c in r}) == 48
    assert [json.loads(r[0].function.arguments) for r in seen_rounds] == [{"a": 0, "b": 1}, {"a": 1, "b": 1}, {"a": 2, "b": 1}]
    text = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0].content[0].text.value
    assert text.startswith("Totals:\n- add: 1\n") and text.count("- add: 3") == 16

    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls"] * 3 + ["message_creation"]
    assert all(s.status == "completed" and s.usage is not None for s in steps)
    assert [c.function.output for c in steps[0].step_details.tool_calls] == ["1"] * 16
    message_step = client.beta.threads.runs.steps.retrieve(thread_id=thread.id, run_id=run.id, step_id=steps[3].id)
    assert message_step.step_details.message_creation.message_id == client.beta.threads.messages.list(
        thread_id=thread.id, run_id=run.id
    ).data[0].id


def test_create_and_run_poll_with_overrides(client: OpenAI, assistant) -> None:
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "hello there"}], "metadata": {"k": "v"}},
        instructions="Override.",
        model="gpt-4o-mini",
        tools=[],
        temperature=0.5,
        metadata={"request": "r1"},
    )
    assert run.status == "completed"
    assert (run.instructions, run.model, run.tools, run.temperature, run.metadata) == (
        "Override.", "gpt-4o-mini", [], 0.5, {"request": "r1"},
    )
    assert client.beta.threads.retrieve(run.thread_id).metadata == {"k": "v"}
    reply = client.beta.threads.messages.list(thread_id=run.thread_id).data[0]
    assert reply.content[0].text.value == "You said: hello there"


def test_run_defaults_come_from_the_assistant(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, additional_instructions="Also be kind.",
        additional_messages=[{"role": "user", "content": "hi"}],
    )
    assert run.status == "queued"
    assert run.model == "gpt-4o" and run.instructions == "Be brief.\nAlso be kind."
    assert [t.function.name for t in run.tools] == ["add", "get_weather"]
    assert run.expires_at == run.created_at + 600
    assert run.tool_choice == "auto" and run.parallel_tool_calls is True
    assert run.truncation_strategy.type == "auto"
    messages = client.beta.threads.messages.list(thread_id=thread.id).data
    assert [m.content[0].text.value for m in messages] == ["hi"]


def test_tool_choice_and_parallel_tool_calls_shape_the_default_policy(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert [c.function.name for c in run.required_action.submit_tool_outputs.tool_calls] == ["get_weather"]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run))
    assert run.status == "completed"

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, parallel_tool_calls=False)
    names = []
    while run.status == "requires_action":
        calls = run.required_action.submit_tool_outputs.tool_calls
        assert len(calls) == 1
        names.append(calls[0].function.name)
        run = client.beta.threads.runs.submit_tool_outputs_and_poll(thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run))
    assert names == ["add", "get_weather"] and run.status == "completed"

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, tool_choice="none")
    assert run.status == "completed"


def test_one_active_run_per_thread(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"

    with pytest.raises(openai.BadRequestError) as second:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert second.value.status_code == 400
    assert second.value.message.endswith(f"Thread {thread.id} already has an active run {run.id}.")
    with pytest.raises(openai.BadRequestError) as message:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")
    assert f"Can't add messages to {thread.id} while a run {run.id} is active." in message.value.message

    client.beta.threads.runs.submit_tool_outputs_and_poll(thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run))
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")
    assert client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id).status == "requires_action"


def test_submit_rules(client: OpenAI, assistant, admin: httpx.Client) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    outputs = answer_all(run)

    with pytest.raises(openai.BadRequestError) as partial:
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=outputs[:1])
    ids = [c.id for c in run.required_action.submit_tool_outputs.tool_calls]
    assert f"Expected tool outputs for call_ids {ids}" in partial.value.message
    with pytest.raises(openai.BadRequestError) as unknown:
        client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id, tool_outputs=[*outputs, {"tool_call_id": "call_nope", "output": ""}]
        )
    assert "call_nope" in unknown.value.message

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(thread_id=thread.id, run_id=run.id, tool_outputs=outputs)
    with pytest.raises(openai.BadRequestError) as late:
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=outputs)
    assert late.value.message.endswith('Runs in status "completed" do not accept tool outputs.')

    counters = admin.get("/stats").json()["runs"][run.id]
    assert counters["submits_accepted"] == 1 and counters["submits_rejected"] == 3


def test_cancel(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    cancelling = client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert cancelling.status == "cancelling"
    run = client.beta.threads.runs.poll(thread_id=thread.id, run_id=run.id)
    assert run.status == "cancelled" and run.cancelled_at is not None
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data
    assert [s.status for s in steps] == ["cancelled"]

    with pytest.raises(openai.BadRequestError) as again:
        client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert again.value.message.endswith("Cannot cancel run with status 'cancelled'.")
    # The thread is free again.
    assert client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id).status == "queued"


def test_expiry_is_not_reset_by_a_submit(client: OpenAI, assistant, admin: httpx.Client) -> None:
    admin.patch("/config", json={"expiry_seconds": 1.5}).raise_for_status()
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": script(rounds=[[{"name": "add", "arguments": {"a": 1, "b": 2}}]] * 5)}]
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    first_expiry = run.expires_at
    assert first_expiry is not None and first_expiry - run.created_at in (1, 2)
    for _ in range(2):
        run = client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run))
        assert run.expires_at == first_expiry
        run = client.beta.threads.runs.poll(thread_id=thread.id, run_id=run.id, poll_interval_ms=20)
        assert run.status == "requires_action" and run.expires_at == first_expiry

    run = wait_while(client, run, "requires_action")
    assert run.status == "expired" and run.expires_at == first_expiry
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data
    # The service sent `expires_at` on steps (the SDK's `expired_at` reads None from it).
    assert steps[0].status == "expired" and steps[0].model_extra["expires_at"] is not None
    assert [s.status for s in steps[1:]] == ["completed", "completed"]
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=answer_all_from_step(steps[0]))


def wait_while(client: OpenAI, run, status: str, limit: float = 30.0):
    """Re-read a run until it leaves ``status`` (the SDK's poll stops at requires_action)."""
    import time

    deadline = time.monotonic() + limit
    while run.status == status and time.monotonic() < deadline:
        time.sleep(0.05)
        run = client.beta.threads.runs.retrieve(thread_id=run.thread_id, run_id=run.id)
    return run


def answer_all_from_step(step) -> list[dict[str, str]]:
    return [{"tool_call_id": c.id, "output": "late"} for c in step.step_details.tool_calls]


@pytest.mark.parametrize(
    ("fields", "status", "check"),
    [
        ({"end": "failed"}, "failed", lambda r: (r.last_error.code, r.failed_at is not None) == ("server_error", True)),
        (
            {"end": "failed", "error_code": "rate_limit_exceeded"},
            "failed",
            lambda r: r.last_error.code == "rate_limit_exceeded" and "quota" in r.last_error.message,
        ),
        ({"end": "incomplete"}, "incomplete", lambda r: r.incomplete_details.reason == "max_completion_tokens"),
        (
            {"end": "incomplete", "incomplete_reason": "max_prompt_tokens"},
            "incomplete",
            lambda r: r.incomplete_details.reason == "max_prompt_tokens",
        ),
    ],
)
def test_scripted_endings(client: OpenAI, assistant, fields, status, check) -> None:
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": script(reply="A long enough answer.", **fields)}]},
    )
    assert run.status == status and check(run)
    assert run.usage is not None


def test_max_completion_tokens_cuts_the_reply(client: OpenAI, assistant) -> None:
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": script(reply="word " * 300)}]},
        max_completion_tokens=256,
    )
    assert run.status == "incomplete" and run.incomplete_details.reason == "max_completion_tokens"
    message = client.beta.threads.messages.list(thread_id=run.thread_id).data[0]
    assert message.status == "incomplete" and message.incomplete_details.reason == "max_tokens"
    assert len(message.content[0].text.value) == 256 * 4


def test_malformed_arguments_and_unknown_tools_are_emitted_as_scripted(client: OpenAI, assistant) -> None:
    rounds = [[{"name": "add", "raw_arguments": '{"a": 1,'}, {"name": "not_a_tool", "arguments": {}}]]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": script(rounds=rounds)}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [("add", '{"a": 1,'), ("not_a_tool", "{}")]


def test_named_scenarios_from_message_run_and_assistant_metadata(client: OpenAI, admin: httpx.Client) -> None:
    admin.put("/scenarios/two-adds", json={"rounds": [[{"name": "add", "arguments": {"a": 1, "b": 1}, "count": 2}]]}).raise_for_status()
    admin.put("/scenarios/fails", json={"end": "failed"}).raise_for_status()
    by_metadata = client.beta.assistants.create(model="gpt-4o", tools=[ADD], metadata={"emulator_scenario": "fails"})
    plain = client.beta.assistants.create(model="gpt-4o", tools=[ADD])

    def first_turn(assistant_id: str, content: str, **kw):
        return client.beta.threads.create_and_run_poll(
            assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": content}]}, **kw
        )

    assert first_turn(by_metadata.id, "hi").status == "failed"
    run = first_turn(by_metadata.id, "hi\n@emulator two-adds")  # the message wins
    assert len(run.required_action.submit_tool_outputs.tool_calls) == 2
    run = first_turn(plain.id, "hi", metadata={"emulator_scenario": "two-adds"})
    assert len(run.required_action.submit_tool_outputs.tool_calls) == 2
    assert first_turn(plain.id, "hi").status == "requires_action"  # default policy: one call to `add`


def test_bad_scripts_are_rejected_before_anything_is_created(client: OpenAI, assistant, admin: httpx.Client) -> None:
    threads_before = admin.get("/health").json()["threads"]
    for content, fragment in [
        ("@emulator {not json", "not JSON"),
        ('@emulator {"rounds": [[{"nam": "x"}]]}', "rounds.0.0"),
        ("@emulator no-such-scenario", "unknown emulator scenario 'no-such-scenario'"),
    ]:
        with pytest.raises(openai.BadRequestError) as exc:
            client.beta.threads.create_and_run(assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": content}]})
        assert fragment in exc.value.message and exc.value.code == "invalid_emulator_script"
    assert admin.get("/health").json()["threads"] == threads_before


def test_poll_after_header_only_on_reads_of_active_runs(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    created = client.beta.threads.runs.with_raw_response.create(thread_id=thread.id, assistant_id=assistant.id)
    assert "openai-poll-after-ms" not in created.headers and created.headers["x-request-id"].startswith("req_")
    run = created.parse()
    read = client.beta.threads.runs.with_raw_response.retrieve(thread_id=thread.id, run_id=run.id)
    assert read.headers["openai-poll-after-ms"] == "20"
    client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    client.beta.threads.runs.poll(thread_id=thread.id, run_id=run.id)
    done = client.beta.threads.runs.with_raw_response.retrieve(thread_id=thread.id, run_id=run.id)
    assert "openai-poll-after-ms" not in done.headers


def test_runs_list_and_modify(client: OpenAI, assistant) -> None:
    thread = client.beta.threads.create()
    ids = []
    for i in range(3):
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, tool_choice="none", additional_messages=[{"role": "user", "content": str(i)}]
        )
        ids.append(run.id)
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id)] == ids[::-1]
    updated = client.beta.threads.runs.update(thread_id=thread.id, run_id=ids[0], metadata={"tag": "x"})
    assert updated.metadata == {"tag": "x"}
    assert client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=ids[0]).metadata == {"tag": "x"}


async def test_async_client_full_round(aclient: AsyncOpenAI) -> None:
    assistant = await aclient.beta.assistants.create(model="gpt-4o", tools=[WEATHER, function_tool("noop")])
    thread = await aclient.beta.threads.create(messages=[{"role": "user", "content": "London"}])
    run = await aclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"
    run = await aclient.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=answer_all(run, "ok")
    )
    assert run.status == "completed"
    messages = [m async for m in aclient.beta.threads.messages.list(thread_id=thread.id, order="asc")]
    assert [m.role for m in messages] == ["user", "assistant"]
    run = await aclient.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": script(end="failed")}]}
    )
    assert run.status == "failed"


def test_health_counts_active_runs(client: OpenAI, assistant, admin: httpx.Client) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert admin.get("/health").json()["active_runs"] == 1
    client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    client.beta.threads.runs.poll(thread_id=thread.id, run_id=run.id)
    assert admin.get("/health").json() == {
        "status": "ok", "threads": 1, "runs": 1, "active_runs": 0, "conversations": 0, "responses": 0, "active_responses": 0
    }
    # Responses count too: one queued in the background is active until it ends.
    admin.patch("/config", json={"queue_seconds": 5}).raise_for_status()
    response = client.responses.create(model="gpt-4o", input="x", background=True, conversation=client.conversations.create().id)
    health = admin.get("/health").json()
    assert (health["conversations"], health["responses"], health["active_responses"]) == (1, 1, 1)
    client.responses.cancel(response.id)
    assert admin.get("/health").json()["active_responses"] == 0
