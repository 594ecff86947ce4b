"""Exact shape checks: every object the emulator sends, key by key, against the pinned spec.

`tests/openapi_spec.py` checks what JSON Schema can say: ``required`` keys, types, enums.
The pinned spec marks few keys required and allows any extra key, and JSON Schema counts
``1.0`` as an integer, so a body can pass it and still differ from what OpenAI sent: a key
left out, a key OpenAI never sent, a float timestamp. This module checks what the service
did instead:

* **no missing key**: every property the spec lists for an object is present (``null``
  where it has no value), as the service sent them;
* **no extra key**: nothing the spec does not list;
* **exact types**: ``integer`` is a JSON integer (not ``1.0``), ``number`` an integer or a
  float, ``boolean`` not ``0``/``1``; every ``format: unixtime`` value is an integer of
  seconds (the Responses spec types timestamps as ``number``, the service sent integers);
* enums and consts as published.

Where the real service did not do what the spec says, the difference is a `Difference` in
`DIFFERENCES`, with its reason; `docs/emulator-fidelity.md` is written from that table and
the spec (``python -m tests.fidelity --write``; a test checks the file is current). A check
that fails names the object, the JSON path, the key and what was wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.openapi_spec import ASSISTANTS, RESPONSES, SpecViolation, _spec

# Kinds of difference between an object and its schema.
MISSING = "missing"  # the spec lists the key; the object lacks it
EXTRA = "extra"  # the object has a key the spec does not list
TYPE = "type"  # the value's JSON type is not the spec's
NULL = "null"  # null where the spec's type has none
NOT_NULL = "not null"  # null where the service always sent a value

_REF = "#/components/schemas/"
_JSON_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


@dataclass(frozen=True)
class Difference:
    """A known difference between the spec and what the emulator sends, kept on purpose.

    ``schema`` is the spec's component whose object holds ``key``; ``kind`` is `MISSING`
    (the key the spec lists is not sent), `EXTRA` (a key the spec does not list is sent),
    `NULL` (null is sent where the spec's type has no null) or `NOT_NULL` (the spec allows
    null, but the service always sent a value: the check then refuses null). ``by`` says
    whose behaviour it is: ``"service"`` (what OpenAI sent) or ``"emulator"`` (a feature the
    emulator does not model).
    """

    api: str
    schema: str
    key: str
    kind: str
    by: str
    reason: str


_LATER = (
    "describes a feature newer than the recorded traffic ({feature}) that the emulator does not "
    "model; OpenAI sends it only where that feature is used"
)


def _later(api: str, schema: str, key: str, feature: str) -> Difference:
    return Difference(api, schema, key, MISSING, "emulator", _LATER.format(feature=feature))


def _empty_not_null(schema: str, key: str, empty: str) -> Difference:
    return Difference(
        ASSISTANTS, schema, key, NOT_NULL, "service",
        f"the spec allows null; the service sent `{empty}` when there was nothing",
    )


DIFFERENCES: tuple[Difference, ...] = (
    # Assistants API
    Difference(
        ASSISTANTS, "RunStepObject", "expired_at", MISSING, "service",
        "the service sent `expires_at` on run steps (the run's deadline while the step is open, null once "
        "it ended unless it expired), not the `expired_at` the spec declares; the SDK's "
        "`RunStep.expired_at` reads None",
    ),
    Difference(
        ASSISTANTS, "MessageDeltaObject", "role", MISSING, "service",
        "a message delta carried only what changed, its `content`; the role came with `thread.message.created`",
    ),
    Difference(
        ASSISTANTS, "AssistantToolsFileSearch", "max_num_results", MISSING, "service",
        "a `file_search` tool was echoed with the `ranking_options` applied; `max_num_results` only when "
        "the request set it",
    ),
    _empty_not_null("AssistantObject", "tool_resources", "{}"),
    _empty_not_null("ThreadObject", "tool_resources", "{}"),
    _empty_not_null("AssistantObject", "metadata", "{}"),
    _empty_not_null("ThreadObject", "metadata", "{}"),
    _empty_not_null("MessageObject", "metadata", "{}"),
    _empty_not_null("RunObject", "metadata", "{}"),
    _empty_not_null("MessageObject", "attachments", "[]"),
    # Responses API
    Difference(
        RESPONSES, "Response", "output_text", MISSING, "service",
        "a convenience property the SDKs compute from `output` (the spec marks it SDK-only); the service "
        "did not send it",
    ),
    Difference(
        RESPONSES, "Response", "store", EXTRA, "service",
        "the service echoed `store` (true unless the request said false) on every response; the spec's "
        "`Response` does not list it, the SDK's type has it",
    ),
    Difference(
        RESPONSES, "Response", "user", NULL, "service",
        "the service sent `\"user\": null` when the request had none; the spec types it as a string",
    ),
    _later(RESPONSES, "Response", "prompt_cache_options", "prompt-cache options of gpt-5.6 and later"),
    _later(RESPONSES, "Response", "moderation", "moderated completions"),
    Difference(
        RESPONSES, "Reasoning", "generate_summary", MISSING, "service",
        "the service sent `reasoning` as `{effort, summary}` (both null for a model that does not reason); "
        "`generate_summary` is the deprecated name of `summary`",
    ),
    _later(RESPONSES, "Reasoning", "mode", "reasoning modes; the service sent `{effort, summary}`"),
    _later(RESPONSES, "Reasoning", "context", "reasoning context; the service sent `{effort, summary}`"),
    _later(RESPONSES, "OutputMessage", "phase", "message phases of gpt-5.3-codex and later"),
    _later(RESPONSES, "Message", "phase", "message phases of gpt-5.3-codex and later"),
    _later(RESPONSES, "FunctionToolCall", "caller", "programmatic tool calling"),
    _later(RESPONSES, "FunctionToolCallResource", "caller", "programmatic tool calling"),
    _later(RESPONSES, "FunctionToolCallOutputResource", "caller", "programmatic tool calling"),
    _later(RESPONSES, "FunctionToolCall", "namespace", "tool namespaces"),
    _later(RESPONSES, "FunctionToolCallResource", "namespace", "tool namespaces"),
    _later(RESPONSES, "FunctionToolCallOutputResource", "namespace", "tool namespaces"),
    _later(RESPONSES, "FunctionToolCallOutputResource", "name", "tool namespaces"),
    _later(RESPONSES, "FunctionToolCallResource", "created_by", "items created by other actors"),
    _later(RESPONSES, "FunctionToolCallOutputResource", "created_by", "items created by other actors"),
    _later(RESPONSES, "FunctionTool", "allowed_callers", "programmatic tool calling"),
    _later(RESPONSES, "FunctionTool", "defer_loading", "tool search"),
    _later(RESPONSES, "FunctionTool", "output_schema", "function output schemas"),
    _later(RESPONSES, "InputTextContent", "prompt_cache_breakpoint", "prompt-cache breakpoints"),
)


@dataclass(frozen=True)
class Problem:
    """One way an object differs from its schema."""

    schema: str
    path: str
    key: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.schema} at {self.path}: {self.detail}"


class _Checker:
    def __init__(self, api: str, allowed: Iterable[Difference]) -> None:
        self.api = api
        self.schemas = _spec(api).schemas
        self.allowed = {(d.schema, d.key, d.kind) for d in allowed if d.api == api}

    def resolve(self, schema: dict[str, Any], owner: str) -> tuple[dict[str, Any], str]:
        while "$ref" in schema:
            name = schema["$ref"].removeprefix(_REF)
            schema, owner = self.schemas[name], name
        return schema, owner

    def check(self, schema: dict[str, Any], value: Any, path: str, owner: str) -> list[Problem]:
        schema, owner = self.resolve(schema, owner)
        for union in ("anyOf", "oneOf"):
            if union in schema:
                return self._union(schema[union], value, path, owner)
        if "allOf" in schema:
            return self._all_of(schema, value, path, owner)
        problems = self._type(schema, value, path, owner)
        if problems:
            return problems
        if "const" in schema and value != schema["const"]:
            return [Problem(owner, path, "", TYPE, f"{value!r} is not the constant {schema['const']!r}")]
        if "enum" in schema and value not in schema["enum"]:
            return [Problem(owner, path, "", TYPE, f"{value!r} is not one of {schema['enum']}")]
        if isinstance(value, dict):
            return self._object(schema.get("properties"), schema.get("additionalProperties"), value, path, owner)
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [p for i, item in enumerate(value) for p in self.check(schema["items"], item, f"{path}[{i}]", owner)]
        return []

    def _type(self, schema: dict[str, Any], value: Any, path: str, owner: str) -> list[Problem]:
        expected = schema.get("type")
        if expected is None and "properties" in schema:
            expected = "object"
        if schema.get("format") == "unixtime" and value is not None:
            expected = "integer"  # the service sent integer seconds, also where the spec says number
        if expected is None:
            return []
        names = expected if isinstance(expected, list) else [expected]
        if any(_JSON_TYPES[name](value) for name in names):
            return []
        return [Problem(owner, path, path.rsplit(".", 1)[-1], TYPE, f"{_short(value)} is not of type {' or '.join(names)}")]

    def _object(
        self, properties: dict[str, Any] | None, additional: Any, value: dict[str, Any], path: str, owner: str
    ) -> list[Problem]:
        problems: list[Problem] = []
        if properties is None:
            if isinstance(additional, dict):  # a map, such as metadata
                for key, item in value.items():
                    problems += self.check(additional, item, f"{path}.{key}", owner)
            return problems
        for key in properties.keys() - value.keys():
            if (owner, key, MISSING) not in self.allowed:
                problems.append(Problem(owner, path, key, MISSING, f"key {key!r} is missing"))
        for key in value.keys() - properties.keys():
            if (owner, key, EXTRA) not in self.allowed:
                problems.append(Problem(owner, path, key, EXTRA, f"key {key!r} is not in the spec (value {_short(value[key])})"))
        for key in value.keys() & properties.keys():
            if (owner, key, NOT_NULL) in self.allowed:
                if value[key] is None:
                    problems.append(Problem(owner, path, key, NOT_NULL, f"key {key!r} is null; the service sent a value"))
                    continue
                if value[key] in ({}, []):  # the service's "nothing", as empty as it was
                    continue
            if value[key] is None and (owner, key, NULL) in self.allowed:
                continue
            for problem in self.check(properties[key], value[key], f"{path}.{key}", owner):
                if (problem.schema, problem.key, problem.kind) not in self.allowed:
                    problems.append(problem)
        return problems

    def _all_of(self, schema: dict[str, Any], value: Any, path: str, owner: str) -> list[Problem]:
        properties: dict[str, Any] = {}
        typed: list[dict[str, Any]] = []

        def collect(member: dict[str, Any]) -> None:
            member, _ = self.resolve(member, owner)
            for nested in member.get("allOf", []):
                collect(nested)
            properties.update(member.get("properties", {}))
            if "type" in member or "enum" in member:
                typed.append(member)

        collect(schema)
        if not properties:
            return [p for member in typed for p in self.check(member, value, path, owner)]
        if not isinstance(value, dict):
            return [Problem(owner, path, path.rsplit(".", 1)[-1], TYPE, f"{_short(value)} is not of type object")]
        return self._object(properties, None, value, path, owner)

    def _union(self, branches: list[dict[str, Any]], value: Any, path: str, owner: str) -> list[Problem]:
        best: list[Problem] | None = None
        for branch in branches:
            if value is not None and self.resolve(branch, owner)[0].get("type") == "null":
                continue  # a value is never reported against the null branch
            problems = self.check(branch, value, path, owner)
            if not problems:
                return []
            if self._names_this_branch(branch, value, owner):
                return problems
            if best is None or len(problems) < len(best):
                best = problems
        return best or []

    def _names_this_branch(self, branch: dict[str, Any], value: Any, owner: str) -> bool:
        """True when ``value``'s ``type``/``object`` discriminator picks this branch."""
        if not isinstance(value, dict):
            return False
        resolved, _ = self.resolve(branch, owner)
        members = [resolved] + [self.resolve(m, owner)[0] for m in resolved.get("allOf", [])]
        for member in members:
            for key in ("type", "object"):
                spec = member.get("properties", {}).get(key)
                if isinstance(spec, dict) and key in value:
                    allowed = spec.get("enum") or ([spec["const"]] if "const" in spec else None)
                    if allowed and value[key] in allowed:
                        return True
        return False


