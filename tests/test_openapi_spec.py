"""Unit tests of the spec validator in `tests/openapi_spec.py`, on hand-written bodies."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests import openapi_spec
from tests.openapi_spec import (
    SpecViolation,
    validate_response,
    validate_response_stream_event,
    validate_schema,
    validate_stream_event,
)

RUN: dict[str, Any] = {
    "id": "run_abc",
    "object": "thread.run",
    "created_at": 1_700_000_000,
    "thread_id": "thread_abc",
    "assistant_id": "asst_abc",
    "status": "requires_action",
    "required_action": {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        },
    },
    "last_error": None,
    "expires_at": 1_700_000_600,
    "started_at": 1_700_000_001,
    "cancelled_at": None,
    "failed_at": None,
    "completed_at": None,
    "incomplete_details": None,
    "model": "gpt-4o",
    "instructions": "Answer briefly.",
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
    "metadata": {"workflow_id": "wf-1"},
    "usage": None,
    "temperature": 1.0,
    "top_p": 1.0,
    "max_prompt_tokens": None,
    "max_completion_tokens": None,
    "truncation_strategy": {"type": "auto", "last_messages": None},
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "response_format": "auto",
}

COMPLETED_RUN: dict[str, Any] = {
    **RUN,
    "status": "completed",
    "required_action": None,
    "expires_at": None,
    "completed_at": 1_700_000_042,
    "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
    "truncation_strategy": None,
    "tool_choice": None,
    "response_format": None,
}

RUN_STEP: dict[str, Any] = {
    "id": "step_abc",
    "object": "thread.run.step",
    "created_at": 1_700_000_002,
    "assistant_id": "asst_abc",
    "thread_id": "thread_abc",
    "run_id": "run_abc",
    "type": "message_creation",
    "status": "completed",
    "step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_abc"}},
    "last_error": None,
    "expired_at": None,
    "cancelled_at": None,
    "failed_at": None,
    "completed_at": 1_700_000_003,
    "metadata": None,
    "usage": None,
}

ERROR_BODY: dict[str, Any] = {
    "error": {
        "message": "Thread thread_abc already has an active run run_abc.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def empty_page() -> dict[str, Any]:
    return {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


# --- runs and the nullable rewrite -------------------------------------------------------


def test_valid_run_passes() -> None:
    validate_schema("RunObject", RUN)


def test_completed_run_with_null_expires_at_and_null_refs_passes() -> None:
    validate_schema("RunObject", COMPLETED_RUN)


def test_wrong_status_type_is_reported_with_schema_path_and_value() -> None:
    with pytest.raises(SpecViolation) as caught:
        validate_schema("RunObject", {**RUN, "status": 123})
    message = str(caught.value)
    assert "RunObject" in message
    assert "$.status" in message
    assert "123 is not of type 'string'" in message


def test_status_outside_enum_fails() -> None:
    with pytest.raises(SpecViolation, match="is not one of"):
        validate_schema("RunObject", {**RUN, "status": "done"})


def test_missing_id_fails() -> None:
    with pytest.raises(SpecViolation, match="'id' is a required property"):
        validate_schema("RunObject", without(RUN, "id"))


def test_nullable_field_still_rejects_other_types() -> None:
    with pytest.raises(SpecViolation) as caught:
        validate_schema("RunObject", {**RUN, "expires_at": "soon"})
    message = str(caught.value)
    assert "$.expires_at" in message
    assert "'soon' is not of type 'integer'" in message


def test_any_of_failure_names_the_closest_branch_not_the_null_one() -> None:
    with pytest.raises(SpecViolation) as caught:
        validate_schema("RunObject", {**RUN, "tool_choice": "sometimes"})
    message = str(caught.value)
    assert "$.tool_choice" in message
    assert "closest" in message
    assert "is not of type 'null'" not in message


def test_required_nullable_field_may_not_be_omitted() -> None:
    with pytest.raises(SpecViolation, match="'expires_at' is a required property"):
        validate_schema("RunObject", without(COMPLETED_RUN, "expires_at"))


@pytest.mark.parametrize(
    ("schema", "accepted", "rejected"),
    [
        ({"type": "string", "enum": ["a", "b"], "nullable": True}, ["a", None], ["c", 1]),
        ({"$ref": "#/$defs/Int", "nullable": True}, [1, None], ["1"]),
        ({"allOf": [{"$ref": "#/$defs/Int"}, {"nullable": True}]}, [1, None], ["1"]),
        ({"type": "integer", "nullable": False}, [1], [None]),
        ({"type": "integer"}, [1], [None]),
    ],
)
def test_nullable_rewrite(schema: dict[str, Any], accepted: list[Any], rejected: list[Any]) -> None:
    document = {"$defs": {"Int": {"type": "integer"}}, "properties": {"field": schema}}
    validator = Draft202012Validator(openapi_spec._rewrite_nullable(document))
    assert [value for value in accepted if not validator.is_valid({"field": value})] == []
    assert [value for value in rejected if validator.is_valid({"field": value})] == []


def test_nullable_rewrite_leaves_a_property_named_nullable_alone() -> None:
    schema = {"type": "object", "properties": {"nullable": {"type": "boolean"}}}
    assert openapi_spec._rewrite_nullable(copy.deepcopy(schema)) == schema


def test_rewritten_spec_is_valid_json_schema_without_nullable() -> None:
    spec = openapi_spec._spec()
    assert '"nullable"' not in json.dumps(spec.document)
    for schema in spec.schemas.values():
        Draft202012Validator.check_schema(schema)


def test_additional_properties_false_is_kept() -> None:
    validate_schema("CreateRunRequest", {"assistant_id": "asst_abc"})
    with pytest.raises(SpecViolation, match="Additional properties"):
        validate_schema("CreateRunRequest", {"assistant_id": "asst_abc", "colour": "red"})


def test_unknown_schema_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="NoSuchObject"):
        validate_schema("NoSuchObject", {})


# --- README gaps: list pages and run steps --------------------------------------------------


def test_empty_list_page_with_null_ids_passes() -> None:
    for name in openapi_spec._LIST_PAGE_SCHEMAS:
        validate_schema(name, empty_page())


def test_list_page_ids_keep_their_type_and_stay_required() -> None:
    with pytest.raises(SpecViolation, match=r"\$\.first_id"):
        validate_schema("ListRunsResponse", {**empty_page(), "first_id": 7})
    with pytest.raises(SpecViolation, match="'last_id' is a required property"):
        validate_schema("ListRunsResponse", without(empty_page(), "last_id"))


def test_list_page_items_are_validated() -> None:
    page = {**empty_page(), "data": [{**RUN, "status": 123}], "first_id": "run_abc"}
    with pytest.raises(SpecViolation, match=r"\$\.data\[0\]\.status"):
        validate_schema("ListRunsResponse", page)


def test_run_step_with_expired_at_passes() -> None:
    validate_schema("RunStepObject", RUN_STEP)


def test_run_step_with_expires_at_instead_of_expired_at_passes() -> None:
    validate_schema("RunStepObject", {**without(RUN_STEP, "expired_at"), "expires_at": None})


def test_run_step_needs_one_of_the_expiry_names() -> None:
    with pytest.raises(SpecViolation):
        validate_schema("RunStepObject", without(RUN_STEP, "expired_at"))


def test_run_step_expires_at_is_typed() -> None:
    with pytest.raises(SpecViolation, match=r"\$\.expires_at"):
        validate_schema("RunStepObject", {**RUN_STEP, "expires_at": "later"})


# --- responses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "schema"),
    [
        ("POST", "/v1/threads/thread_abc/runs", RUN, "RunObject"),
        ("GET", "/v1/threads/thread_abc/runs/run_abc", COMPLETED_RUN, "RunObject"),
        ("POST", "/v1/threads/runs", RUN, "RunObject"),
        ("GET", "/v1/threads/thread_abc/runs?limit=5&order=desc", empty_page(), "ListRunsResponse"),
        ("GET", "/v1/threads/thread_abc/runs/run_1/steps", empty_page(), "ListRunStepsResponse"),
        (
            "GET",
            "http://127.0.0.1:8000/v1/threads/t/messages",
            empty_page(),
            "ListMessagesResponse",
        ),
        (
            "DELETE",
            "/threads/thread_abc",
            {"id": "thread_abc", "object": "thread.deleted", "deleted": True},
            "DeleteThreadResponse",
        ),
    ],
)
def test_response_is_matched_to_its_schema(
    method: str, url: str, body: dict[str, Any], schema: str
) -> None:
    assert validate_response(method, url, 200, body) == schema


def test_literal_path_segment_beats_a_parameter() -> None:
    # POST /threads/runs returns a run; POST /threads/{thread_id} would want a thread.
    with pytest.raises(SpecViolation, match="RunObject"):
        validate_response("POST", "/v1/threads/runs", 200, {"id": "thread_abc"})


def test_invalid_response_body_fails() -> None:
    with pytest.raises(SpecViolation, match="'id' is a required property"):
        validate_response("POST", "/v1/threads/thread_abc/runs", 200, without(RUN, "id"))


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500])
def test_error_statuses_are_checked_against_error_response(status: int) -> None:
    assert validate_response("POST", "/v1/threads/thread_abc/runs", status, ERROR_BODY) == (
        "ErrorResponse"
    )


def test_error_body_must_be_the_openai_envelope() -> None:
    with pytest.raises(SpecViolation, match="'error' is a required property"):
        validate_response("GET", "/v1/threads/nope", 404, {"detail": "Not Found"})
    with pytest.raises(SpecViolation, match="'param' is a required property"):
        validate_schema("ErrorResponse", {"error": without(ERROR_BODY["error"], "param")})


def test_unknown_route_error_is_still_checked() -> None:
    assert validate_response("GET", "/v1/bogus", 404, ERROR_BODY) == "ErrorResponse"


@pytest.mark.parametrize(
    ("method", "url", "status", "match"),
    [
        ("GET", "/v1/files", 200, "no path in the OpenAI spec"),
        ("GET", "/v1/threads/thread_abc/runs/run_abc/steps/step_1/extra", 200, "no path"),
        ("DELETE", "/v1/threads/thread_abc/runs/run_abc", 200, "is not in the OpenAI spec"),
        ("POST", "/v1/threads/thread_abc/runs", 201, "answered 201"),
    ],
)
def test_undocumented_endpoints_fail(method: str, url: str, status: int, match: str) -> None:
    with pytest.raises(SpecViolation, match=match):
        validate_response(method, url, status, RUN)


def test_event_stream_response_is_left_to_the_event_validator() -> None:
    content_type = "text/event-stream; charset=utf-8"
    streaming_urls = [
        "/v1/threads/t/runs",
        "/v1/threads/runs",
        "/v1/threads/t/runs/r/submit_tool_outputs",
    ]
    for url in streaming_urls:
        assert validate_response("POST", url, 200, None, content_type=content_type) is None


def test_event_stream_from_an_operation_without_stream_option_fails() -> None:
    with pytest.raises(SpecViolation, match="'stream'"):
        validate_response(
            "GET", "/v1/threads/t/runs/r", 200, None, content_type="text/event-stream"
        )


def test_undocumented_content_type_fails() -> None:
    with pytest.raises(SpecViolation, match="text/html"):
        validate_response("GET", "/v1/threads/t/runs/r", 200, "<html>", content_type="text/html")


# --- stream events -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("thread.run.created", {**RUN, "status": "queued", "required_action": None}),
        ("thread.run.requires_action", RUN),
        ("thread.run.completed", COMPLETED_RUN),
        ("thread.run.step.completed", RUN_STEP),
        (
            "thread.run.step.delta",
            {
                "id": "step_abc",
                "object": "thread.run.step.delta",
                "delta": {
                    "step_details": {
                        "type": "tool_calls",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": "",
                                    "output": None,
                                },
                            }
                        ],
                    }
                },
            },
        ),
        (
            "thread.message.delta",
            {
                "id": "msg_abc",
                "object": "thread.message.delta",
                "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "Hel"}}]},
            },
        ),
        ("error", ERROR_BODY["error"]),
        ("done", "[DONE]"),
    ],
)
def test_valid_stream_events_pass(event: str, data: Any) -> None:
    validate_stream_event(event, data)


@pytest.mark.parametrize(
    ("event", "data", "match"),
    [
        ("thread.run.created", without(RUN, "id"), "'id' is a required property"),
        ("thread.message.delta", RUN, "'delta' is a required property"),
        ("done", "DONE", "is not one of"),
        ("error", {"message": "boom"}, "is a required property"),
        ("thread.run.exploded", RUN, "not in the OpenAI spec"),
    ],
)
def test_invalid_stream_events_fail(event: str, data: Any, match: str) -> None:
    with pytest.raises(SpecViolation, match=match):
        validate_stream_event(event, data)


def test_every_assistant_stream_event_is_known() -> None:
    names = openapi_spec.stream_event_names()
    expected = {"thread.created", "thread.run.step.delta", "thread.message.delta", "error", "done"}
    assert expected <= names
    assert len(names) == 25


# --- locating the spec -------------------------------------------------------------------


def test_spec_dir_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(openapi_spec.SPEC_DIR_ENV, str(tmp_path))
    assert openapi_spec.spec_path() == tmp_path / "assistants.yaml"


def test_default_spec_dir_is_tests_openapi_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(openapi_spec.SPEC_DIR_ENV, raising=False)
    repo_root = Path(openapi_spec.__file__).resolve().parent.parent
    assert openapi_spec.spec_path() == repo_root / "tests" / "openapi" / "assistants.yaml"
    assert openapi_spec.spec_path("responses") == repo_root / "tests" / "openapi" / "responses.yaml"
    assert openapi_spec.spec_path().is_file()
    assert openapi_spec.spec_path("responses").is_file()


def test_missing_spec_names_the_path_and_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(openapi_spec.SPEC_DIR_ENV, str(tmp_path))
    load_uncached = openapi_spec._spec.__wrapped__
    with pytest.raises(FileNotFoundError) as caught:
        load_uncached()
    assert str(tmp_path / "assistants.yaml") in str(caught.value)
    assert openapi_spec.SPEC_DIR_ENV in str(caught.value)


# --- the Responses spec (responses.yaml) -------------------------------------------------

RESPONSE: dict[str, Any] = {
    "id": "resp_abc",
    "object": "response",
    "created_at": 1_700_000_000,
    "status": "queued",
    "background": True,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "model": "gpt-4o",
    "output": [],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "usage": None,
}

FUNCTION_CALL: dict[str, Any] = {
    "id": "fc_1",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_1",
    "name": "add",
    "arguments": "{}",
}

USAGE: dict[str, Any] = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 2,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 12,
}


@pytest.mark.parametrize(
    ("method", "url", "body", "schema"),
    [
        ("POST", "/v1/responses", RESPONSE, "Response"),
        ("GET", "/v1/responses/resp_abc?stream=false", {**RESPONSE, "status": "completed", "usage": USAGE}, "Response"),
        ("POST", "/v1/responses/resp_abc/cancel", {**RESPONSE, "status": "cancelled"}, "Response"),
        ("GET", "/v1/responses/resp_abc/input_items", empty_page(), "ResponseItemList"),
        ("DELETE", "/v1/responses/resp_abc", {"id": "resp_abc", "object": "response.deleted", "deleted": True}, "DeletedResponse"),
        ("POST", "/v1/conversations", {"id": "conv_1", "object": "conversation", "created_at": 1, "metadata": {}}, "ConversationResource"),
        ("GET", "/v1/conversations/conv_1/items", empty_page(), "ConversationItemList"),
        ("POST", "/v1/conversations/conv_1/items", {**empty_page(), "data": [FUNCTION_CALL], "first_id": "fc_1", "last_id": "fc_1"}, "ConversationItemList"),
        ("GET", "/v1/conversations/conv_1/items/fc_1", FUNCTION_CALL, "ConversationItem"),
        ("DELETE", "/v1/conversations/conv_1", {"id": "conv_1", "object": "conversation.deleted", "deleted": True}, "DeletedConversationResource"),
    ],
)
def test_responses_paths_are_matched_in_the_responses_spec(method: str, url: str, body: dict[str, Any], schema: str) -> None:
    assert validate_response(method, url, 200, body) == schema


def test_response_with_usage_null_passes_but_usage_keeps_its_shape() -> None:
    validate_schema("Response", RESPONSE)
    with pytest.raises(SpecViolation, match=r"\$\.usage"):
        validate_schema("Response", {**RESPONSE, "usage": {"input_tokens": 1}})


def test_response_items_are_validated() -> None:
    body = {**RESPONSE, "output": [{**FUNCTION_CALL, "arguments": 7}]}
    with pytest.raises(SpecViolation, match="Response"):
        validate_response("GET", "/v1/responses/resp_abc", 200, body)


def test_deleted_response_body_must_say_deleted() -> None:
    with pytest.raises(SpecViolation, match="'deleted' is a required property"):
        validate_response("DELETE", "/v1/responses/resp_abc", 200, {"id": "resp_abc", "object": "response.deleted"})


def test_response_list_page_ids_keep_their_type() -> None:
    with pytest.raises(SpecViolation, match=r"\$\.first_id"):
        validate_schema("ConversationItemList", {**empty_page(), "first_id": 7})


def test_response_streams_are_accepted_from_create_and_retrieve() -> None:
    for method, url in [("POST", "/v1/responses"), ("GET", "/v1/responses/resp_abc?stream=true&starting_after=3")]:
        assert validate_response(method, url, 200, None, content_type="text/event-stream") is None
    with pytest.raises(SpecViolation, match="'stream'"):
        validate_response("GET", "/v1/conversations/conv_1/items", 200, None, content_type="text/event-stream")


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.created", "sequence_number": 0, "response": RESPONSE},
        {"type": "response.output_item.added", "sequence_number": 3, "output_index": 0, "item": {**FUNCTION_CALL, "status": "in_progress", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "sequence_number": 4, "item_id": "fc_1", "output_index": 0, "delta": "{}"},
        {"type": "response.output_text.delta", "sequence_number": 5, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi", "logprobs": []},
        {"type": "response.incomplete", "sequence_number": 9, "response": {**RESPONSE, "status": "cancelled"}},
    ],
)
def test_valid_response_stream_events_pass(event: dict[str, Any]) -> None:
    validate_response_stream_event(event["type"], event)


@pytest.mark.parametrize(
    ("event", "data", "match"),
    [
        ("response.created", {"type": "response.created", "response": RESPONSE}, "'sequence_number' is a required property"),
        ("response.created", {"type": "response.completed", "sequence_number": 0, "response": RESPONSE}, "must be the same"),
        ("response.cancelled", {"type": "response.cancelled", "sequence_number": 0, "response": RESPONSE}, "not in the OpenAI spec"),
        (
            "response.output_text.delta",
            {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0, "content_index": 0, "delta": "x"},
            "'logprobs' is a required property",
        ),
    ],
)
def test_invalid_response_stream_events_fail(event: str, data: Any, match: str) -> None:
    with pytest.raises(SpecViolation, match=match):
        validate_response_stream_event(event, data)


def test_response_stream_event_names_come_from_the_spec() -> None:
    names = openapi_spec.response_stream_event_names()
    assert {"response.created", "response.queued", "response.completed", "response.failed", "response.incomplete", "error"} <= names
    assert "response.cancelled" not in names
    assert not names & openapi_spec.stream_event_names() - {"error"}


def test_each_api_has_its_spec_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(openapi_spec.SPEC_DIR_ENV, str(tmp_path))
    assert openapi_spec.spec_path("responses") == tmp_path / "responses.yaml"
    with pytest.raises(FileNotFoundError) as caught:
        openapi_spec._spec.__wrapped__("responses")
    assert str(tmp_path / "responses.yaml") in str(caught.value)
