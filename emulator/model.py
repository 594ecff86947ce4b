"""The scripted model: decides each turn of a run, deterministically.

It knows nothing of threads, runs or HTTP. An API surface (the Assistants API in
``engine.py``, the Responses API in ``responses.py``) describes the conversation as a ``TurnContext``
and gets back a ``Turn``: call these tools, reply with this text, or fail. The same model
can therefore sit behind any API that has the notion of tool calls and outputs.

Default policy, when no script applies:

- no function tools, or ``tool_choice: "none"``: reply ``You said: <the user's text>``;
- ``tool_choice`` naming a function: call that function once, then reply;
- otherwise call every function tool once, all in one round when ``parallel_tool_calls``
  is on, else one per round; then reply with a line per tool output.

Tool outputs for calls the model cannot see (``orphan_outputs``: a stateless gateway dropped
the ``previous_response_id`` chain that held the calls, so the turn has the outputs and nothing
before them) override every script and the policy: the model makes no calls and replies with
its default text (``You said: <the user's text>``, or a greeting when there is no user text).

Arguments are made from each tool's JSON schema: ``const``, ``default``, the first of
``examples`` or ``enum``, else a value of the declared type (strings get the user's text).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from durable_assistants.emulator.script import Script


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    description: str | None
    parameters: dict[str, Any] | None


@dataclass(frozen=True)
class CompletedCall:
    name: str
    arguments: str
    output: str


@dataclass
class TurnContext:
    user_text: str
    tools: list[FunctionSpec]
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    rounds_done: list[list[CompletedCall]] = field(default_factory=list)
    prompt_tokens: int = 0
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    # Outputs of function calls that are not in the context (see the module docstring).
    orphan_outputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedCall:
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallsTurn:
    calls: list[PlannedCall]


@dataclass(frozen=True)
class ReplyTurn:
    text: str
    incomplete_reason: str | None = None


@dataclass(frozen=True)
class FailTurn:
    code: str
    message: str


Turn = ToolCallsTurn | ReplyTurn | FailTurn

DEFAULT_ERROR_MESSAGES = {
    "server_error": "Sorry, something went wrong.",
    "rate_limit_exceeded": "You exceeded your current quota, please check your plan and billing details.",
    "invalid_prompt": "Invalid prompt: the emulator's script asked for this failure.",
}


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters a token."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


class ScriptedModel:
    def next_turn(self, script: Script | None, ctx: TurnContext) -> Turn:
        if ctx.max_prompt_tokens is not None and ctx.prompt_tokens > ctx.max_prompt_tokens:
            return ReplyTurn("", incomplete_reason="max_prompt_tokens")
        if ctx.orphan_outputs:
            # Answers to calls it never made: no script, no tools, just its default text.
            turn: Turn = ReplyTurn(self._reply_text(None, ctx))
        elif script is not None:
            turn = self._scripted(script, ctx)
        else:
            turn = self._default(ctx)
        if isinstance(turn, ReplyTurn) and turn.incomplete_reason is None and ctx.max_completion_tokens is not None:
            if count_tokens(turn.text) > ctx.max_completion_tokens:
                cut = ctx.max_completion_tokens * 4
                return ReplyTurn(turn.text[:cut], incomplete_reason="max_completion_tokens")
        return turn

    def _scripted(self, script: Script, ctx: TurnContext) -> Turn:
        done = len(ctx.rounds_done)
        if done < len(script.rounds):
            calls = [
                PlannedCall(call.name, call.arguments_text())
                for call in script.rounds[done]
                for _ in range(call.count)
            ]
            return ToolCallsTurn(calls)
        if script.end == "failed":
            return FailTurn(script.error_code, script.error_message or DEFAULT_ERROR_MESSAGES[script.error_code])
        text = self._reply_text(script.reply, ctx)
        if script.end == "incomplete":
            return ReplyTurn(text[: max(1, len(text) // 2)], incomplete_reason=script.incomplete_reason)
        return ReplyTurn(text)

    def _default(self, ctx: TurnContext) -> Turn:
        if not ctx.tools or ctx.tool_choice == "none":
            return ReplyTurn(self._reply_text(None, ctx))
        called = {call.name for round_ in ctx.rounds_done for call in round_}
        if isinstance(ctx.tool_choice, dict):
            name = ctx.tool_choice.get("function", {}).get("name")
            chosen = [t for t in ctx.tools if t.name == name and name not in called]
        else:
            chosen = [t for t in ctx.tools if t.name not in called]
        if not chosen:
            return ReplyTurn(self._reply_text(None, ctx))
        if not ctx.parallel_tool_calls:
            chosen = chosen[:1]
        return ToolCallsTurn([PlannedCall(t.name, json.dumps(example_arguments(t.parameters, ctx.user_text))) for t in chosen])

    @staticmethod
    def _reply_text(template: str | None, ctx: TurnContext) -> str:
        outputs = "\n".join(
            f"- {call.name}: {call.output}" for round_ in ctx.rounds_done for call in round_
        )
        if template is not None:
            return template.replace("{outputs}", outputs).replace("{user}", ctx.user_text)
        if outputs:
            count = sum(len(r) for r in ctx.rounds_done)
            return f"Here is what the {count} tool call{'s' if count != 1 else ''} returned:\n{outputs}"
        return f"You said: {ctx.user_text}" if ctx.user_text else "Hello from the durable-assistants emulator."


def example_arguments(schema: dict[str, Any] | None, user_text: str) -> dict[str, Any]:
    if not schema:
        return {}
    value = _example(schema, schema, user_text, depth=0)
    return value if isinstance(value, dict) else {}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/X``, as pydantic writes nested models)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return target if isinstance(target, dict) else {}


def _example(schema: dict[str, Any], root: dict[str, Any], user_text: str, depth: int) -> Any:
    if depth > 8:
        return None
    schema = _resolve(schema, root)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    for key in ("examples", "enum"):
        if schema.get(key):
            return schema[key][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _example(schema[key][0], root, user_text, depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _example(sub, root, user_text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        items = schema.get("items")
        return [_example(items, root, user_text, depth + 1)] if isinstance(items, dict) else []
    if kind == "string":
        return user_text[:64] or "example"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return None
