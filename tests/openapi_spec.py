"""Check HTTP bodies and SSE events against the pinned OpenAI spec.

Why this exists: the emulator and the worker speak the Assistants wire format, and the
hosted API that defined it is gone. The only authority left is the pinned OpenAPI file
(``tests/openapi/assistants.yaml``, see ``tests/openapi/README.md`` for its source, licence and
how it was cut), so tests validate every JSON response
body and every stream event against it instead of trusting hand-written fixtures. The
Responses and Conversations APIs (the live successor) are checked the same way against
``responses.yaml``, cut from the same commit of the same spec: a request path is looked up
in both files, and a response stream's events are checked with
`validate_response_stream_event`.

The spec is read as published, with only these changes (each one is a gap, listed in
``tests/openapi/README.md``, between the spec and the traffic the real service sent):

* ``nullable: true`` (an OpenAPI 3.0 keyword that JSON Schema 2020-12 ignores) becomes
  ``anyOf: [<schema>, {type: "null"}]``. Where ``{nullable: true}`` is a member of an
  ``allOf`` (the spec's way of saying "this ``$ref``, or null"), the member is dropped and
  the whole ``allOf`` becomes nullable. Without this a completed run
  (``expires_at: null``) would fail.
* List pages (``List*Response``): ``first_id`` and ``last_id`` may be null, as they were
  on empty pages.
* ``RunObject.max_completion_tokens``: the spec's minimum is 256, but the service accepted
  less (16 ended the run ``incomplete``) and echoed it, so a run's value need only be >= 1.
* Run steps: the service sent ``expires_at`` where the spec declares ``expired_at``.
  Either name is accepted (typed like ``expired_at``), but one of the two must be present.
* Error statuses (any non-2xx): the spec documents only a body-less 429, yet the service
  answered 400/401/404/429/500 with ``{"error": {...}}``, so those bodies are validated
  against ``ErrorResponse``.
* Streams: the Assistants paths document no ``text/event-stream`` response; a stream is
  accepted for operations whose request body has a ``stream`` property (or, as
  ``GET /responses/{response_id}``, a ``stream`` query parameter, or that document the
  media type), and its events are checked one by one with `validate_stream_event` or
  `validate_response_stream_event`.

In ``responses.yaml`` (which already writes nullable fields as ``anyOf [.., null]``; the
rewrite finds nothing there) two more gaps are relaxed, for the same reasons:

* ``ResponseItemList`` and ``ConversationItemList``: ``first_id`` and ``last_id`` may be
  null on an empty page, as on every other list page.
* ``Response.usage`` may be null. The spec types it as a ``ResponseUsage`` object (though
  it is not required), but its own examples (``cancelResponse``) and the service sent
  ``"usage": null`` on responses that had not completed.
* ``Response.user`` may be null: the spec types it as a string, the service sent
  ``"user": null`` when the request had none.
* ``DELETE /responses/{response_id}``: the spec documents a ``200`` with no body; the service
  answered ``{"id", "object": "response.deleted", "deleted": true}`` (the spec's example says
  ``"object": "response"``). That body is checked against a schema written from what the
  service sent (``DeletedResponse``,
  added to the document here), since the SDK's test clients parse every JSON body.

Nothing else is loosened: ``required`` and ``additionalProperties`` stay as published.

The spec directory is ``$DA_OPENAI_SPEC_DIR`` if set, else ``tests/openapi`` in this
repository (the two files cut by ``tests/openapi/cut.py``). Each file is loaded once per process (the first call reads the
environment variable) and a validator is built once per schema.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match, relevance
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_DIR_ENV = "DA_OPENAI_SPEC_DIR"
SPEC_FILE = "assistants.yaml"
RESPONSES_SPEC_FILE = "responses.yaml"
ASSISTANTS, RESPONSES = "assistants", "responses"
# Which file describes which API; request paths are looked up in this order.
_SPEC_FILES = {ASSISTANTS: SPEC_FILE, RESPONSES: RESPONSES_SPEC_FILE}
_DEFAULT_SPEC_DIR = Path(__file__).resolve().parent / "openapi"

# Each document is registered under its own URI so that validators built for one schema
# still resolve that document's "#/components/schemas/..." references.
_SPEC_URI = "urn:durable-assistants:openai-spec:"
_SCHEMAS_REF = "#/components/schemas/"

_LIST_PAGE_SCHEMAS = (
    "ListAssistantsResponse",
    "ListMessagesResponse",
    "ListRunsResponse",
    "ListRunStepsResponse",
)
_RESPONSES_LIST_PAGE_SCHEMAS = ("ResponseItemList", "ConversationItemList")
_DELETED_RESPONSE_SCHEMA = "DeletedResponse"
_DELETED_RESPONSE = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"enum": ["response.deleted"]},
        "deleted": {"type": "boolean"},
    },
    "required": ["id", "object", "deleted"],
}
_EVENT_STREAM = "text/event-stream"
_JSON = "application/json"
_ERROR_SCHEMA = "ErrorResponse"
_STREAM_EVENT_ROOT = "AssistantStreamEvent"
_RESPONSE_STREAM_EVENT_ROOT = "ResponseStreamEvent"
# Keys that may sit beside "nullable" in a bare "{nullable: true}" allOf member.
_ANNOTATIONS = frozenset({"description", "title"})
_MAX_VALUE_CHARS = 300

# libyaml's loader reads the spec in ~0.07 s; the pure-Python one takes ~0.6 s.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecViolation(AssertionError):
    """A body, event or endpoint does not conform to the pinned OpenAI spec."""


@dataclass(frozen=True)
class _Spec:
    uri: str
    document: dict[str, Any]
    registry: Registry[Any]
    # (segments of the path template, template), for matching concrete request paths.
    routes: tuple[tuple[tuple[str, ...], str], ...]
    # Assistants: SSE event name -> JSON pointer of the schema of that event's "data".
    # Responses: event type (also the SSE event name) -> JSON pointer of the event's schema.
    event_data: Mapping[str, str]

    @property
    def schemas(self) -> dict[str, Any]:
        return self.document["components"]["schemas"]


def spec_path(api: str = ASSISTANTS) -> Path:
    """Return where an API's spec file is looked for (``$DA_OPENAI_SPEC_DIR`` or the default)."""
    configured = os.environ.get(SPEC_DIR_ENV)
    return (Path(configured) if configured else _DEFAULT_SPEC_DIR) / _SPEC_FILES[api]


