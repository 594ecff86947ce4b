"""The tool registry, schemas, the tool executor under ActivityEnvironment, and the
model-API error mapping. No server needed."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Literal

import httpx2
import openai
import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import CancelledError as TemporalCancelledError
from temporalio.testing import ActivityEnvironment

from durable_assistants.activities.errors import retry_after, to_temporal_error
from durable_assistants.activities.tools import execute, render_output, render_value
from durable_assistants.tools import ToolContext, ToolRegistry
from durable_assistants.workflows.activity_models import ToolCallInput, output_text


class Point(BaseModel):
    x: int
    y: int


def make_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(timeout=timedelta(seconds=5), max_attempts=7, task_queue="q", on_failure="fail_run")
    def move(point: Point, unit: Literal["m", "km"] = "m", context: ToolContext = None) -> dict[str, object]:  # type: ignore[assignment]
        """Move a point."""
        return {"moved": point.model_dump(), "unit": unit, "key": context.idempotency_key, "attempt": context.attempt}

    @registry.tool(name="count_up", heartbeat_timeout=timedelta(seconds=3))
    async def count(to: int, context: ToolContext) -> str:
        """Counts, reporting progress."""
        for i in range(to):
            context.heartbeat({"at": i + 1})
            await asyncio.sleep(0.05)
        return "done"

    @registry.tool
    async def forever(context: ToolContext) -> str:
        """Never ends on its own."""
        await asyncio.Event().wait()
        return "unreachable"

    return registry


def test_schema_is_strict_and_named_after_the_function() -> None:
    registry = make_registry()
    schema = registry.get("move").schema()  # type: ignore[union-attr]
    function = schema["function"]
    assert schema["type"] == "function" and function["name"] == "move" and function["strict"] is True
    assert function["description"] == "Move a point."
    params = function["parameters"]
    assert params["required"] == ["point", "unit"] and params["additionalProperties"] is False
    assert "context" not in params["properties"]
    assert params["properties"]["unit"]["enum"] == ["m", "km"]
    assert registry.get("count_up") is not None and "count" not in registry


def test_policy_carries_the_options() -> None:
    policy = make_registry().get("move").policy  # type: ignore[union-attr]
    assert (policy.timeout_seconds, policy.max_attempts, policy.task_queue, policy.on_failure) == (5.0, 7, "q", "fail_run")


def test_registration_mistakes_are_named() -> None:
    registry = ToolRegistry()
    with pytest.raises(TypeError, match="parameter 'x' needs a type hint"):
        registry.tool(lambda x: x)
    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs"):

        @registry.tool
        def spread(*items: int) -> None: ...

    @registry.tool
    def once() -> None: ...

    with pytest.raises(ValueError, match="already registered"):
        registry.tool(once)


def call(name: str, arguments: object, cap: int = 1000) -> ToolCallInput:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCallInput(run_id="run_1", thread_id="thread_1", call_id="call_1", name=name, arguments=text, output_cap_chars=cap)


async def test_executor_validates_runs_and_renders() -> None:
    registry = make_registry()
    env = ActivityEnvironment()
    result = await env.run(execute, registry.get("move"), call("move", {"point": {"x": 1, "y": 2}, "unit": "km"}))
    # A structured return value stays structured (the Temporal UI shows an object, not a string
    # of JSON); the model's text is what render_output makes of it.
    expected = {"moved": {"x": 1, "y": 2}, "unit": "km", "key": "run_1:call_1", "attempt": 1}
    assert result.output == expected
    assert output_text(result.output) == render_output(expected, 16_000)[0]
    # The arguments as an object (what the workflow sends now) and as the model's text (activities
    # scheduled by earlier versions) run the same.
    as_object = call("move", {"point": {"x": 1, "y": 2}, "unit": "km"}).model_copy(update={"arguments": {"point": {"x": 1, "y": 2}, "unit": "km"}})
    assert (await env.run(execute, registry.get("move"), as_object)).output == expected

    for arguments, fragment in [
        ({"point": {"x": "one", "y": 2}}, "point.x: Input should be a valid integer"),
        ({"point": {"x": 1, "y": 2}, "extra": 1}, "extra: Extra inputs are not permitted"),
        ("[1, 2]", "not a JSON object"),
        ("{oops", "not a JSON object"),
    ]:
        with pytest.raises(ApplicationError) as exc:
            await env.run(execute, registry.get("move"), call("move", arguments))
        assert exc.value.type == "InvalidToolArguments" and exc.value.non_retryable and fragment in exc.value.message


def test_structured_values_stay_structured_until_they_are_cut() -> None:
    value = {"rows": [{"city": "Zürich", "n": 1.5}], "ok": True}
    kept, truncated = render_value(value, 1000)
    assert kept == value and not truncated and output_text(kept) == render_output(value, 1000)[0]
    cut, truncated = render_value(value, 20)
    assert isinstance(cut, str) and truncated and cut == render_output(value, 20)[0]
    assert render_value("text", 1000) == ("text", False)
    assert render_value(42, 1000) == ("42", False)  # a scalar is its text


async def test_progress_is_heartbeated() -> None:
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    result = await env.run(execute, make_registry().get("count_up"), call("count_up", {"to": 3}))
    assert result.output == "done"
    # Each progress report is sent as it happens (the loop wakes on it), not only on the timer.
    for at in (1, 2, 3):
        assert {"tool": "count_up", "call_id": "call_1", "progress": {"at": at}} in beats


async def test_cancellation_reaches_an_async_tool() -> None:
    env = ActivityEnvironment()
    task = asyncio.create_task(env.run(execute, make_registry().get("forever"), call("forever", {})))
    await asyncio.sleep(0.1)
    env.cancel()
    with pytest.raises((asyncio.CancelledError, TemporalCancelledError)):
        await task


def test_outputs_are_text_and_capped() -> None:
    assert render_output("plain", 100) == ("plain", False)
    assert render_output({"a": [1, 2]}, 100) == ('{"a": [1, 2]}', False)
    text, truncated = render_output("y" * 500, 80)
    assert truncated and len(text) == 80 and text.endswith("…[truncated 420 of 500 characters]")


def api_error(status: int, headers: dict[str, str] | None = None, code: str = "c") -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://api.test/v1/threads/t/runs")
    response = httpx2.Response(status, headers={"x-request-id": "req_42", **(headers or {})}, request=request, json={"error": {"message": "nope", "type": "x", "param": "p", "code": code}})
    return openai.OpenAI(api_key="k", base_url="http://api.test/v1")._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (404, False), (408, True), (409, False), (422, False), (429, True), (500, True), (503, True)],
)
def test_status_mapping(status: int, retryable: bool) -> None:
    error = to_temporal_error(api_error(status), "create run on t")
    assert error.non_retryable is (not retryable)
    assert error.type == f"ModelApi{status}"
    assert error.message == f"create run on t: HTTP {status} nope (request ID req_42)"
    assert error.details[0]["request_id"] == "req_42"


def test_an_exhausted_quota_is_not_retried_like_a_rate_limit() -> None:
    assert not to_temporal_error(api_error(429, code="rate_limit_exceeded"), "x").non_retryable
    error = to_temporal_error(api_error(429, {"retry-after": "3"}, code="insufficient_quota"), "create run on t")
    assert error.non_retryable and error.next_retry_delay is None
    assert error.message == "create run on t: HTTP 429 nope (request ID req_42)"
    assert error.details[0]["code"] == "insufficient_quota"


def test_retry_after_becomes_the_next_delay() -> None:
    assert to_temporal_error(api_error(429, {"retry-after-ms": "1500"}), "x").next_retry_delay == timedelta(milliseconds=1500)
    assert to_temporal_error(api_error(503, {"retry-after": "3"}), "x").next_retry_delay == timedelta(seconds=3)
    assert to_temporal_error(api_error(400, {"retry-after": "3"}), "x").next_retry_delay is None
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == timedelta(0)
    assert retry_after({"retry-after": "9999"}) == timedelta(minutes=5)


def test_connection_errors_are_retryable() -> None:
    error = to_temporal_error(openai.APIConnectionError(request=httpx2.Request("GET", "http://x")), "read run r")
    assert not error.non_retryable and error.type == "ModelApiConnection"


async def test_tool_logs_carry_the_run_the_tool_and_the_attempt() -> None:
    from structlog.testing import capture_logs

    with capture_logs(processors=[__import__("structlog").contextvars.merge_contextvars]) as logs:
        await ActivityEnvironment().run(execute, make_registry().get("move"), call("move", {"point": {"x": 0, "y": 0}}))
    events = {entry["event"]: entry for entry in logs}
    assert set(events) == {"tool started", "tool finished"}
    for entry in events.values():
        assert (entry["tool"], entry["call_id"], entry["run_id"], entry["thread_id"], entry["attempt"]) == ("move", "call_1", "run_1", "thread_1", 1)


async def test_inline_tools_check_their_arguments_retry_and_time_out_in_place() -> None:
    from durable_assistants.activities.tools import run_inline

    registry = ToolRegistry()

    class Refused(Exception):
        pass

    @registry.tool(inline=True, max_attempts=3, initial_retry=timedelta(milliseconds=1), timeout=timedelta(milliseconds=200))
    async def quick(n: int, context: ToolContext) -> dict[str, int]:
        if n == 0:
            await asyncio.sleep(5)  # longer than its timeout
        if n < 0:
            raise Refused("negative")
        if context.failures < 1:
            raise RuntimeError("first try fails")
        return {"n": n}

    registry.tool(quick, name="quick_permanent", inline=True, non_retryable=(Refused,))
    tool = registry.get("quick")
    assert tool is not None and tool.policy.inline
    ok = await run_inline(tool, "call_1", '{"n": 2}', "run_1", "thread_1", 1000, 1)
    assert (ok.output, ok.attempts, ok.error, ok.outcome) == ('{"n": 2}', 2, None, "ok")
    slow = await run_inline(tool, "call_2", '{"n": 0}', "run_1", "thread_1", 1000, 1)
    assert slow.outcome == "error" and slow.attempts == 3 and slow.output == "Error: tool quick failed: quick did not finish within 0.2 s"
    bad = await run_inline(tool, "call_3", '{"n": "x"}', "run_1", "thread_1", 1000, 1)
    assert bad.outcome == "invalid_arguments" and bad.output.startswith("Error: invalid arguments for quick: n:")
    permanent = registry.get("quick_permanent")
    assert permanent is not None
    refused = await run_inline(permanent, "call_4", '{"n": -1}', "run_1", "thread_1", 1000, 1)
    assert (refused.attempts, refused.output) == (1, "Error: tool quick_permanent failed: negative")


def test_an_inline_tool_has_no_task_queue_and_its_policy_stays_readable_by_earlier_workers() -> None:
    registry = ToolRegistry()
    with pytest.raises(ValueError, match="an inline tool runs in the model activity"):
        registry.tool(lambda: None, name="x", inline=True, task_queue="elsewhere")

    @registry.tool
    def plain() -> str:
        return ""

    assert "inline" not in registry.policies()["plain"].model_dump()  # earlier workers forbid unknown fields
    registry.tool(plain, name="fast", inline=True)
    assert registry.policies()["fast"].model_dump()["inline"] is True


def test_approval_policies_say_why_a_call_waits() -> None:
    registry = ToolRegistry()

    def pay(amount: float) -> str:
        return "paid"

    def fragile(amount: float) -> bool:
        raise KeyError("limit")

    registry.tool(pay, name="always_pay", approval="always")
    registry.tool(pay, name="big_pay", approval=lambda arguments: arguments["amount"] > 100)
    registry.tool(pay, name="odd_pay", approval=fragile)
    registry.tool(pay, name="free_pay")
    tools = {t.name: t for t in registry}

    assert tools["always_pay"].needs_approval({"amount": 1}) == "always_pay always needs approval"
    assert tools["big_pay"].needs_approval({"amount": 5}) is None
    assert tools["big_pay"].needs_approval({"amount": 500}) == "big_pay's approval check flagged these arguments"
    assert tools["odd_pay"].needs_approval({"amount": 5}) == "odd_pay's approval check failed (KeyError: 'limit')"
    assert tools["free_pay"].needs_approval({"amount": 10**9}) is None
    assert [tools[n].policy.approval for n in ("always_pay", "big_pay", "free_pay")] == ["always", "conditional", "never"]
    # "never" is left out of the policy as a workflow reads it: earlier workers (extra="forbid") read it still.
    assert "approval" not in tools["free_pay"].policy.model_dump() and tools["big_pay"].policy.model_dump()["approval"] == "conditional"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"approval": "sometimes"}, "approval must be 'always', 'never' or a function of the arguments, got 'sometimes'"),
        ({"approval": "always", "inline": True}, "a tool that needs approval cannot be inline"),
    ],
)
def test_approval_options_that_cannot_work_are_refused_at_registration(options: dict[str, object], error: str) -> None:
    def pay(amount: float) -> str:
        return "paid"

    with pytest.raises(ValueError, match=error):
        ToolRegistry().tool(pay, **options)  # type: ignore[arg-type]


def test_the_idempotency_key_names_the_run_when_it_is_known() -> None:
    known = ToolContext(run_id="run_1", thread_id="thread_1", call_id="call_1", tool_name="t", attempt=1)
    assert known.idempotency_key == "run_1:call_1"
    # A Responses turn adopted from a conversation's items has no response ID: the key is the
    # call's own, never a placeholder such as "None:call_1".
    lost = ToolContext(run_id=None, thread_id="conv_1", call_id="call_1", tool_name="t", attempt=1)
    assert lost.idempotency_key == "call_1"
