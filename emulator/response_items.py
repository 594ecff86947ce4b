"""Items of the Responses and Conversations APIs: checking the ones a client sends and
storing them the way the service returned them.

A request's ``input`` (and a conversation's ``items``) is a list of items told apart by
``type``. Validating the list against the SDK's union of ~30 item types makes pydantic report
every branch, so a bad item would get an error about some unrelated branch. Instead each item
is dispatched on its ``type`` (a ``role`` without a ``type`` is a message, as the SDK's
``EasyInputMessageParam`` has it) and checked against the one SDK type it claims to be. Item
kinds the scripted model can't use (reasoning, hosted tool calls, references) are refused
with a 400 that says which kinds are supported.

Stored items are plain dicts, each built through the SDK's response type for that kind
(``ResponseInputMessageItem``, ``ResponseOutputMessage``, ``ResponseFunctionToolCallItem``,
``ResponseFunctionToolCallOutputItem``) and carrying an ``id`` and ``status: completed``.
The same dict (same ID) is what a response's ``input_items`` and a conversation's items list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openai.types.responses import (
    EasyInputMessageParam,
    ResponseFunctionToolCallItem,
    ResponseFunctionToolCallOutputItem,
    ResponseFunctionToolCallParam,
    ResponseInputFileParam,
    ResponseInputImageParam,
    ResponseInputMessageItem,
    ResponseInputTextParam,
    ResponseOutputMessage,
)
from openai.types.responses.response_input_item_param import FunctionCallOutput

from durable_assistants.emulator.engine import dump
from durable_assistants.emulator.errors import bad_request
from durable_assistants.emulator.validation import validate_value, wrong_type

SUPPORTED_TYPES = ("message", "function_call", "function_call_output")
MESSAGE_ROLES = ("assistant", "developer", "system", "user")
# Parts an assistant message may carry when a client sends earlier model output back.
_ASSISTANT_TEXT_PARTS = ("output_text", "input_text")

_INPUT_PARTS = {"input_text": ResponseInputTextParam, "input_image": ResponseInputImageParam, "input_file": ResponseInputFileParam}

NewId = Callable[[str], str]


def parse_items(value: Any, param: str) -> list[dict[str, Any]]:
    """Check a list of input items (or the string shorthand for one user message); return
    them as validated request dicts, not yet stored."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise wrong_type(param, "a string or an array of input items", value)
    return [_parse_item(item, (param, i)) for i, item in enumerate(value)]


def _parse_item(item: Any, at: tuple[Any, ...]) -> dict[str, Any]:
    where = f"{at[0]}[{at[1]}]"
    if not isinstance(item, dict):
        raise wrong_type(where, "an object (an input item)", item)
    kind = item.get("type")
    if kind is None:
        if "role" not in item:
            raise bad_request(f"Missing required parameter: '{where}.type'.", param=f"{where}.type", code="missing_required_parameter")
        kind = "message"
    if kind == "message":
        return _parse_message(item, at, where)
    if kind == "function_call":
        return {**validate_value(ResponseFunctionToolCallParam, item, at=at), "type": "function_call"}
    if kind == "function_call_output":
        parsed = validate_value(FunctionCallOutput, item, at=at)
        if not parsed.get("call_id"):
            raise bad_request(
                f"Missing required parameter: '{where}.call_id'.", param=f"{where}.call_id", code="missing_required_parameter"
            )
        return parsed
    supported = ", ".join(f"'{t}'" for t in SUPPORTED_TYPES)
    raise bad_request(
        f"Invalid value for '{where}.type': {kind!r}. The emulator's model understands items of type {supported}.",
        param=f"{where}.type",
        code="invalid_value",
    )


