"""The Responses API's routes (create, retrieve, delete, cancel, input items) and the
Conversations API's (conversations and their items), behind the same engine."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from openai.types.conversations import (
    conversation_create_params,
    conversation_update_params,
    item_create_params,
)
from starlette.requests import Request
from starlette.responses import Response

from durable_assistants.emulator.engine import dump
from durable_assistants.emulator.errors import APIError, bad_request, server_error
from durable_assistants.emulator.http import (
    Handler,
    body_of,
    json_response,
    list_query,
    poll_after_headers,
    query_flag,
    query_int,
)
from durable_assistants.emulator.responses import response_body
from durable_assistants.emulator.responses_sse import ResponseEventStream, response_stream
from durable_assistants.emulator.validation import parse_json_body

if TYPE_CHECKING:
    from durable_assistants.emulator.app import Emulator

log = logging.getLogger("emulator")

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


