"""The emulator's HTTP surface: the Assistants v2 API, the Responses API and the
Conversations API under ``/v1``, and the admin API under ``/_emulator``. Handlers are thin:
validate with the SDK's parameter types, call the engine, render with the SDK's response types."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from openai.types.beta import (
    assistant_create_params,
    assistant_update_params,
    thread_create_and_run_params,
    thread_create_params,
    thread_update_params,
)
from openai.types.beta.threads import (
    message_create_params,
    message_update_params,
    run_create_params,
    run_submit_tool_outputs_params,
    run_update_params,
)
from openai.types.conversations import (
    conversation_create_params,
    conversation_update_params,
    item_create_params,
)
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_assistants.emulator.config import EmulatorConfig
from durable_assistants.emulator.engine import TERMINAL_STATUSES, AssistantsEngine, RunState, dump, step_body
from durable_assistants.emulator.errors import APIError, ConnectionDropped, bad_request, not_found, rate_limited, server_error
from durable_assistants.emulator.faults import FaultInjector, FaultRule
from durable_assistants.emulator.ids import IdFactory
from durable_assistants.emulator.pagination import ListQuery
from durable_assistants.emulator.responses import ResponsesEngine, response_body
from durable_assistants.emulator.responses_sse import ResponseEventStream, response_stream
from durable_assistants.emulator.script import SCENARIO_NAME, ScriptError, parse_script
from durable_assistants.emulator.sse import RunEventStream, run_stream, stale_tail_stream
from durable_assistants.emulator.stats import Stats
from durable_assistants.emulator.validation import check_positive, check_range, parse_json_body, validate_params

log = logging.getLogger("emulator")

Handler = Callable[[Request, "Emulator"], Awaitable[Response]]


class Emulator:
    """One emulator instance: its state, counters, faults and the ASGI app serving them."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.stats = Stats()
        self.faults = FaultInjector(self.config.seed)
        self.engine = AssistantsEngine(self.config, self.stats, IdFactory(self.config.seed))
        # One ID sequence, one scripted model and one set of scenarios for both API surfaces.
        self.responses = ResponsesEngine(self.config, self.stats, self.engine.ids, self.engine.model, self.engine.scenarios)
        self.app = build_app(self)

    async def reset(self) -> None:
        await self.engine.reset()
        await self.responses.reset()
        self.faults.clear()
        self.stats.reset()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(error: APIError) -> JSONResponse:
    return json_response(error.body(), error.status, error.headers)


# ---------------------------------------------------------------------------- request helpers


async def body_of(request: Request, params_type: Any, **path: str) -> dict[str, Any]:
    return validate_params(params_type, parse_json_body(await request.body()), path=path)


def list_query(request: Request) -> ListQuery:
    try:
        return ListQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = str(error["loc"][0])
        raise bad_request(
            f"Invalid '{name}': {error['msg']}, got {error.get('input')!r}.", param=name, code="invalid_value"
        ) from None


def query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.lower() in ("false", "0"):
        return False
    if raw.lower() in ("true", "1"):
        return True
    raise bad_request(f"Invalid value for '{name}': expected a boolean, got {raw!r}.", param=name, code="invalid_type")


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"Invalid value for '{name}': expected an integer, got {raw!r}.", param=name, code="invalid_type") from None


def check_sampling(params: dict[str, Any], emu: Emulator) -> None:
    check_range(params, "temperature", 0, 2)
    check_range(params, "top_p", 0, 1)
    check_positive(params, "max_prompt_tokens", 256)
    # The spec says at least 256; the service took less (16 ended the run `incomplete`).
    check_positive(params, "max_completion_tokens", 256 if emu.config.strict_spec else 1)


def poll_after_headers(emulator: Emulator) -> dict[str, str]:
    """The pacing hint on reads of an unfinished run or response (none under compat.no_poll_after_header)."""
    if emulator.config.compat.no_poll_after_header:
        return {}
    return {"openai-poll-after-ms": str(emulator.config.poll_after_ms)}


