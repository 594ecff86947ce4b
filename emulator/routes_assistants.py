"""The Assistants v2 API's routes: assistants, threads, messages, runs (with their streams and
submits) and run steps. Thin: validate with the SDK's parameter types, call the engine,
render with the SDK's response types."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

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
from starlette.requests import Request
from starlette.responses import Response

from durable_assistants.emulator.engine import RunState, dump, step_body
from durable_assistants.emulator.http import (
    body_of,
    check_sampling,
    json_response,
    list_query,
    run_response,
)
from durable_assistants.emulator.sse import run_stream, stale_tail_stream

if TYPE_CHECKING:
    from durable_assistants.emulator.app import Emulator

log = logging.getLogger("emulator")

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