def shape_problems(schema: str, body: Any, api: str | None = None, *, allowed: Iterable[Difference] = DIFFERENCES) -> list[Problem]:
    """Every way ``body`` differs from ``#/components/schemas/<schema>``, less ``allowed``."""
    if api is None:
        api = ASSISTANTS if schema in _spec(ASSISTANTS).schemas else RESPONSES
    if schema not in _spec(api).schemas:
        raise KeyError(f"the pinned spec has no schema named {schema!r}")
    return _Checker(api, allowed).check({"$ref": _REF + schema}, body, "$", schema)


def event_problems(api: str, event: str, data: Any, *, allowed: Iterable[Difference] = DIFFERENCES) -> list[Problem]:
    """Every way one stream event's data differs from the spec's schema for that event."""
    spec = _spec(api)
    pointer = spec.event_data.get(event)
    if pointer is None:
        return [Problem(event, "$", "", EXTRA, f"stream event {event!r} is not in the spec")]
    node: Any = spec.document
    for part in pointer.strip("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    owner = pointer.split("/")[3]
    return _Checker(api, allowed).check(node, data, "$", owner)


def check_shape(schema: str, body: Any, api: str | None = None) -> None:
    """Raise `SpecViolation` listing every difference of ``body`` from its schema's exact shape."""
    problems = shape_problems(schema, body, api)
    if problems:
        raise SpecViolation(f"{schema} differs from the spec's shape:\n" + "\n".join(f"  {p}" for p in problems))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --- the audit document ---------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "emulator-fidelity.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC.name}")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {DOC.name} is not current")
    args = parser.parse_args(argv)
    from tests.fidelity_audit import render

    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
        if current != text:
            print(f"{DOC} is not current; run: python -m tests.fidelity --write", file=sys.stderr)
            return 1
        return 0
    if args.write:
        DOC.write_text(text, encoding="utf-8")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
