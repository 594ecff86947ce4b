"""Write ``docs/emulator-fidelity.md``: the audit of every object the emulator sends.

One table per object: each key the pinned spec lists, its type there, and what the emulator
sends, from the spec and `tests.fidelity.DIFFERENCES` (the table `tests/test_fidelity.py`
enforces on the wire). Run ``python -m tests.fidelity --write`` after changing either; a test
fails while the document is stale.
"""

from __future__ import annotations

from typing import Any

from tests.fidelity import ASSISTANTS, DIFFERENCES, EXTRA, MISSING, NOT_NULL, NULL, RESPONSES
from tests.openapi_spec import _spec

_REF = "#/components/schemas/"

# (API, schema, what it is), in the order a reader meets them.
OBJECTS: tuple[tuple[str, str, str], ...] = (
    (ASSISTANTS, "AssistantObject", "an assistant"),
    (ASSISTANTS, "AssistantToolsFunction", "a function tool of an assistant or run"),
    (ASSISTANTS, "AssistantToolsFileSearch", "a file_search tool"),
    (ASSISTANTS, "ThreadObject", "a thread"),
    (ASSISTANTS, "MessageObject", "a message"),
    (ASSISTANTS, "MessageDeltaObject", "a message delta (stream event `thread.message.delta`)"),
    (ASSISTANTS, "RunObject", "a run"),
    (ASSISTANTS, "RunToolCallObject", "a tool call a run waits for"),
    (ASSISTANTS, "RunStepObject", "a run step"),
    (ASSISTANTS, "RunStepDeltaObject", "a run step delta (stream event `thread.run.step.delta`)"),
    (ASSISTANTS, "ListRunsResponse", "a list page (assistants, messages, runs and steps alike)"),
    (ASSISTANTS, "DeleteThreadResponse", "a deleted object (assistants and messages alike)"),
    (ASSISTANTS, "Error", "an error, in `{\"error\": ...}`, on both APIs"),
    (RESPONSES, "Response", "a response"),
    (RESPONSES, "Reasoning", "a response's `reasoning`"),
    (RESPONSES, "ResponseTextParam", "a response's `text`"),
    (RESPONSES, "FunctionTool", "a function tool of a response"),
    (RESPONSES, "OutputMessage", "an output message"),
    (RESPONSES, "FunctionToolCall", "a function call output item"),
    (RESPONSES, "Message", "an input message, listed as an item"),
    (RESPONSES, "InputTextContent", "a text part of an input message"),
    (RESPONSES, "FunctionToolCallResource", "a function call, listed as an item"),
    (RESPONSES, "FunctionToolCallOutputResource", "a function call output, listed as an item"),
    (RESPONSES, "ResponseItemList", "a page of items (input items, conversation items)"),
    (RESPONSES, "ConversationResource", "a conversation"),
    (RESPONSES, "DeletedResponse", "a deleted response"),
    (RESPONSES, "DeletedConversationResource", "a deleted conversation"),
)

_SENT = {
    MISSING: "**not sent**",
    EXTRA: "**sent, not in the spec**",
    NULL: "sent, **null** when unset",
    NOT_NULL: "sent, **never null**",
}


def render() -> str:
    lines = [
        "# The emulator against the spec and the service, object by object",
        "",
        "<!-- Written by `python -m tests.fidelity --write` from the pinned spec (tests/openapi/) and",
        "     the differences in tests/fidelity.py; tests/test_fidelity.py enforces both. Do not edit. -->",
        "",
        "Every object the emulator sends, key by key, against the pinned OpenAI spec "
        "([tests/openapi/README.md](../tests/openapi/README.md)). The emulator sends every key the "
        "spec lists, with the spec's type (timestamps as integer seconds, also where the Responses "
        "spec says `number`), and nothing else, except where a row says otherwise: there the real "
        "service did not do what the spec says (*service*), or the key describes a feature the "
        "emulator does not model (*emulator*). `tests/test_fidelity.py` walks every endpoint and "
        "stream event and fails on any other difference. The rest of what differs (headers, "
        "validation, IDs, models) is in [emulator.md](emulator.md#what-differs-from-openai). Back "
        "to the [README](../README.md).",
        "",
        "| kind | count |",
        "|---|---|",
    ]
    for kind, label in _SENT.items():
        lines.append(f"| {label.replace('**', '')} | {sum(1 for d in DIFFERENCES if d.kind == kind)} |")
    for api, schema, what in OBJECTS:
        lines += ["", f"## `{schema}` ({'Responses' if api == RESPONSES else 'Assistants'}): {what}", ""]
        lines += _table(api, schema)
    lines.append("")
    return "\n".join(lines)


def _table(api: str, schema: str) -> list[str]:
    schemas = _spec(api).schemas
    properties, required = _properties(schemas, schemas[schema])
    differences = {(d.key, d.kind): d for d in DIFFERENCES if d.api == api and d.schema == schema}
    rows = ["| key | spec type | required | the emulator | why it differs |", "|---|---|---|---|---|"]
    keys = list(properties) + sorted({key for key, kind in differences if kind == EXTRA} - set(properties))
    for key in keys:
        found = [d for (k, _), d in differences.items() if k == key]
        sent = "; ".join(_SENT[d.kind] for d in found) or "sent"
        why = " ".join(f"*{d.by}*: {d.reason}" for d in found)
        spec_type = _type_name(properties[key]) if key in properties else "(not in the spec)"
        rows.append(f"| `{key}` | {spec_type} | {'yes' if key in required else ''} | {sent} | {why} |")
    nested = sorted({key for key, _ in differences} - set(keys))
    for key in nested:  # keys of an object nested inline in this one
        found = [d for (k, _), d in differences.items() if k == key]
        rows.append(
            f"| (nested) `{key}` | | | {'; '.join(_SENT[d.kind] for d in found)} | "
            + " ".join(f"*{d.by}*: {d.reason}" for d in found)
            + " |"
        )
    return rows


def _properties(schemas: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    properties: dict[str, Any] = {}
    required: set[str] = set()
    for member in [schema, *schema.get("allOf", [])]:
        if "$ref" in member:
            member = schemas[member["$ref"].removeprefix(_REF)]
            nested, needed = _properties(schemas, member)
            properties.update(nested)
            required |= needed
            continue
        properties.update(member.get("properties", {}))
        required |= set(member.get("required", []))
    return properties, required


def _type_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].removeprefix(_REF)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            names = [_type_name(branch) for branch in schema[union]]
            return " or ".join(dict.fromkeys(names))
    if "allOf" in schema:
        return " and ".join(_type_name(member) for member in schema["allOf"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type_name(schema['items'])}"
    if "enum" in schema:
        values = ", ".join(f"`{v}`" for v in schema["enum"][:6])
        return f"{kind}: {values}{', ...' if len(schema['enum']) > 6 else ''}"
    if schema.get("format") == "unixtime":
        return f"{kind} (unix time)"
    return kind

