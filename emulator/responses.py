"""The Responses and Conversations API state and response lifecycle, as OpenAI ran it.

Objects are the `openai` package's own pydantic types (``Response``, ``ResponseOutputMessage``,
``ResponseFunctionToolCall``, ``Conversation``); items are stored as the dicts the API lists
(``response_items.py``). Each response has one asyncio task that walks it through its
lifecycle (queued → in_progress → completed | incomplete | failed, or cancelled) and
publishes every step as a stream event with a ``sequence_number``. A background response
keeps its events, so a client can read its stream again from any point
(``GET /responses/{id}?stream=true&starting_after=N``).

One turn of the API-agnostic ``ScriptedModel`` makes one response. There is no
``requires_action``: a response whose output holds ``function_call`` items is simply
``completed``, and the next response answers them with ``function_call_output`` items,
chained by ``previous_response_id`` or through a conversation. The model's view of a turn
(``TurnContext``) is rebuilt from that chain: the newest user message and the function
calls and outputs after it.

Conversations: a response's input items are appended to its conversation when it is
created; its output items when it ends ``completed`` or ``incomplete`` (not when it fails or
is cancelled). While a response on a conversation is queued or in progress, the
conversation refuses another response (400 ``conversation_locked``).

Why one module of about 840 lines: test bench. The Responses and Conversations state
machine: a response's lifecycle, its items and the conversation lock share one store and one
lock; the routes are routes_responses.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from openai.types.conversations import Conversation
from openai.types.responses import (
    FunctionToolParam,
    Response,
    ResponseError,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
    response_create_params,
)
from openai.types.responses import response as response_types
from openai.types.responses.response_prompt_param import ResponsePromptParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from durable_assistants.emulator.config import EmulatorConfig, resolve_model
from durable_assistants.emulator.engine import dump
from durable_assistants.emulator.errors import APIError, bad_request, model_not_found
from durable_assistants.emulator.ids import IdFactory
from durable_assistants.emulator.model import (
    CompletedCall,
    FailTurn,
    FunctionSpec,
    ReplyTurn,
    ScriptedModel,
    ToolCallsTurn,
    TurnContext,
    count_tokens,
)
from durable_assistants.emulator.pagination import ListQuery, page
from durable_assistants.emulator.response_items import is_user_message, output_text, parse_items, store_item, text_of
from durable_assistants.emulator.script import Script, ScriptError, choose_script
from durable_assistants.emulator.stats import Stats
from durable_assistants.emulator.validation import check_positive, check_range, validate_params, validate_value, wrong_type

log = logging.getLogger("emulator")

ACTIVE_STATUSES = frozenset({"queued", "in_progress"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})
# The event that ends a response's stream, by the status it ended in. The spec has no
# `response.cancelled` stream event; a cancelled response ends its stream with
# `response.incomplete` carrying `status: "cancelled"` (the response's status is the truth).
TERMINAL_EVENTS = {
    "completed": "response.completed",
    "failed": "response.failed",
    "incomplete": "response.incomplete",
    "cancelled": "response.incomplete",
}
FINAL_EVENTS = frozenset(TERMINAL_EVENTS.values())
CONVERSATION_LOCKED = "conversation_locked"
LOCKED_MESSAGE = "Another process is currently operating on this conversation. Please retry in a few seconds."
MAX_ITEMS_PER_REQUEST = 20
# Characters after `resp_` in a response ID under compat.long_response_ids (425 in all).
RESPONSE_ID_CHARS = 420
_TIMESTAMPS = ("created_at", "completed_at")


def response_body(response: Response) -> dict[str, Any]:
    """A response as OpenAI sent it: the SDK's type holds timestamps as floats; the service
    sent integer seconds."""
    body = dump(response)
    for key in _TIMESTAMPS:
        if isinstance(body.get(key), float):
            body[key] = int(body[key])
    return body
# The Responses API names only one reason for running out of tokens.
INCOMPLETE_REASONS = {"max_completion_tokens": "max_output_tokens", "max_prompt_tokens": "max_output_tokens"}
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_PROMPT_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")

Event = dict[str, Any]


class StoredPrompt(BaseModel):
    """One version of a stored prompt (``PUT /_emulator/prompts/{prompt_id}``)."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(None, min_length=1, max_length=64, description="Default: the next integer.")
    instructions: str | None = Field(None, description="`{{name}}` is replaced by the request's prompt variable `name`.")
    model: str | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass
