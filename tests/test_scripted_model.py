"""The scripted model and its script language, without HTTP."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from durable_assistants.emulator.model import (
    CompletedCall,
    FailTurn,
    FunctionSpec,
    ReplyTurn,
    ScriptedModel,
    ToolCallsTurn,
    TurnContext,
    example_arguments,
)
from durable_assistants.emulator.script import Script, ScriptError, find_directive, parse_script, script_from_directive


class Address(BaseModel):
    street: str
    zip_code: int


class Order(BaseModel):
    item: str
    quantity: int = 2
    express: bool
    ship_to: Address
    tags: list[str]


def test_example_arguments_follow_the_schema_including_refs() -> None:
    args = example_arguments(Order.model_json_schema(), "ship it")
    assert args == {
        "item": "ship it",
        "quantity": 2,
        "express": True,
        "ship_to": {"street": "ship it", "zip_code": 1},
        "tags": ["ship it"],
    }
    assert example_arguments({"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}}, "") == {"unit": "c"}
    assert example_arguments(None, "x") == {}


def ctx(**kw) -> TurnContext:
    tools = [FunctionSpec("a", None, {"type": "object", "properties": {}}), FunctionSpec("b", None, None)]
    return TurnContext(user_text="hello", tools=tools, **kw)


def test_default_policy_rounds() -> None:
    model = ScriptedModel()
    first = model.next_turn(None, ctx())
    assert isinstance(first, ToolCallsTurn) and [c.name for c in first.calls] == ["a", "b"]
    done = [[CompletedCall("a", "{}", "1"), CompletedCall("b", "{}", "2")]]
    assert model.next_turn(None, ctx(rounds_done=done)) == ReplyTurn("Here is what the 2 tool calls returned:\n- a: 1\n- b: 2")
    assert model.next_turn(None, ctx(tool_choice="none")) == ReplyTurn("You said: hello")
    sequential = model.next_turn(None, ctx(parallel_tool_calls=False, rounds_done=[[CompletedCall("a", "{}", "1")]]))
    assert isinstance(sequential, ToolCallsTurn) and [c.name for c in sequential.calls] == ["b"]


def test_scripted_turns_and_endings() -> None:
    model = ScriptedModel()
    script = Script.model_validate(
        {"rounds": [[{"name": "x", "arguments": {"n": 1}, "count": 2}], [{"name": "y", "raw_arguments": "{oops"}]], "reply": "got {outputs} for {user}"}
    )
    turn = model.next_turn(script, ctx())
    assert isinstance(turn, ToolCallsTurn) and [(c.name, json.loads(c.arguments)) for c in turn.calls] == [("x", {"n": 1})] * 2
    turn = model.next_turn(script, ctx(rounds_done=[[]]))
    assert turn == ToolCallsTurn([type(turn.calls[0])("y", "{oops")])
    reply = model.next_turn(script, ctx(rounds_done=[[CompletedCall("x", "{}", "7")], []]))
    assert reply == ReplyTurn("got - x: 7 for hello")

    failed = model.next_turn(Script(end="failed", error_code="rate_limit_exceeded"), ctx())
    assert isinstance(failed, FailTurn) and failed.code == "rate_limit_exceeded"
    incomplete = model.next_turn(Script(end="incomplete", reply="abcdefgh"), ctx())
    assert incomplete == ReplyTurn("abcd", incomplete_reason="max_completion_tokens")


def test_token_limits_end_the_turn_incomplete() -> None:
    model = ScriptedModel()
    assert model.next_turn(Script(reply="x" * 40), ctx(max_completion_tokens=5)) == ReplyTurn("x" * 20, "max_completion_tokens")
    assert model.next_turn(None, ctx(prompt_tokens=900, max_prompt_tokens=256)).incomplete_reason == "max_prompt_tokens"


def test_directive_is_found_only_at_a_line_start() -> None:
    assert find_directive('Question?\n@emulator {"end": "failed"}') == '{"end": "failed"}'
    assert find_directive("mail me @emulator later") is None
    assert find_directive("@emulator my-scenario") == "my-scenario"


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ('{"rounds": [[{"name": "x", "count": 0}]]}', "rounds.0.0.count"),
        ('{"rounds": [[{"name": "x", "arguments": {}, "raw_arguments": "{}"}]]}', "either 'arguments' or 'raw_arguments'"),
        ('{"end": "exploded"}', "end"),
        ('{"surprise": 1}', "surprise"),
        ("{nope", "not JSON"),
        ("ghost", "unknown emulator scenario 'ghost'"),
    ],
)
def test_bad_scripts_say_what_is_wrong(directive: str, message: str) -> None:
    with pytest.raises(ScriptError) as exc:
        script_from_directive(directive, {}, source="message msg_1")
    assert message in str(exc.value) and "message msg_1" in str(exc.value)


def test_parse_script_round_trips() -> None:
    data = {"rounds": [[{"name": "t", "arguments": {"k": "v"}}]], "reply": "r", "turn_seconds": 0.5}
    assert parse_script(data, source="s").model_dump(exclude_defaults=True) == data