def _parse_message(item: dict[str, Any], at: tuple[Any, ...], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        if role is None:
            raise bad_request(f"Missing required parameter: '{where}.role'.", param=f"{where}.role", code="missing_required_parameter")
        raise bad_request(
            f"Invalid value for '{where}.role': {role!r}. Supported values are: {', '.join(repr(r) for r in MESSAGE_ROLES)}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    content = item.get("content")
    if role == "assistant" and isinstance(content, list):
        # Earlier model output sent back: `output_text` parts, with or without the
        # `annotations`, `id` and `status` the service returned with them.
        parts = []
        for j, part in enumerate(content):
            part_at = f"{where}.content[{j}]"
            if not isinstance(part, dict):
                raise wrong_type(part_at, "an object (a content part)", part)
            if part.get("type") not in _ASSISTANT_TEXT_PARTS:
                raise bad_request(
                    f"Invalid value for '{part_at}.type': {part.get('type')!r}. Supported values are: 'output_text', 'input_text'.",
                    param=f"{part_at}.type",
                    code="invalid_value",
                )
            if not isinstance(part.get("text"), str):
                raise wrong_type(f"{part_at}.text", "a string", part.get("text"))
            parts.append({"type": "output_text", "text": part["text"]})
        return {"type": "message", "role": "assistant", "content": parts}
    if isinstance(content, list):
        for j, part in enumerate(content):
            _check_input_part(part, (*at, "content", j), f"{where}.content[{j}]")
    elif not isinstance(content, str):
        if content is None:
            raise bad_request(
                f"Missing required parameter: '{where}.content'.", param=f"{where}.content", code="missing_required_parameter"
            )
        raise wrong_type(f"{where}.content", "a string or an array of content parts", content)
    parsed = validate_value(EasyInputMessageParam, item, at=at)
    parsed["type"] = "message"
    return parsed


def _check_input_part(part: Any, at: tuple[Any, ...], where: str) -> None:
    # Checked one by one so that an error names the part's own fields, not a union branch.
    if not isinstance(part, dict):
        raise wrong_type(where, "an object (a content part)", part)
    part_type = _INPUT_PARTS.get(str(part.get("type")))
    if part_type is None:
        raise bad_request(
            f"Invalid value for '{where}.type': {part.get('type')!r}. Supported values are: {', '.join(repr(t) for t in _INPUT_PARTS)}.",
            param=f"{where}.type",
            code="invalid_value",
        )
    validate_value(part_type, part, at=at)


# ---------------------------------------------------------------------------- stored items


def store_item(item: dict[str, Any], new_id: NewId) -> dict[str, Any]:
    """A validated input item as the API lists it: with an ``id`` and ``status``."""
    kind = item["type"]
    if kind == "message":
        content = item["content"]
        if item["role"] == "assistant":
            texts = [content] if isinstance(content, str) else [part["text"] for part in content]
            return output_message(new_id("msg_"), "completed", texts)
        parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
        return dump(
            ResponseInputMessageItem.model_validate(
                {"id": new_id("msg_"), "type": "message", "role": item["role"], "content": parts, "status": "completed"}
            )
        )
    if kind == "function_call":
        return dump(
            ResponseFunctionToolCallItem.model_validate(
                {
                    "id": item.get("id") or new_id("fc_"),
                    "type": "function_call",
                    "call_id": item["call_id"],
                    "name": item["name"],
                    "arguments": item["arguments"],
                    "status": "completed",
                }
            )
        )
    return dump(
        ResponseFunctionToolCallOutputItem.model_validate(
            {
                "id": new_id("fco_"),
                "type": "function_call_output",
                "call_id": item["call_id"],
                "output": item["output"],
                "status": "completed",
            }
        )
    )


def output_message(item_id: str, status: str, texts: list[str]) -> dict[str, Any]:
    return dump(
        ResponseOutputMessage.model_validate(
            {
                "id": item_id,
                "type": "message",
                "role": "assistant",
                "status": status,
                "content": [{"type": "output_text", "text": t, "annotations": [], "logprobs": []} for t in texts],
            }
        )
    )


def text_of(item: dict[str, Any]) -> str:
    """The text of a stored message (or of a function call output), for the model and for
    token counts."""
    if item["type"] == "message":
        return "\n".join(part["text"] for part in item["content"] if isinstance(part.get("text"), str))
    if item["type"] == "function_call":
        return item["arguments"]
    if item["type"] == "function_call_output":
        return output_text(item["output"])
    return ""


def output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "\n".join(part["text"] for part in output if isinstance(part, dict) and isinstance(part.get("text"), str))


def is_user_message(item: dict[str, Any]) -> bool:
    return item["type"] == "message" and item["role"] == "user"