class ConversationState:
    conversation: Conversation
    items: list[dict[str, Any]] = field(default_factory=list)
    active: ResponseState | None = None


@dataclass(eq=False)  # compared and hashed by identity
class ResponseState:
    response: Response
    input_items: list[dict[str, Any]]
    # Everything the model sees but the instructions: the conversation's items or the
    # previous response's context and output, then this response's input items.
    context: list[dict[str, Any]]
    conversation: ConversationState | None
    script: Script | None
    turn: TurnContext
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[Event] = field(default_factory=list)
    subscribers: list[asyncio.Queue[Event]] = field(default_factory=list)
    next_sequence: int = 0
    task: asyncio.Task[None] | None = None
    completion_tokens: int = 0

    @property
    def keeps_events(self) -> bool:
        # Only background responses can be streamed again later.
        return bool(self.response.background)

    @property
    def done(self) -> bool:
        return self.response.status in TERMINAL_STATUSES

    # Callable[..., ...]: payloads bind loop variables as defaults (lambda piece=piece: ...).
    def emit(self, event_type: str, payload: Callable[..., dict[str, Any]]) -> None:
        sequence = self.next_sequence
        self.next_sequence += 1
        if not self.keeps_events and not self.subscribers:
            return  # nobody will ever read this event: skip rendering it
        event = {"type": event_type, **payload(), "sequence_number": sequence}
        if self.keeps_events:
            self.events.append(event)
        for queue in self.subscribers:
            queue.put_nowait(event)

    def subscribe(self, after: int | None = None) -> tuple[list[Event], asyncio.Queue[Event], bool]:
        """The stored events after ``after``, a queue for the ones still to come, and whether
        the response had ended already (then nothing more will come)."""
        backlog = [e for e in self.events if after is None or e["sequence_number"] > after]
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.subscribers.append(queue)
        return backlog, queue, self.done

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        with contextlib.suppress(ValueError):
            self.subscribers.remove(queue)