def run_response(emulator: Emulator, run_state: RunState, *, read: bool = False) -> JSONResponse:
    headers = {}
    if read and run_state.run.status not in TERMINAL_STATUSES:
        headers = poll_after_headers(emulator)
    return json_response(dump(run_state.run), headers=headers)


# ---------------------------------------------------------------------------- assistants


async def create_assistant(request: Request, emu: Emulator) -> Response:
    params = await body_of(request, assistant_create_params.AssistantCreateParams)
    check_sampling(params, emu)
    return json_response(emu.engine.render_assistant(emu.engine.create_assistant(params)))


async def list_assistants(request: Request, emu: Emulator) -> Response:
    return json_response(emu.engine.list_assistants(list_query(request)))


async def retrieve_assistant(request: Request, emu: Emulator) -> Response:
    return json_response(emu.engine.render_assistant(emu.engine.get_assistant(request.path_params["assistant_id"])))


async def update_assistant(request: Request, emu: Emulator) -> Response:
    params = await body_of(request, assistant_update_params.AssistantUpdateParams)
    check_sampling(params, emu)
    return json_response(emu.engine.render_assistant(emu.engine.update_assistant(request.path_params["assistant_id"], params)))


async def delete_assistant(request: Request, emu: Emulator) -> Response:
    return json_response(emu.engine.delete_assistant(request.path_params["assistant_id"]))


# ---------------------------------------------------------------------------- threads


async def create_thread(request: Request, emu: Emulator) -> Response:
    params = await body_of(request, thread_create_params.ThreadCreateParams)
    return json_response(dump(emu.engine.create_thread(params).thread))


async def retrieve_thread(request: Request, emu: Emulator) -> Response:
    return json_response(dump(emu.engine.get_thread(request.path_params["thread_id"]).thread))


async def update_thread(request: Request, emu: Emulator) -> Response:
    params = await body_of(request, thread_update_params.ThreadUpdateParams)
    return json_response(dump(emu.engine.update_thread(request.path_params["thread_id"], params)))


async def delete_thread(request: Request, emu: Emulator) -> Response:
    return json_response(emu.engine.delete_thread(request.path_params["thread_id"]))


# ---------------------------------------------------------------------------- messages


async def create_message(request: Request, emu: Emulator) -> Response:
    params = await body_of(request, message_create_params.MessageCreateParams)
    return json_response(dump(emu.engine.create_message(request.path_params["thread_id"], params)))


async def list_messages(request: Request, emu: Emulator) -> Response:
    run_id = request.query_params.get("run_id")
    return json_response(emu.engine.list_messages(request.path_params["thread_id"], list_query(request), run_id))