@functools.cache
def _spec(api: str = ASSISTANTS) -> _Spec:
    """Load, rewrite and index one API's spec file; cached, so once per process."""
    path = spec_path(api)
    if not path.is_file():
        raise FileNotFoundError(
            f"OpenAI spec not found at {path}; set {SPEC_DIR_ENV} to the directory "
            f"that holds {_SPEC_FILES[api]} (default: {_DEFAULT_SPEC_DIR})"
        )
    with path.open("rb") as stream:
        document = _rewrite_nullable(yaml.load(stream, Loader=_LOADER))
    if api == ASSISTANTS:
        _apply_traffic_gaps(document["components"]["schemas"])
        events = _collect_stream_events(document["components"]["schemas"])
    else:
        _apply_responses_traffic_gaps(document)
        events = _collect_response_stream_events(document["components"]["schemas"])
    uri = _SPEC_URI + api
    registry: Registry[Any] = Registry().with_resource(uri, DRAFT202012.create_resource(document))
    routes = tuple(
        (tuple(template.strip("/").split("/")), template) for template in document["paths"]
    )
    return _Spec(uri=uri, document=document, registry=registry.crawl(), routes=routes, event_data=events)


def _rewrite_nullable(node: Any) -> Any:
    """Return ``node`` with OpenAPI 3.0 ``nullable: true`` turned into JSON Schema."""
    if isinstance(node, list):
        return [_rewrite_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = dict(node)
    nullable = False
    if isinstance(schema.get("nullable"), bool):
        nullable = schema.pop("nullable")
    if isinstance(schema.get("allOf"), list):
        members = schema["allOf"]
        kept = [member for member in members if not _is_null_marker(member)]
        if len(kept) != len(members):
            nullable, schema["allOf"] = True, kept
    schema = {key: _rewrite_nullable(value) for key, value in schema.items()}
    return _nullable(schema) if nullable else schema


def _is_null_marker(member: Any) -> bool:
    """True for an ``allOf`` member that only says ``nullable: true``."""
    return (
        isinstance(member, dict)
        and member.get("nullable") is True
        and set(member) - _ANNOTATIONS == {"nullable"}
    )


def _nullable(schema: Any) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _apply_traffic_gaps(schemas: dict[str, Any]) -> None:
    """Relax exactly the spec/traffic gaps listed in tests/openapi/README.md."""
    for name in _LIST_PAGE_SCHEMAS:
        properties = schemas[name]["properties"]
        for key in ("first_id", "last_id"):
            properties[key] = _nullable(properties[key])

    # The service took max_completion_tokens below the spec's minimum of 256 (16 ended the run
    # `incomplete`); the run echoes it. Requests keep the minimum (the emulator's strict_spec).
    completion = schemas["RunObject"]["properties"]["max_completion_tokens"]
    for branch in completion["anyOf"]:
        if branch.pop("minimum", None) is not None:
            branch["minimum"] = 1
            break
    else:
        raise ValueError("RunObject.max_completion_tokens has no minimum any more; drop the gap")

    step = schemas["RunStepObject"]
    step["properties"]["expires_at"] = step["properties"]["expired_at"]
    step["required"].remove("expired_at")
    step.setdefault("allOf", []).append(
        {"anyOf": [{"required": ["expired_at"]}, {"required": ["expires_at"]}]}
    )


def _apply_responses_traffic_gaps(document: dict[str, Any]) -> None:
    """Relax the gaps of ``responses.yaml`` listed in this module's docstring."""
    schemas = document["components"]["schemas"]
    for name in _RESPONSES_LIST_PAGE_SCHEMAS:
        properties = schemas[name]["properties"]
        for key in ("first_id", "last_id"):
            properties[key] = _nullable(properties[key])
    response_properties = next(m["properties"] for m in schemas["Response"]["allOf"] if "usage" in m.get("properties", {}))
    response_properties["usage"] = _nullable(response_properties["usage"])
    user = next(m["properties"] for m in _members(schemas, "Response") if "user" in m.get("properties", {}))
    user["user"] = _nullable(user["user"])
    if _DELETED_RESPONSE_SCHEMA in schemas:
        raise ValueError(f"the spec now defines {_DELETED_RESPONSE_SCHEMA}; use it instead of ours")
    schemas[_DELETED_RESPONSE_SCHEMA] = _DELETED_RESPONSE
    deleted = document["paths"]["/responses/{response_id}"]["delete"]["responses"]["200"]
    if "content" in deleted:
        raise ValueError("the spec now documents the body of DELETE /responses/{response_id}; drop the gap")
    deleted["content"] = {_JSON: {"schema": {"$ref": _SCHEMAS_REF + _DELETED_RESPONSE_SCHEMA}}}


def _members(schemas: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The object schemas an ``allOf`` schema is made of, references resolved."""
    return [schemas[_component_name(m["$ref"])] if "$ref" in m else m for m in schemas[name]["allOf"]]


def _component_name(ref: str) -> str:
    if not ref.startswith(_SCHEMAS_REF):
        raise ValueError(f"expected a reference into {_SCHEMAS_REF}, got {ref!r}")
    return ref.removeprefix(_SCHEMAS_REF)


def _collect_stream_events(schemas: dict[str, Any]) -> dict[str, str]:
    """Map each SSE event name under ``AssistantStreamEvent`` to its data schema's pointer."""
    events: dict[str, str] = {}

    def visit(pointer: str, schema: dict[str, Any]) -> None:
        if "$ref" in schema:
            name = _component_name(schema["$ref"])
            visit(f"/components/schemas/{name}", schemas[name])
        elif "oneOf" in schema:
            for index, branch in enumerate(schema["oneOf"]):
                visit(f"{pointer}/oneOf/{index}", branch)
        else:
            event = schema["properties"]["event"]
            names = event["enum"] if "enum" in event else [event["const"]]
            for name in names:
                if name in events:
                    raise ValueError(f"stream event {name!r} is defined twice in the spec")
                events[name] = f"{pointer}/properties/data"

    visit(f"/components/schemas/{_STREAM_EVENT_ROOT}", schemas[_STREAM_EVENT_ROOT])
    return events


def _collect_response_stream_events(schemas: dict[str, Any]) -> dict[str, str]:
    """Map each event ``type`` under ``ResponseStreamEvent`` to its schema's pointer."""
    events: dict[str, str] = {}
    for member in schemas[_RESPONSE_STREAM_EVENT_ROOT]["anyOf"]:
        name = _component_name(member["$ref"])
        type_schema = schemas[name]["properties"]["type"]
        for event in type_schema["enum"] if "enum" in type_schema else [type_schema["const"]]:
            if event in events:
                raise ValueError(f"stream event {event!r} is defined twice in the spec")
            events[event] = f"/components/schemas/{name}"
    return events


@functools.cache
def _validator(pointer: str, api: str = ASSISTANTS) -> Draft202012Validator:
    """Build (once) a validator for the schema at ``pointer`` inside an API's spec document."""
    spec = _spec(api)
    return Draft202012Validator({"$ref": f"{spec.uri}#{pointer}"}, registry=spec.registry)


def _check(pointer: str, label: str, body: Any, api: str = ASSISTANTS) -> None:
    errors = list(_validator(pointer, api).iter_errors(body))
    if not errors:
        return
    top = max(errors, key=relevance)
    lines = [f"{label} violates the OpenAI spec at {top.json_path}: {_short(top.message)}"]
    lines.append(f"  value: {_short(repr(top.instance))}")
    if top.context:
        # The "is not of type 'null'" branch of a rewritten nullable says nothing useful.
        branches = [e for e in top.context if not _is_null_branch(e)] or top.context
        closest = best_match(branches)
        if closest is not None:
            lines.append(
                f"  closest {top.validator} branch fails at {closest.json_path}: "
                f"{_short(closest.message)}; value: {_short(repr(closest.instance))}"
            )
    if len(errors) > 1:
        lines.append(f"  ({len(errors) - 1} more error(s))")
    raise SpecViolation("\n".join(lines))


def _is_null_branch(error: ValidationError) -> bool:
    return error.validator == "type" and error.validator_value == "null"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def validate_schema(name: str, body: Any, api: str | None = None) -> None:
    """Validate ``body`` against ``#/components/schemas/<name>``.

    ``api`` picks the spec file (``"assistants"`` or ``"responses"``); by default the
    Assistants file if it has the schema, else the Responses file. Raises `SpecViolation`
    naming the schema, the JSON path of the failure, the failing value and the validator's
    message; ``KeyError`` if the spec has no such schema.
    """
    if api is None:
        api = ASSISTANTS if name in _spec(ASSISTANTS).schemas else RESPONSES
    if name not in _spec(api).schemas:
        raise KeyError(f"the OpenAI spec at {spec_path(api)} has no schema named {name!r}")
    _check(f"/components/schemas/{name}", name, body, api)


def validate_response(
    method: str,
    url_path: str,
    status: int,
    body: Any,
    *,
    content_type: str = _JSON,
) -> str | None:
    """Validate one HTTP response and return the name of the schema it was checked against.

    ``url_path`` is a concrete path or URL such as ``/v1/threads/thread_abc/runs``; a query
    string and a leading ``/v1`` are ignored. Non-2xx responses are checked against
    ``ErrorResponse`` whatever the path (the service answered unknown routes with the same
    envelope). For 2xx responses the path and method must be in the spec and the status
    documented. A ``text/event-stream`` response returns ``None`` (validate its events with
    `validate_stream_event`); it is only accepted from operations that take ``stream``.
    """
    if not 200 <= status < 300:
        validate_schema(_ERROR_SCHEMA, body, ASSISTANTS)
        return _ERROR_SCHEMA
    api, template = _match_template(url_path)
    spec = _spec(api)
    operation = spec.document["paths"][template].get(method.lower())
    where = f"{method.upper()} {template}"
    if operation is None:
        raise SpecViolation(f"{where} is not in the OpenAI spec")

    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == _EVENT_STREAM:
        if not _accepts_stream(spec, operation):
            raise SpecViolation(f"{where} streamed, but it has no 'stream' option")
        return None

    response = operation["responses"].get(str(status))
    if response is None:
        documented = ", ".join(operation["responses"])
        raise SpecViolation(f"{where} answered {status}; the spec documents {documented}")
    content = response.get("content", {})
    if media_type not in content:
        raise SpecViolation(
            f"{where} {status} answered {media_type!r}; the spec documents {sorted(content)}"
        )
    name = _component_name(content[media_type]["schema"]["$ref"])
    validate_schema(name, body, api)
    return name


def _match_template(url_path: str) -> tuple[str, str]:
    """The API (spec file) and path template that a concrete request path belongs to."""
    path = urlsplit(url_path).path
    path = re.sub(r"^/v1(?=/|$)", "", path)
    segments = tuple(path.strip("/").split("/"))
    for api in _SPEC_FILES:
        candidates = [
            (pattern, template)
            for pattern, template in _spec(api).routes
            if len(pattern) == len(segments)
            and all(p.startswith("{") or p == s for p, s in zip(pattern, segments, strict=True))
        ]
        if candidates:
            # A literal segment beats a parameter: /threads/runs is not /threads/{thread_id}.
            _, template = min(candidates, key=lambda route: [p.startswith("{") for p in route[0]])
            return api, template
    raise SpecViolation(f"no path in the OpenAI spec matches {url_path!r}")


def _accepts_stream(spec: _Spec, operation: dict[str, Any]) -> bool:
    if _EVENT_STREAM in operation.get("responses", {}).get("200", {}).get("content", {}):
        return True
    if any(p.get("in") == "query" and p.get("name") == "stream" for p in operation.get("parameters", [])):
        return True
    schema = operation.get("requestBody", {}).get("content", {}).get(_JSON, {}).get("schema")
    if schema is None:
        return False
    request = spec.schemas[_component_name(schema["$ref"])] if "$ref" in schema else schema
    return "stream" in request.get("properties", {})


def validate_stream_event(event: str, data: Any) -> None:
    """Validate one SSE event's ``data`` against the spec's schema for that event name.

    ``data`` is the decoded JSON payload, or the raw string ``"[DONE]"`` for ``done``.
    Raises `SpecViolation` for an event name the spec does not define.
    """
    event_data = _spec().event_data
    pointer = event_data.get(event)
    if pointer is None:
        raise SpecViolation(
            f"stream event {event!r} is not in the OpenAI spec; known: {sorted(event_data)}"
        )
    _check(pointer, f"stream event {event!r} data", data)


def stream_event_names() -> frozenset[str]:
    """Return every SSE event name the Assistants spec defines."""
    return frozenset(_spec().event_data)


def validate_response_stream_event(event: str, data: Any) -> None:
    """Validate one event of a response stream: ``event`` is the SSE event name, ``data``
    the decoded JSON, which must carry the same name as its ``type`` and match the spec's
    schema for that type (a member of ``ResponseStreamEvent``).
    """
    events = _spec(RESPONSES).event_data
    pointer = events.get(event)
    if pointer is None:
        raise SpecViolation(f"response stream event {event!r} is not in the OpenAI spec; known: {sorted(events)}")
    if not isinstance(data, dict) or data.get("type") != event:
        found = data.get("type") if isinstance(data, dict) else data
        raise SpecViolation(f"response stream event {event!r} carries type {found!r}; they must be the same")
    _check(pointer, f"response stream event {event!r}", data, RESPONSES)


def response_stream_event_names() -> frozenset[str]:
    """Return every event type of ``ResponseStreamEvent`` in the Responses spec."""
    return frozenset(_spec(RESPONSES).event_data)