class ResponsesEngine:
    def __init__(
        self,
        config: EmulatorConfig,
        stats: Stats,
        ids: IdFactory,
        model: ScriptedModel,
        scenarios: dict[str, Script],
    ) -> None:
        self.config = config
        self.stats = stats
        self.ids = ids
        self.model = model
        self.scenarios = scenarios  # shared with the Assistants engine: one set of scenarios
        self.responses: dict[str, ResponseState] = {}
        self.conversations: dict[str, ConversationState] = {}
        self.prompts: dict[str, dict[str, StoredPrompt]] = {}
        # Responses whose task runs, stored or not (`store: false` ones are in no dict).
        self._running: set[ResponseState] = set()

    # ------------------------------------------------------------------ lifecycle of the engine

    async def shutdown(self) -> None:
        running = list(self._running)
        tasks = [s.task for s in running if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for state in running:
            # End them, so that a foreground create waiting for the end and any open stream return.
            self._finish(state, "cancelled")

    async def reset(self) -> None:
        await self.shutdown()
        self.responses.clear()
        self.conversations.clear()
        self.prompts.clear()

    # ------------------------------------------------------------------ requests

    def check_create(self, body: dict[str, Any]) -> dict[str, Any]:
        """A create body validated with the SDK's ``ResponseCreateParams`` and the limits the
        service enforced; ``input`` comes back as a list of checked items."""
        body = dict(body)
        has_input = "input" in body
        raw_input = body.pop("input", None)
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            raise wrong_type("stream", "a boolean", body["stream"])  # not "should be False": two TypedDicts split on it
        if isinstance(body.get("tools"), list):
            body["tools"] = [_tool_defaults(tool, i) for i, tool in enumerate(body["tools"])]
        params = validate_params(response_create_params.ResponseCreateParams, body)
        if has_input:
            params["input"] = parse_items(raw_input, "input")
        check_range(params, "temperature", 0, 2)
        check_range(params, "top_p", 0, 1)
        check_positive(params, "max_output_tokens", 16)
        return params

    def check_items(self, body: dict[str, Any], params_type: Any, *, required: bool) -> dict[str, Any]:
        """A conversation create or items create body: ``items`` checked item by item."""
        body = dict(body)
        if required and "items" not in body:
            raise bad_request("Missing required parameter: 'items'.", param="items", code="missing_required_parameter")
        raw_items = body.pop("items", None)
        params = validate_params(params_type, {**body, **({"items": []} if required else {})})
        if raw_items is not None and not isinstance(raw_items, list):
            raise wrong_type("items", "an array of input items", raw_items)
        items = [] if raw_items is None else parse_items(raw_items, "items")
        if len(items) > MAX_ITEMS_PER_REQUEST:
            raise bad_request(
                f"Invalid 'items': array too long. Expected an array with maximum length {MAX_ITEMS_PER_REQUEST}, "
                f"but got an array with length {len(items)} instead.",
                param="items",
                code="array_above_max_length",
            )
        params["items"] = items
        return params

    # ------------------------------------------------------------------ responses

    def create(self, params: dict[str, Any]) -> ResponseState:
        """Check everything, then create the response (not started: see ``launch``).
        Nothing is stored or appended unless every check passes."""
        compat = self.config.compat
        conversation_ref = params.get("conversation")
        # A stateless gateway (compat.previous_response_id_ignored) never looks at it.
        previous_id = None if compat.previous_response_id_ignored else params.get("previous_response_id")
        if conversation_ref is not None and previous_id is not None:
            raise bad_request(
                "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or 'conversation'.",
                param="conversation",
                code="mutually_exclusive_parameters",
            )
        prompt_echo, stored_prompt = self._resolve_prompt(params.get("prompt"))
        model = params.get("model") or (stored_prompt.model if stored_prompt else None)
        if not model:
            raise bad_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
        snapshot = resolve_model(self.config, model)
        if snapshot is None:
            raise model_not_found(model)
        if "input" not in params and conversation_ref is None and stored_prompt is None:
            raise bad_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        store = params.get("store")
        store = True if store is None else store
        background = bool(params.get("background")) and not compat.responses_background_ignored
        if background and not store:
            raise bad_request(
                "Invalid value for 'store': false. Background responses must be stored: set 'store' to true or leave it out.",
                param="store",
                code="invalid_value",
            )
        if params.get("tools") is not None:
            tools = _check_tools(params["tools"], "tools")
        elif stored_prompt is not None and stored_prompt.tools:
            tools = list(stored_prompt.tools)  # checked when the prompt was stored
        else:
            tools = []
        tool_choice = _check_tool_choice(params.get("tool_choice"), tools)
        instructions = params.get("instructions")
        if instructions is None and stored_prompt is not None and stored_prompt.instructions is not None:
            instructions = _fill_variables(stored_prompt.instructions, (prompt_echo or {}).get("variables") or {})

        conversation = None
        if conversation_ref is not None:
            conversation_id = conversation_ref if isinstance(conversation_ref, str) else conversation_ref["id"]
            if compat.conversations_absent:
                # A server without conversations knows none of them.
                raise APIError(404, f"Conversation with id '{conversation_id}' not found.", param="conversation")
            conversation = self.get_conversation(conversation_id, param="conversation")
            if conversation.active is not None:
                raise bad_request(LOCKED_MESSAGE, param="conversation", code=CONVERSATION_LOCKED)
            prior = list(conversation.items)
        elif previous_id is not None:
            previous = self.responses.get(previous_id)
            if previous is None:
                raise APIError(404, f"Previous response with id '{previous_id}' not found.", param="previous_response_id")
            if previous.response.status in ACTIVE_STATUSES:
                raise bad_request(
                    f"Previous response with id '{previous_id}' is still {previous.response.status}; "
                    "continue from it once it has finished.",
                    param="previous_response_id",
                )
            prior = previous.context + [dump(item) for item in previous.response.output]
        else:
            prior = []

        new_items: list[dict[str, Any]] = params.get("input") or []
        if not compat.previous_response_id_ignored:
            _check_outputs_match_calls(prior, new_items)  # a stateless gateway can't know the calls
        input_items = [store_item(item, self.ids.hex) for item in new_items]
        context = prior + input_items
        _check_calls_answered(context)
        script, user_text, rounds = self._turn_inputs(context, len(prior), params.get("metadata"))

        parallel = params.get("parallel_tool_calls")
        parallel = True if parallel is None else parallel
        prompt_tokens = count_tokens((instructions or "") + "".join(text_of(i) for i in context) + json.dumps(tools))
        fields: dict[str, Any] = {
            "id": self.ids.new("resp_", RESPONSE_ID_CHARS) if compat.long_response_ids else self.ids.hex("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "queued" if background else "in_progress",
            "background": background,
            "completed_at": None,
            "conversation": {"id": conversation.conversation.id} if conversation else None,
            "error": None,
            "incomplete_details": None,
            "instructions": instructions,
            "max_output_tokens": params.get("max_output_tokens"),
            "max_tool_calls": params.get("max_tool_calls"),
            "metadata": params.get("metadata") or {},
            "model": snapshot,
            "output": [],
            "parallel_tool_calls": parallel,
            "previous_response_id": previous_id,
            "prompt": prompt_echo,
            "store": store,
            "temperature": _or(params.get("temperature"), 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium", **(params.get("text") or {})},
            "tool_choice": tool_choice,
            "tools": tools,
            "top_p": _or(params.get("top_p"), 1.0),
            "truncation": params.get("truncation") or "disabled",
            "usage": None,
            # Echoed as OpenAI did, null (or its default) when the request left them out.
            "reasoning": {"effort": None, "summary": None, **(params.get("reasoning") or {})},
            "service_tier": params.get("service_tier") or "default",
            "top_logprobs": params.get("top_logprobs") or 0,
            "user": params.get("user"),
            "safety_identifier": params.get("safety_identifier"),
            "prompt_cache_key": params.get("prompt_cache_key"),
            "prompt_cache_retention": params.get("prompt_cache_retention"),
        }
        if compat.responses_background_ignored:
            # The gateway knows no `background`: the key is left unset, so no body or event has it.
            del fields["background"]
        response = Response.model_validate(fields)
        turn = TurnContext(
            user_text=user_text,
            tools=[FunctionSpec(t["name"], t.get("description"), t.get("parameters")) for t in tools],
            tool_choice=_model_tool_choice(tool_choice),
            parallel_tool_calls=parallel,
            rounds_done=rounds,
            prompt_tokens=prompt_tokens,
            max_completion_tokens=params.get("max_output_tokens"),
            orphan_outputs=_orphan_outputs(context),
        )
        state = ResponseState(response, input_items, context, conversation, script, turn)
        if store:
            self.responses[response.id] = state
        self.stats.run(response.id, "responses_created")
        outputs = sum(1 for item in input_items if item["type"] == "function_call_output")
        if outputs:
            self.stats.run(response.id, "function_call_outputs_accepted", outputs)
        if conversation is not None:
            conversation.active = state
            self.stats.thread(conversation.conversation.id, "responses_created")
            self._append(conversation, input_items)
        return state

    def launch(self, state: ResponseState) -> None:
        """Start the response's lifecycle task. Call after subscribing a stream, so it sees every event."""
        task = asyncio.get_running_loop().create_task(self._drive(state), name=state.response.id)
        state.task = task
        self._running.add(state)
        task.add_done_callback(lambda _: self._running.discard(state))

    def get(self, response_id: str) -> ResponseState:
        state = self.responses.get(response_id)
        if state is None:
            status = 400 if self.config.compat.unknown_response_400 else 404
            raise APIError(status, f"Response with id '{response_id}' not found.")
        return state

    def list_input_items(self, response_id: str, query: ListQuery) -> dict[str, Any]:
        return page(self.get(response_id).input_items, query, id_of=lambda i: i["id"], render=lambda i: i)

    async def cancel(self, response_id: str) -> ResponseState:
        state = self.get(response_id)
        response = state.response
        if not response.background:
            raise bad_request(
                f"Only responses created with background=true can be cancelled; response {response_id} was not.",
                param="response_id",
            )
        if response.status == "cancelled":
            return state
        if response.status in TERMINAL_STATUSES:
            raise bad_request(f"Cannot cancel a {response.status} response.", param="response_id")
        await self._stop(state)
        return state

    async def delete(self, response_id: str) -> dict[str, Any]:
        state = self.get(response_id)
        if not state.done:
            await self._stop(state)
        self.responses.pop(response_id, None)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def _stop(self, state: ResponseState) -> None:
        if state.task is not None:
            state.task.cancel()
            await asyncio.gather(state.task, return_exceptions=True)
        self._finish(state, "cancelled")

    def _turn_inputs(
        self, context: list[dict[str, Any]], prior_count: int, metadata: dict[str, str] | None
    ) -> tuple[Script | None, str, list[list[CompletedCall]]]:
        """The script, the user's visible text and the tool rounds since that text."""
        user_index = next((i for i in range(len(context) - 1, -1, -1) if is_user_message(context[i])), -1)
        user_text, source = "", "the input"
        if user_index >= 0:
            user_text = text_of(context[user_index])
            source = f"input[{user_index - prior_count}]" if user_index >= prior_count else f"item {context[user_index]['id']}"
        try:
            script, visible = choose_script(user_text, source, [("the response's metadata", metadata)], self.scenarios)
        except ScriptError as exc:
            raise bad_request(str(exc), param="input", code="invalid_emulator_script") from None
        return script, visible, _rounds(context[user_index + 1 :])

    # ------------------------------------------------------------------ the lifecycle task

    async def _drive(self, state: ResponseState) -> None:
        response = state.response
        try:
            state.emit("response.created", lambda: {"response": response_body(response)})
            if response.background:
                state.emit("response.queued", lambda: {"response": response_body(response)})
                await _sleep(self.config.queue_seconds)
                response.status = "in_progress"
            state.emit("response.in_progress", lambda: {"response": response_body(response)})
            script = state.script
            await _sleep(script.turn_seconds if script and script.turn_seconds is not None else self.config.turn_seconds)
            turn = self.model.next_turn(script, state.turn)
            if isinstance(turn, ToolCallsTurn):
                await self._call_tools(state, turn)
                self._finish(state, "completed")
            elif isinstance(turn, FailTurn):
                response.error = ResponseError(code=turn.code, message=turn.message)
                self._finish(state, "failed")
            else:
                await self._reply(state, turn)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug here must not leave a response in_progress forever: fail it visibly.
            log.exception("response %s crashed in the emulator", response.id)
            response.error = ResponseError(code="server_error", message="The emulator failed while running this response; see its log.")
            self._finish(state, "failed")

    async def _call_tools(self, state: ResponseState, turn: ToolCallsTurn) -> None:
        response = state.response
        chunk = self._chunk(state)
        for call in turn.calls:
            index = len(response.output)
            item = ResponseFunctionToolCall.model_validate(
                {
                    "id": self.ids.hex("fc_"),
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": self.ids.new("call_"),
                    "name": call.name,
                    "arguments": "",
                }
            )
            response.output.append(item)
            state.emit("response.output_item.added", lambda index=index, item=item: {"output_index": index, "item": dump(item)})
            for start in range(0, len(call.arguments), chunk):
                piece = call.arguments[start : start + chunk]
                item.arguments += piece
                state.emit(
                    "response.function_call_arguments.delta",
                    lambda piece=piece, index=index, item=item: {"item_id": item.id, "output_index": index, "delta": piece},
                )
            state.emit(
                "response.function_call_arguments.done",
                lambda index=index, item=item: {"item_id": item.id, "output_index": index, "name": item.name, "arguments": item.arguments},
            )
            item.status = "completed"
            state.emit("response.output_item.done", lambda index=index, item=item: {"output_index": index, "item": dump(item)})
            state.completion_tokens += count_tokens(call.arguments)

    async def _reply(self, state: ResponseState, turn: ReplyTurn) -> None:
        response = state.response
        index = len(response.output)
        message = ResponseOutputMessage.model_validate(
            {"id": self.ids.hex("msg_"), "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        )
        response.output.append(message)
        state.emit("response.output_item.added", lambda: {"output_index": index, "item": dump(message)})
        part = ResponseOutputText.model_validate({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        message.content.append(part)
        where = {"item_id": message.id, "output_index": index, "content_index": 0}
        state.emit("response.content_part.added", lambda: {**where, "part": dump(part)})

        script = state.script
        chunk = self._chunk(state)
        rate = (script.chars_per_second if script and script.chars_per_second else None) or self.config.chars_per_second
        text = turn.text
        for start in range(0, len(text), chunk):
            piece = text[start : start + chunk]
            if rate and start:
                await asyncio.sleep(len(piece) / rate)
            part.text += piece
            state.emit("response.output_text.delta", lambda piece=piece: {**where, "delta": piece, "logprobs": []})
        state.emit("response.output_text.done", lambda: {**where, "text": part.text, "logprobs": []})
        state.emit("response.content_part.done", lambda: {**where, "part": dump(part)})
        state.completion_tokens += count_tokens(text)
        message.status = "completed" if turn.incomplete_reason is None else "incomplete"
        state.emit("response.output_item.done", lambda: {"output_index": index, "item": dump(message)})
        if turn.incomplete_reason is None:
            self._finish(state, "completed")
        else:
            reason = INCOMPLETE_REASONS.get(turn.incomplete_reason, "max_output_tokens")
            response.incomplete_details = response_types.IncompleteDetails(reason=reason)
            self._finish(state, "incomplete")

    def _chunk(self, state: ResponseState) -> int:
        script = state.script
        return (script.chunk_chars if script and script.chunk_chars else None) or self.config.chunk_chars

    def _finish(self, state: ResponseState, status: str) -> None:
        response = state.response
        if response.status in TERMINAL_STATUSES:
            return  # already ended (a cancel racing a delete, say)
        response.status = status  # type: ignore[assignment]
        if status == "completed":
            response.completed_at = int(time.time())
        if status != "cancelled":
            prompt = state.turn.prompt_tokens
            response.usage = ResponseUsage.model_validate(
                {
                    "input_tokens": prompt,
                    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                    "output_tokens": state.completion_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": prompt + state.completion_tokens,
                }
            )
        conversation = state.conversation
        if conversation is not None:
            if status in ("completed", "incomplete"):
                self._append(conversation, [dump(item) for item in response.output])
            if conversation.active is state:
                conversation.active = None
        self.stats.run(response.id, f"ended_{status}")
        state.finished.set()
        state.emit(TERMINAL_EVENTS[status], lambda: {"response": response_body(response)})

    # ------------------------------------------------------------------ conversations

    def create_conversation(self, params: dict[str, Any]) -> ConversationState:
        state = ConversationState(
            Conversation.model_validate(
                {
                    "id": self.ids.hex("conv_"),
                    "object": "conversation",
                    "created_at": int(time.time()),
                    "metadata": params.get("metadata") or {},
                }
            )
        )
        self.conversations[state.conversation.id] = state
        self._append(state, [store_item(item, self.ids.hex) for item in params["items"]])
        return state

    def get_conversation(self, conversation_id: str, *, param: str | None = None) -> ConversationState:
        state = self.conversations.get(conversation_id)
        if state is None:
            raise APIError(404, f"Conversation with id '{conversation_id}' not found.", param=param)
        return state

    def update_conversation(self, conversation_id: str, params: dict[str, Any]) -> Conversation:
        state = self.get_conversation(conversation_id)
        state.conversation.metadata = params.get("metadata") or {}
        return state.conversation

    def delete_conversation(self, conversation_id: str) -> dict[str, Any]:
        self.get_conversation(conversation_id)
        del self.conversations[conversation_id]
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    def add_items(self, conversation_id: str, params: dict[str, Any]) -> dict[str, Any]:
        state = self.get_conversation(conversation_id)
        items = [store_item(item, self.ids.hex) for item in params["items"]]
        self._append(state, items)
        return {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }

    def list_items(self, conversation_id: str, query: ListQuery) -> dict[str, Any]:
        return page(self.get_conversation(conversation_id).items, query, id_of=lambda i: i["id"], render=lambda i: i)

    def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any]:
        for item in self.get_conversation(conversation_id).items:
            if item["id"] == item_id:
                return item
        raise APIError(404, f"Item with id '{item_id}' not found.")

    def delete_item(self, conversation_id: str, item_id: str) -> Conversation:
        state = self.get_conversation(conversation_id)
        state.items.remove(self.get_item(conversation_id, item_id))
        return state.conversation

    def _append(self, state: ConversationState, items: list[dict[str, Any]]) -> None:
        state.items.extend(items)
        if items:
            self.stats.thread(state.conversation.id, "items_added", len(items))

    # ------------------------------------------------------------------ stored prompts

    def put_prompt(self, prompt_id: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            prompt = StoredPrompt.model_validate(body)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            name = ".".join(str(p) for p in error["loc"]) or "body"
            raise bad_request(f"Invalid '{name}': {error['msg']}, got {error.get('input')!r}.", param=name) from None
        if prompt.tools is not None:
            tools = [_tool_defaults(tool, i) for i, tool in enumerate(prompt.tools)]
            validate_value(list[FunctionToolParam], tools, at=("tools",))
            prompt.tools = _check_tools(tools, "tools")
        versions = self.prompts.setdefault(prompt_id, {})
        if prompt.version is None:
            prompt.version = str(1 + max((int(v) for v in versions if v.isdigit()), default=0))
        versions.pop(prompt.version, None)  # a rewritten version becomes the latest
        versions[prompt.version] = prompt
        return {"id": prompt_id, **prompt.model_dump()}

    def list_prompts(self) -> dict[str, Any]:
        return {
            prompt_id: {"latest": list(versions)[-1], "versions": [v.model_dump() for v in versions.values()]}
            for prompt_id, versions in self.prompts.items()
        }

    def delete_prompt(self, prompt_id: str) -> dict[str, Any]:
        if self.prompts.pop(prompt_id, None) is None:
            raise APIError(404, f"Prompt with id '{prompt_id}' not found.")
        return {"id": prompt_id, "deleted": True}

    def _resolve_prompt(self, ref: ResponsePromptParam | None) -> tuple[dict[str, Any] | None, StoredPrompt | None]:
        if ref is None:
            return None, None
        versions = self.prompts.get(ref["id"])
        if not versions:
            raise APIError(404, f"Prompt with id '{ref['id']}' not found.", param="prompt.id")
        version = ref.get("version") or list(versions)[-1]
        stored = versions.get(version)
        if stored is None:
            raise APIError(
                404,
                f"Prompt '{ref['id']}' has no version '{version}' (versions: {', '.join(versions)}).",
                param="prompt.version",
            )
        return {"id": ref["id"], "version": version, "variables": ref.get("variables")}, stored


# ---------------------------------------------------------------------------- checks and helpers


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _tool_defaults(tool: Any, index: int) -> Any:
    """Flat function tools as the service took them: ``strict`` (default true) and
    ``parameters`` may be left out, though the SDK's param type marks them required."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    if isinstance(tool.get("function"), dict):
        raise bad_request(
            f"Invalid 'tools[{index}]': the Responses API takes flat function tools "
            "({\"type\": \"function\", \"name\": ..., \"parameters\": ...}), not the Assistants shape "
            "with a nested 'function' object.",
            param=f"tools[{index}]",
            code="invalid_value",
        )
    return {"strict": True, "parameters": None, **tool}


def _check_tools(tools: Iterable[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    checked = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise bad_request(
                f"Invalid value for '{where}[{i}].type': {tool.get('type')!r}. The emulator's model calls function tools only (type 'function').",
                param=f"{where}[{i}].type",
                code="invalid_value",
            )
        name = tool["name"]
        if not _FUNCTION_NAME.match(name):
            raise bad_request(
                f"Invalid '{where}[{i}].name': string does not match pattern. Expected a string that "
                f"matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$', but got {name!r} instead.",
                param=f"{where}[{i}].name",
                code="invalid_value",
            )
        echoed = {"type": "function", "name": name}
        if tool.get("description") is not None:
            echoed["description"] = tool["description"]
        echoed["parameters"] = tool.get("parameters")
        echoed["strict"] = _or(tool.get("strict"), True)
        checked.append(echoed)
    if len(checked) > 128:
        raise bad_request(
            f"Invalid '{where}': array too long. Expected an array with maximum length 128, but got an array with length {len(checked)} instead.",
            param=where,
            code="array_above_max_length",
        )
    return checked


def _check_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    if choice.get("type") != "function":
        raise bad_request(
            f"Invalid value for 'tool_choice.type': {choice.get('type')!r}. The emulator supports 'none', 'auto', "
            "'required' and {\"type\": \"function\", \"name\": ...}.",
            param="tool_choice.type",
            code="invalid_value",
        )
    if choice["name"] not in {t["name"] for t in tools}:
        raise bad_request(
            f"Tool choice 'function' with name {choice['name']!r} not found in 'tools' parameter.",
            param="tool_choice",
            code="invalid_value",
        )
    return {"type": "function", "name": choice["name"]}


def _model_tool_choice(choice: Any) -> Any:
    # The scripted model speaks the Assistants shape for a named function.
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _fill_variables(template: str, variables: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        found = variables.get(match.group(1))
        if isinstance(found, str):
            return found
        if isinstance(found, dict) and isinstance(found.get("text"), str):
            return found["text"]  # an input_text part
        return match.group(0)  # unknown (or non-text) variables stay as written

    return _PROMPT_VARIABLE.sub(value, template)


def _check_outputs_match_calls(prior: list[dict[str, Any]], new_items: list[dict[str, Any]]) -> None:
    known = {item["call_id"] for item in prior if item["type"] == "function_call"}
    for item in new_items:
        if item["type"] == "function_call":
            known.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in known:
            raise bad_request(f"No tool call found for function call output with call_id {item['call_id']}.", param="input")


def _check_calls_answered(context: list[dict[str, Any]]) -> None:
    answered = {item["call_id"] for item in context if item["type"] == "function_call_output"}
    for item in context:
        if item["type"] == "function_call" and item["call_id"] not in answered:
            raise bad_request(f"No tool output found for function call {item['call_id']}.", param="input")


def _orphan_outputs(context: list[dict[str, Any]]) -> list[str]:
    """Outputs of function calls that are not in the context: only when the chain they
    answer was dropped (compat.previous_response_id_ignored); otherwise create refuses them."""
    calls = {item["call_id"] for item in context if item["type"] == "function_call"}
    return [
        output_text(item["output"])
        for item in context
        if item["type"] == "function_call_output" and item["call_id"] not in calls
    ]


def _rounds(items: list[dict[str, Any]]) -> list[list[CompletedCall]]:
    """Function calls after the newest user message, one round per run of consecutive calls
    (one response's output), each with its output."""
    outputs = {item["call_id"]: output_text(item["output"]) for item in items if item["type"] == "function_call_output"}
    rounds: list[list[CompletedCall]] = []
    previous_was_call = False
    for item in items:
        is_call = item["type"] == "function_call"
        if is_call:
            if not previous_was_call:
                rounds.append([])
            rounds[-1].append(CompletedCall(item["name"], item["arguments"], outputs.get(item["call_id"], "")))
        previous_was_call = is_call
    return rounds
