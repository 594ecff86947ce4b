"""The Responses API's wire shapes, as this backend sends and reads them: one turn's
``responses.create`` arguments (``Turn.params``), Assistants-style tools, tool choice and
response format in their flat Responses form, request messages as input items, and the text
and outputs of the items a response left in a conversation. Pure functions: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from durable_assistants.workflows.models import MessageInput, RunRequest, RunSnapshot

TAG_KEY = "durable_assistants_key"


@dataclass
class Turn:
    request: RunRequest
    items: list[dict[str, Any]]
    conversation_id: str | None
    previous_response_id: str | None
    prior: RunSnapshot | None
    key: str
    # A stateless run's items so far (None: the server keeps the context).
    context: list[dict[str, Any]] | None = None
    # The turn runs in the foreground (no background mode); decided when it is created.
    foreground: bool = False
    # A stateless turn's whole input, as sent.
    sent: list[dict[str, Any]] | None = None

    def params(self, items: list[dict[str, Any]], registry_tools: list[dict[str, Any]]) -> dict[str, Any]:
        """``responses.create`` keyword arguments: the request's settings, repeated every turn
        (a response inherits the chain's items, not its instructions or tools)."""
        request = self.request
        params: dict[str, Any] = {"metadata": {**(request.metadata or {}), TAG_KEY: self.key}}
        if not self.foreground:
            params["background"] = True
        if self.context is not None:
            # Nothing is stored; reasoning comes back encrypted, to be sent with the next turn.
            params["store"] = False
            params["include"] = ["reasoning.encrypted_content"]
            items = self.context + items
        else:
            params["store"] = True
        if items:
            params["input"] = items
        if self.conversation_id is not None:
            params["conversation"] = self.conversation_id
        elif self.previous_response_id is not None:
            params["previous_response_id"] = self.previous_response_id
        if request.model is not None:
            params["model"] = request.model
        if request.prompt is not None:
            params["prompt"] = request.prompt.model_dump(exclude_none=True)
        if request.instructions is not None:
            params["instructions"] = request.instructions
        tools = [flat_tool(t) for t in request.tools] if request.tools is not None else (None if request.prompt else registry_tools)
        if tools:
            params["tools"] = tools
        if request.tool_choice is not None:
            params["tool_choice"] = flat_tool_choice(request.tool_choice)
        for name in ("parallel_tool_calls", "temperature", "top_p"):
            if getattr(request, name) is not None:
                params[name] = getattr(request, name)
        if request.max_completion_tokens is not None:
            params["max_output_tokens"] = request.max_completion_tokens
        if isinstance(request.response_format, dict):
            params["text"] = {"format": text_format(request.response_format)}
        return params


def flat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An Assistants/Chat function tool (``{"type": "function", "function": {...}}``) in the
    flat Responses shape (``{"type": "function", "name": ...}``); other tools as they are."""
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return {"type": "function", **tool["function"]}
    return tool


def flat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        return {"type": "function", "name": choice["function"]["name"]}
    return choice


def text_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """An Assistants ``response_format`` as a Responses ``text.format``."""
    if response_format.get("type") == "json_schema" and isinstance(response_format.get("json_schema"), dict):
        return {"type": "json_schema", **response_format["json_schema"]}
    return response_format


def message_item(message: MessageInput) -> dict[str, Any]:
    """A request message as a Responses input message (text parts become input_text/output_text)."""
    content: Any = message.content
    if isinstance(content, list):
        text_type = "input_text" if message.role == "user" else "output_text"
        content = [_content_part(part, text_type) for part in content]
    return {"type": "message", "role": message.role, "content": content}


def _content_part(part: dict[str, Any], text_type: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return {"type": text_type, "text": text.get("value", "") if isinstance(text, dict) else text}
    if kind == "image_url" and isinstance(part.get("image_url"), dict):
        image = part["image_url"]
        return {"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail", "auto")}
    if kind == "image_file" and isinstance(part.get("image_file"), dict):
        image = part["image_file"]
        return {"type": "input_image", "file_id": image.get("file_id"), "detail": image.get("detail", "auto")}
    return part


def item_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: Iterable[Any] = content or []
    texts = []
    for part in parts:
        text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
        if isinstance(text, str):
            texts.append(text)
    return "".join(texts)


def output_items(items: list[Any]) -> list[Any]:
    """What a response left in a conversation: its function calls and assistant messages."""
    return [
        item for item in items
        if item.type == "function_call" or (item.type == "message" and getattr(item, "role", None) == "assistant")
    ]