async def retrieve_message(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return json_response(dump(emu.engine.get_message(p["thread_id"], p["message_id"])))


async def update_message(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    params = await body_of(request, message_update_params.MessageUpdateParams, thread_id=p["thread_id"])
    return json_response(dump(emu.engine.update_message(p["thread_id"], p["message_id"], params)))


async def delete_message(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return json_response(emu.engine.delete_message(p["thread_id"], p["message_id"]))


# ---------------------------------------------------------------------------- runs


async def create_run(request: Request, emu: Emulator) -> Response:
    thread_id = request.path_params["thread_id"]
    params = await body_of(request, run_create_params.RunCreateParams)
    check_sampling(params, emu)
    run_state = emu.engine.create_run(thread_id, params)
    return _started(emu, run_state, stream=bool(params.get("stream")))


async def create_thread_and_run(request: Request, emu: Emulator) -> Response:
    params = await body_of(request, thread_create_and_run_params.ThreadCreateAndRunParams)
    check_sampling(params, emu)
    run_state = emu.engine.create_thread_and_run(params)
    prelude = [("thread.created", dump(run_state.thread.thread))]
    return _started(emu, run_state, stream=bool(params.get("stream")), prelude=prelude)


def _started(emu: Emulator, run_state: RunState, *, stream: bool, prelude: list[Any] | None = None) -> Response:
    if not stream:
        emu.engine.launch(run_state)
        return run_response(emu, run_state)
    return run_stream(
        run_state,
        lambda: emu.engine.launch(run_state),
        emu.config.keepalive_seconds,
        prelude,
        completed_after_requires_action=emu.config.compat.completed_after_requires_action,
    )


async def list_runs(request: Request, emu: Emulator) -> Response:
    return json_response(emu.engine.list_runs(request.path_params["thread_id"], list_query(request)))


async def retrieve_run(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return run_response(emu, emu.engine.get_run(p["thread_id"], p["run_id"]), read=True)


async def update_run(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    params = await body_of(request, run_update_params.RunUpdateParams, thread_id=p["thread_id"])
    return json_response(dump(emu.engine.update_run(p["thread_id"], p["run_id"], params)))


async def cancel_run(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return json_response(dump(emu.engine.cancel_run(p["thread_id"], p["run_id"])))


async def submit_tool_outputs(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    params = await body_of(
        request, run_submit_tool_outputs_params.RunSubmitToolOutputsParams, thread_id=p["thread_id"]
    )
    if not params.get("stream"):
        run_state = emu.engine.submit_tool_outputs(p["thread_id"], p["run_id"], params)
        return run_response(emu, run_state)
    run_state = emu.engine.get_run(p["thread_id"], p["run_id"])
    compat = emu.config.compat
    if compat.stale_done_on_submit:
        # What the run's previous stream sent after requires_action, replayed instead of this
        # submit's own events: `done`, after the stale `thread.run.completed` if that was sent.
        tail = [("thread.run.completed", dump(run_state.run))] if compat.completed_after_requires_action else []
        return stale_tail_stream(
            run_state,
            lambda: emu.engine.submit_tool_outputs(p["thread_id"], p["run_id"], params),
            tail,
            emu.config.keepalive_seconds,
        )
    return run_stream(
        run_state,
        lambda: emu.engine.submit_tool_outputs(p["thread_id"], p["run_id"], params),
        emu.config.keepalive_seconds,
        completed_after_requires_action=compat.completed_after_requires_action,
    )


async def list_steps(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return json_response(emu.engine.list_steps(p["thread_id"], p["run_id"], list_query(request)))


async def retrieve_step(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return json_response(step_body(emu.engine.get_step(p["thread_id"], p["run_id"], p["step_id"])))


# ---------------------------------------------------------------------------- responses


def not_supported() -> APIError:
    """What a gateway without this Responses operation answers (compat.responses_*_unsupported)."""
    return server_error("not supported")


async def create_response(request: Request, emu: Emulator) -> Response:
    params = emu.responses.check_create(parse_json_body(await request.body()))
    state = emu.responses.create(params)
    background = bool(state.response.background)  # never under compat.responses_background_ignored
    if params.get("stream") and not (background and emu.config.compat.responses_background_stream_as_json):
        return response_stream(state, lambda: emu.responses.launch(state), emu.config.keepalive_seconds)
    emu.responses.launch(state)
    if not background:
        await state.finished.wait()  # a foreground response answers when it has ended
    return json_response(response_body(state.response))


async def retrieve_response(request: Request, emu: Emulator) -> Response:
    if emu.config.compat.responses_retrieve_unsupported:
        raise not_supported()
    response_id = request.path_params["response_id"]
    stream = query_flag(request, "stream")
    starting_after = query_int(request, "starting_after")
    state = emu.responses.get(response_id)
    if stream:
        if not state.response.background:
            raise bad_request(
                f"Response {response_id} was not created with background=true; only background responses can be streamed again.",
                param="stream",
            )
        return ResponseEventStream(state, emu.config.keepalive_seconds, starting_after)
    headers = {} if state.done else poll_after_headers(emu)
    return json_response(response_body(state.response), headers=headers)


async def cancel_response(request: Request, emu: Emulator) -> Response:
    if emu.config.compat.responses_cancel_unsupported:
        raise not_supported()
    state = await emu.responses.cancel(request.path_params["response_id"])
    return json_response(response_body(state.response))


async def delete_response(request: Request, emu: Emulator) -> Response:
    return json_response(await emu.responses.delete(request.path_params["response_id"]))


async def list_input_items(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.list_input_items(request.path_params["response_id"], list_query(request)))


# ---------------------------------------------------------------------------- conversations


def conversations_api(handler: Handler) -> Handler:
    """A Conversations API handler, or the 404 of a server that has none (compat.conversations_absent)."""

    async def gated(request: Request, emu: Emulator) -> Response:
        if emu.config.compat.conversations_absent:
            raise APIError(404, "Not Found")
        return await handler(request, emu)

    return gated


@conversations_api
async def create_conversation(request: Request, emu: Emulator) -> Response:
    body = parse_json_body(await request.body())
    params = emu.responses.check_items(body, conversation_create_params.ConversationCreateParams, required=False)
    return json_response(dump(emu.responses.create_conversation(params).conversation))


@conversations_api
async def retrieve_conversation(request: Request, emu: Emulator) -> Response:
    return json_response(dump(emu.responses.get_conversation(request.path_params["conversation_id"]).conversation))


@conversations_api
async def update_conversation(request: Request, emu: Emulator) -> Response:
    params = await body_of(request, conversation_update_params.ConversationUpdateParams)
    return json_response(dump(emu.responses.update_conversation(request.path_params["conversation_id"], params)))


@conversations_api
async def delete_conversation(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.delete_conversation(request.path_params["conversation_id"]))


@conversations_api
async def create_items(request: Request, emu: Emulator) -> Response:
    body = parse_json_body(await request.body())
    params = emu.responses.check_items(body, item_create_params.ItemCreateParams, required=True)
    return json_response(emu.responses.add_items(request.path_params["conversation_id"], params))


@conversations_api
async def list_items(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.list_items(request.path_params["conversation_id"], list_query(request)))


@conversations_api
async def retrieve_item(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return json_response(emu.responses.get_item(p["conversation_id"], p["item_id"]))


@conversations_api
async def delete_item(request: Request, emu: Emulator) -> Response:
    p = request.path_params
    return json_response(dump(emu.responses.delete_item(p["conversation_id"], p["item_id"])))


# ---------------------------------------------------------------------------- admin


async def admin_health(request: Request, emu: Emulator) -> Response:
    engine = emu.engine
    active = sum(1 for t in engine.threads.values() if t.active_run is not None)
    responses = emu.responses
    active_responses = sum(1 for r in responses.responses.values() if r.response.status in ("queued", "in_progress"))
    return json_response(
        {
            "status": "ok",
            "threads": len(engine.threads),
            "runs": len(engine.runs),
            "active_runs": active,
            "conversations": len(responses.conversations),
            "responses": len(responses.responses),
            "active_responses": active_responses,
        }
    )


async def admin_stats(request: Request, emu: Emulator) -> Response:
    return json_response(emu.stats.snapshot())


async def admin_reset(request: Request, emu: Emulator) -> Response:
    await emu.reset()
    return json_response({"reset": True})


async def admin_get_config(request: Request, emu: Emulator) -> Response:
    return json_response(emu.config.model_dump(exclude={"api_key"}))


async def admin_patch_config(request: Request, emu: Emulator) -> Response:
    changes = parse_json_body(await request.body())
    if "api_key" in changes:
        raise bad_request("The API key is set when the server starts (--api-key); it can't be changed live.", param="api_key")
    if isinstance(changes, dict) and isinstance(changes.get("compat"), dict):
        # Switches not named keep their value: a PATCH changes only what it names.
        changes = {**changes, "compat": {**emu.config.compat.model_dump(), **changes["compat"]}}
    try:
        merged = EmulatorConfig.model_validate({**emu.config.model_dump(), **changes})
    except ValidationError as exc:
        raise _admin_error(exc) from None
    for key in changes:
        setattr(emu.config, key, getattr(merged, key))
    return json_response(emu.config.model_dump(exclude={"api_key"}))


async def admin_list_faults(request: Request, emu: Emulator) -> Response:
    return json_response({"data": [r.model_dump() for r in emu.faults.rules]})


async def admin_add_fault(request: Request, emu: Emulator) -> Response:
    try:
        rule = FaultRule.model_validate(parse_json_body(await request.body()))
    except ValidationError as exc:
        raise _admin_error(exc) from None
    if rule.operation != "*" and rule.operation not in OPERATIONS:
        raise bad_request(
            f"Unknown operation {rule.operation!r}; use '*' or one of: {', '.join(sorted(OPERATIONS))}.",
            param="operation",
        )
    return json_response(emu.faults.add(rule).model_dump())


async def admin_clear_faults(request: Request, emu: Emulator) -> Response:
    emu.faults.clear()
    return json_response({"deleted": True})


async def admin_delete_fault(request: Request, emu: Emulator) -> Response:
    fault_id = request.path_params["fault_id"]
    if not emu.faults.remove(fault_id):
        raise not_found("fault", fault_id)
    return json_response({"id": fault_id, "deleted": True})


async def admin_list_scenarios(request: Request, emu: Emulator) -> Response:
    return json_response({name: s.model_dump(exclude_defaults=True) for name, s in emu.engine.scenarios.items()})


async def admin_put_scenario(request: Request, emu: Emulator) -> Response:
    name = request.path_params["name"]
    if not SCENARIO_NAME.match(name):
        raise bad_request(f"Invalid scenario name {name!r}: use 1-64 letters, digits, '_', '-' or '.'.", param="name")
    try:
        script = parse_script(parse_json_body(await request.body()), source=f"scenario {name!r}")
    except ScriptError as exc:
        raise bad_request(str(exc), code="invalid_emulator_script") from None
    emu.engine.scenarios[name] = script
    return json_response({"name": name, "script": script.model_dump(exclude_defaults=True)})


async def admin_delete_scenario(request: Request, emu: Emulator) -> Response:
    name = request.path_params["name"]
    if emu.engine.scenarios.pop(name, None) is None:
        raise not_found("scenario", name)
    return json_response({"name": name, "deleted": True})


async def admin_list_prompts(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.list_prompts())


async def admin_put_prompt(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.put_prompt(request.path_params["prompt_id"], parse_json_body(await request.body())))


async def admin_delete_prompt(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.delete_prompt(request.path_params["prompt_id"]))


def _admin_error(exc: ValidationError) -> APIError:
    error = exc.errors(include_url=False)[0]
    name = ".".join(str(p) for p in error["loc"]) or "body"
    return bad_request(f"Invalid '{name}': {error['msg']}, got {error.get('input')!r}.", param=name)


# ---------------------------------------------------------------------------- wiring

API_ROUTES: list[tuple[str, str, str, Handler]] = [
    ("POST", "/v1/assistants", "assistants.create", create_assistant),
    ("GET", "/v1/assistants", "assistants.list", list_assistants),
    ("GET", "/v1/assistants/{assistant_id}", "assistants.retrieve", retrieve_assistant),
    ("POST", "/v1/assistants/{assistant_id}", "assistants.update", update_assistant),
    ("DELETE", "/v1/assistants/{assistant_id}", "assistants.delete", delete_assistant),
    ("POST", "/v1/threads", "threads.create", create_thread),
    ("POST", "/v1/threads/runs", "threads.create_and_run", create_thread_and_run),
    ("GET", "/v1/threads/{thread_id}", "threads.retrieve", retrieve_thread),
    ("POST", "/v1/threads/{thread_id}", "threads.update", update_thread),
    ("DELETE", "/v1/threads/{thread_id}", "threads.delete", delete_thread),
    ("POST", "/v1/threads/{thread_id}/messages", "messages.create", create_message),
    ("GET", "/v1/threads/{thread_id}/messages", "messages.list", list_messages),
    ("GET", "/v1/threads/{thread_id}/messages/{message_id}", "messages.retrieve", retrieve_message),
    ("POST", "/v1/threads/{thread_id}/messages/{message_id}", "messages.update", update_message),
    ("DELETE", "/v1/threads/{thread_id}/messages/{message_id}", "messages.delete", delete_message),
    ("POST", "/v1/threads/{thread_id}/runs", "runs.create", create_run),
    ("GET", "/v1/threads/{thread_id}/runs", "runs.list", list_runs),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}", "runs.retrieve", retrieve_run),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}", "runs.update", update_run),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}/cancel", "runs.cancel", cancel_run),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", "runs.submit_tool_outputs", submit_tool_outputs),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}/steps", "steps.list", list_steps),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}", "steps.retrieve", retrieve_step),
    ("POST", "/v1/responses", "responses.create", create_response),
    ("GET", "/v1/responses/{response_id}", "responses.retrieve", retrieve_response),
    ("DELETE", "/v1/responses/{response_id}", "responses.delete", delete_response),
    ("POST", "/v1/responses/{response_id}/cancel", "responses.cancel", cancel_response),
    ("GET", "/v1/responses/{response_id}/input_items", "responses.input_items.list", list_input_items),
    ("POST", "/v1/conversations", "conversations.create", create_conversation),
    ("GET", "/v1/conversations/{conversation_id}", "conversations.retrieve", retrieve_conversation),
    ("POST", "/v1/conversations/{conversation_id}", "conversations.update", update_conversation),
    ("DELETE", "/v1/conversations/{conversation_id}", "conversations.delete", delete_conversation),
    ("POST", "/v1/conversations/{conversation_id}/items", "conversations.items.create", create_items),
    ("GET", "/v1/conversations/{conversation_id}/items", "conversations.items.list", list_items),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}", "conversations.items.retrieve", retrieve_item),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}", "conversations.items.delete", delete_item),
]
OPERATIONS = frozenset(op for _, _, op, _ in API_ROUTES)

ADMIN_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/_emulator/health", admin_health),
    ("GET", "/_emulator/stats", admin_stats),
    ("POST", "/_emulator/reset", admin_reset),
    ("GET", "/_emulator/config", admin_get_config),
    ("PATCH", "/_emulator/config", admin_patch_config),
    ("GET", "/_emulator/faults", admin_list_faults),
    ("POST", "/_emulator/faults", admin_add_fault),
    ("DELETE", "/_emulator/faults", admin_clear_faults),
    ("DELETE", "/_emulator/faults/{fault_id}", admin_delete_fault),
    ("GET", "/_emulator/scenarios", admin_list_scenarios),
    ("PUT", "/_emulator/scenarios/{name}", admin_put_scenario),
    ("DELETE", "/_emulator/scenarios/{name}", admin_delete_scenario),
    ("GET", "/_emulator/prompts", admin_list_prompts),
    ("PUT", "/_emulator/prompts/{prompt_id}", admin_put_prompt),
    ("DELETE", "/_emulator/prompts/{prompt_id}", admin_delete_prompt),
]


def api_endpoint(emu: Emulator, operation: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with what every API call gets: counting, faults, OpenAI-shaped errors."""

    async def endpoint(request: Request) -> Response:
        emu.stats.request(operation)
        rule = emu.faults.pick(operation)
        if rule is not None:
            emu.stats.faults_fired[operation] += 1
        if rule is not None and rule.when == "before" and rule.action != "cut":
            spoiled = await _apply_fault(rule, emu.faults)
            if spoiled is not None:
                emu.stats.response(operation, _outcome(spoiled))
                return spoiled
        try:
            response = await handler(request, emu)
        except APIError as exc:
            response = error_response(exc)
        if rule is not None and rule.action == "cut":
            # Let the stream begin, then break its connection after `after_events` events.
            if isinstance(response, (RunEventStream, ResponseEventStream)):
                response.cut_after(rule.after_events)
            else:
                response = DroppedConnection()
        elif rule is not None and rule.when == "after":
            spoiled = await _apply_fault(rule, emu.faults)
            if spoiled is not None:
                if isinstance(response, (RunEventStream, ResponseEventStream)):
                    response.discard()
                response = spoiled
        emu.stats.response(operation, _outcome(response))
        return response

    return endpoint


def _outcome(response: Response) -> str:
    return "dropped" if isinstance(response, DroppedConnection) else str(response.status_code)


def admin_endpoint(emu: Emulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, emu)
        except APIError as exc:
            return error_response(exc)

    return endpoint


async def _apply_fault(rule: FaultRule, faults: FaultInjector) -> Response | None:
    if rule.action == "delay":
        return None if await faults.hold(rule.delay_seconds) else DroppedConnection()
    if rule.action == "drop":
        return DroppedConnection()
    if rule.status == 429:
        return error_response(rate_limited(rule.retry_after_ms))
    error = server_error() if rule.status >= 500 else bad_request("Error injected by the emulator.")
    error.status = rule.status
    if rule.retry_after_ms is not None:
        error.headers["retry-after-ms"] = str(rule.retry_after_ms)
    return error_response(error)


class DroppedConnection(Response):
    """Starts a response and breaks the connection mid-body: the client sees a dropped
    connection (the SDK raises ``APIConnectionError``), not an HTTP status."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
        raise ConnectionDropped


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


# The API version OpenAI sent in `openai-version` on every answer.
OPENAI_VERSION = b"2020-10-01"


class ApiMiddleware:
    """``x-request-id``, ``openai-version`` and ``openai-processing-ms`` (the time to the first
    byte of the answer) on every response, as OpenAI sent them; the API key check; and a
    last-resort 500 that is OpenAI-shaped and logged, never a traceback sent to the client."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.emulator.engine.ids.request_id()
        begun = time.perf_counter()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                elapsed = max(1, round((time.perf_counter() - begun) * 1000))
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"openai-version", OPENAI_VERSION),
                    (b"openai-processing-ms", str(elapsed).encode()),
                ]
            await send(message)

        denial = self._check_key(scope)
        if denial is not None:
            await error_response(denial)(scope, receive, send_with_id)
            return
        try:
            await self.app(scope, receive, send_with_id)
        except ConnectionDropped:
            raise  # uvicorn closes the connection; the filter keeps this out of the log
        except Exception:
            # Starlette has already sent the OpenAI-shaped 500 (see `_internal_error`);
            # log once here instead of letting uvicorn log it again.
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await error_response(server_error())(scope, receive, send_with_id)

    def _check_key(self, scope: Scope) -> APIError | None:
        expected = self.emulator.config.api_key
        if expected is None or not scope["path"].startswith("/v1/"):
            return None
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if not auth:
            return APIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        token = auth.removeprefix("Bearer ").strip()
        if token != expected:
            shown = f"{token[:3]}***{token[-4:]}" if len(token) > 8 else "***"
            return APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
        return None


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(server_error())


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        return error_response(APIError(405, f"Method {request.method} is not allowed for {request.url.path}."))
    return error_response(APIError(404, f"Invalid URL ({request.method} {request.url.path})"))


def build_app(emu: Emulator) -> ASGIApp:
    routes = [
        Route(path, api_endpoint(emu, op, handler), methods=[method], name=op)
        for method, path, op, handler in API_ROUTES
    ]
    routes += [Route(path, admin_endpoint(emu, handler), methods=[method]) for method, path, handler in ADMIN_ROUTES]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        yield
        await emu.engine.shutdown()
        await emu.responses.shutdown()

    app = Starlette(routes=routes, exception_handlers={HTTPException: _not_found, Exception: _internal_error}, lifespan=lifespan)
    return ApiMiddleware(app, emu)
