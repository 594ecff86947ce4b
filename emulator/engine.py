"""The Assistants API state and run lifecycle, as OpenAI ran it (or, with a ``compat``
switch on, as a compatible server that is not OpenAI does; see ``config.CompatConfig``).

Objects are the `openai` package's own pydantic types (``Assistant``, ``Thread``,
``Message``, ``Run``, ``RunStep``), so every body the server sends is one the SDK was built
to parse. Each active run has one asyncio task that walks it through its lifecycle
(queued → in_progress → requires_action … → a terminal status) and publishes the same
transitions as stream events to whoever is subscribed. The turns themselves come from the
API-agnostic ``ScriptedModel``.

Why one module of about 880 lines: test bench. The Assistants state machine: runs, steps,
messages and their expiry share one store and one lock, as on the server it imitates; the
routes are routes_assistants.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from openai.types.beta import Assistant, Thread
from openai.types.beta.threads import Message, Run, TextContentBlock
from openai.types.beta.threads import message as message_types
from openai.types.beta.threads import run as run_types
from openai.types.beta.threads.runs import FunctionToolCall, RunStep
from openai.types.beta.threads.runs import run_step as step_types

from durable_assistants.emulator.config import EmulatorConfig, resolve_model
from durable_assistants.emulator.errors import APIError, bad_request, model_not_found, not_found, server_error
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
from durable_assistants.emulator.script import Script, ScriptError, choose_script
from durable_assistants.emulator.stats import Stats

log = logging.getLogger("emulator")

ACTIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
TERMINAL_STATUSES = frozenset({"cancelled", "failed", "completed", "incomplete", "expired"})
# A run stream ends after one of these events (then `done`).
FINAL_EVENTS = frozenset(
    f"thread.run.{s}" for s in ("requires_action", "completed", "failed", "cancelled", "expired", "incomplete")
)

Event = tuple[str, dict[str, Any]]


def dump(obj: Any) -> dict[str, Any]:
    # Objects are built with every top-level field given (null included, as OpenAI sent
    # them); nested request echoes keep only what the client sent, so an optional field the
    # client left out (a function's `description`) is left out, not sent as null.
    return obj.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)


def step_body(step: RunStep) -> dict[str, Any]:
    body = dump(step)
    # The spec and the SDK say `expired_at`; the real service sent `expires_at` on steps, and
    # only that (the SDK's `RunStep.expired_at` read None from it).
    body["expires_at"] = body.pop("expired_at", None)
    return body


def _check_something_to_answer(
    stored: list[Message], new: list[dict[str, Any]], params: dict[str, Any], assistant: Assistant
) -> None:
    """OpenAI refused a run with neither a user message on its thread nor instructions."""
    if any(m.role == "user" for m in stored) or any(m.get("role") == "user" for m in new):
        return
    if assistant.instructions or params.get("instructions") or params.get("additional_instructions"):
        return
    raise bad_request(
        "Run creation requires a Thread with a user message or an assistant with instructions.",
        code="invalid_thread",
    )


@dataclass
class ThreadState:
    thread: Thread
    messages: list[Message] = field(default_factory=list)
    runs: list[RunState] = field(default_factory=list)
    active_run: RunState | None = None


@dataclass
class RunState:
    run: Run
    thread: ThreadState
    script: Script | None
    user_text: str
    prompt_tokens: int
    deadline: float
    steps: list[RunStep] = field(default_factory=list)
    rounds_done: list[list[CompletedCall]] = field(default_factory=list)
    pending_step: RunStep | None = None
    submitted: asyncio.Event = field(default_factory=asyncio.Event)
    subscribers: list[asyncio.Queue[Event]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    completion_tokens: int = 0
    open_message: Message | None = None
    open_step: RunStep | None = None

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        with contextlib.suppress(ValueError):
            self.subscribers.remove(queue)

    # Callable[..., ...]: payloads bind loop variables as defaults (lambda piece=piece: ...).
    def emit(self, event: str, payload: Callable[..., dict[str, Any]]) -> None:
        if not self.subscribers:
            return  # nobody streams this run: skip rendering
        body = payload()
        for queue in self.subscribers:
            queue.put_nowait((event, body))


class AssistantsEngine:
    def __init__(self, config: EmulatorConfig, stats: Stats, ids: IdFactory, model: ScriptedModel | None = None) -> None:
        self.config = config
        self.stats = stats
        self.ids = ids
        self.model = model or ScriptedModel()
        self.assistants: dict[str, Assistant] = {}
        self.threads: dict[str, ThreadState] = {}
        self.runs: dict[str, RunState] = {}
        self.scenarios: dict[str, Script] = {}

    # ------------------------------------------------------------------ lifecycle of the engine

    async def shutdown(self) -> None:
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        await self.shutdown()
        self.assistants.clear()
        self.threads.clear()
        self.runs.clear()
        self.scenarios.clear()

    # ------------------------------------------------------------------ assistants

    def check_model(self, model: str | None) -> None:
        """An unknown model is a 400 `model_not_found` (the Assistants API echoes it as given)."""
        if model is not None and resolve_model(self.config, model) is None:
            raise model_not_found(model)

    def create_assistant(self, params: dict[str, Any]) -> Assistant:
        self.check_model(params.get("model"))
        assistant = Assistant.model_validate(
            {
                "id": self.ids.new("asst_"),
                "object": "assistant",
                "created_at": _now(),
                "name": params.get("name"),
                "description": params.get("description"),
                "model": params["model"],
                "instructions": params.get("instructions"),
                "tools": _check_tools(params.get("tools") or []),
                "tool_resources": params.get("tool_resources") or {},  # OpenAI sent {}, not null
                "metadata": params.get("metadata") or {},
                "temperature": params.get("temperature", 1.0),
                "top_p": params.get("top_p", 1.0),
                "response_format": params.get("response_format", "auto"),
            }
        )
        self.assistants[assistant.id] = assistant
        return assistant

    def get_assistant(self, assistant_id: str) -> Assistant:
        try:
            return self.assistants[assistant_id]
        except KeyError:
            raise not_found("assistant", assistant_id) from None

    def update_assistant(self, assistant_id: str, params: dict[str, Any]) -> Assistant:
        assistant = self.get_assistant(assistant_id)
        self.check_model(params.get("model"))
        if "tools" in params:
            params = {**params, "tools": _check_tools(params["tools"] or [])}
        data = dump(assistant)
        data.update({k: v for k, v in params.items() if k != "reasoning_effort"})
        updated = Assistant.model_validate(data)
        self.assistants[assistant_id] = updated
        return updated

    def delete_assistant(self, assistant_id: str) -> dict[str, Any]:
        self.get_assistant(assistant_id)
        del self.assistants[assistant_id]
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}

    def list_assistants(self, query: ListQuery) -> dict[str, Any]:
        return page(list(self.assistants.values()), query, id_of=lambda a: a.id, render=self.render_assistant)

    def render_assistant(self, assistant: Assistant) -> dict[str, Any]:
        body = dump(assistant)
        if self.config.compat.null_tools and not body.get("tools"):
            body["tools"] = None  # compat.null_tools: an empty list is sent as null
        return body

    # ------------------------------------------------------------------ threads

    def create_thread(self, params: dict[str, Any]) -> ThreadState:
        messages = params.get("messages") or []
        for i, message in enumerate(messages):
            _check_message_params(message, f"messages[{i}]")
        state = ThreadState(
            Thread.model_validate(
                {
                    "id": self.ids.new("thread_"),
                    "object": "thread",
                    "created_at": _now(),
                    "metadata": params.get("metadata") or {},
                    "tool_resources": params.get("tool_resources") or {},  # OpenAI sent {}, not null
                }
            )
        )
        self.threads[state.thread.id] = state
        for message in messages:
            self._add_message(state, message, run_id=None, assistant_id=None)
        return state

    def get_thread(self, thread_id: str) -> ThreadState:
        try:
            return self.threads[thread_id]
        except KeyError:
            raise not_found("thread", thread_id) from None

    def update_thread(self, thread_id: str, params: dict[str, Any]) -> Thread:
        state = self.get_thread(thread_id)
        for key in ("metadata", "tool_resources"):
            if key in params:
                setattr(state.thread, key, params[key])
        return state.thread

    def delete_thread(self, thread_id: str) -> dict[str, Any]:
        state = self.get_thread(thread_id)
        for run in state.runs:
            if run.task is not None:
                run.task.cancel()
            self.runs.pop(run.run.id, None)
        del self.threads[thread_id]
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    # ------------------------------------------------------------------ messages

    def create_message(self, thread_id: str, params: dict[str, Any]) -> Message:
        state = self.get_thread(thread_id)
        if state.active_run is not None:
            raise bad_request(f"Can't add messages to {thread_id} while a run {state.active_run.run.id} is active.")
        _check_message_params(params, "")
        return self._add_message(state, params, run_id=None, assistant_id=None)

    def _add_message(self, state: ThreadState, params: dict[str, Any], *, run_id: str | None, assistant_id: str | None) -> Message:
        message = Message.model_validate(
            {
                "id": self.ids.new("msg_"),
                "object": "thread.message",
                "created_at": _now(),
                "thread_id": state.thread.id,
                "status": "completed",
                "incomplete_details": None,
                "completed_at": None,
                "incomplete_at": None,
                "role": params["role"],
                "content": _content_blocks(params["content"]),
                "assistant_id": assistant_id,
                "run_id": run_id,
                "attachments": params.get("attachments") or [],
                "metadata": params.get("metadata") or {},
            }
        )
        state.messages.append(message)
        self.stats.thread(state.thread.id, f"{message.role}_messages_created")
        return message

    def get_message(self, thread_id: str, message_id: str) -> Message:
        state = self.get_thread(thread_id)
        for message in state.messages:
            if message.id == message_id:
                return message
        raise not_found("message", message_id)

    def update_message(self, thread_id: str, message_id: str, params: dict[str, Any]) -> Message:
        message = self.get_message(thread_id, message_id)
        if "metadata" in params:
            message.metadata = params["metadata"]
        return message

    def delete_message(self, thread_id: str, message_id: str) -> dict[str, Any]:
        message = self.get_message(thread_id, message_id)
        self.threads[thread_id].messages.remove(message)
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}

    def list_messages(self, thread_id: str, query: ListQuery, run_id: str | None) -> dict[str, Any]:
        messages = self.get_thread(thread_id).messages
        if run_id is not None:
            messages = [m for m in messages if m.run_id == run_id]
        return page(messages, query, id_of=lambda m: m.id, render=dump)

    # ------------------------------------------------------------------ runs

    def create_run(self, thread_id: str, params: dict[str, Any]) -> RunState:
        state = self.get_thread(thread_id)
        assistant = self.get_assistant(params["assistant_id"])
        self.check_model(params.get("model"))
        if state.active_run is not None:
            raise bad_request(f"Thread {thread_id} already has an active run {state.active_run.run.id}.")
        additional = params.get("additional_messages") or []
        for i, message in enumerate(additional):
            _check_message_params(message, f"additional_messages[{i}]")
        tools = _check_tools(params["tools"]) if params.get("tools") is not None else [dump(t) for t in assistant.tools]
        _check_something_to_answer(state.messages, additional, params, assistant)
        script, user_text = self._choose_script(state.messages, additional, params.get("metadata"), assistant)
        for message in additional:
            self._add_message(state, message, run_id=None, assistant_id=None)
        return self._start_run(state, assistant, params, tools, script, user_text)

    def create_thread_and_run(self, params: dict[str, Any]) -> RunState:
        assistant = self.get_assistant(params["assistant_id"])
        self.check_model(params.get("model"))
        if params.get("tools") is not None:
            _check_tools(params["tools"])
        thread_params = params.get("thread") or {}
        for i, message in enumerate(thread_params.get("messages") or []):
            _check_message_params(message, f"thread.messages[{i}]")
        # Check and resolve the script before creating anything, so a bad request leaves no thread behind.
        _check_something_to_answer([], thread_params.get("messages") or [], params, assistant)
        self._choose_script([], thread_params.get("messages") or [], params.get("metadata"), assistant, "the thread's messages")
        state = self.create_thread(thread_params)
        run_params = {k: v for k, v in params.items() if k not in ("thread", "tool_resources")}
        return self.create_run(state.thread.id, run_params)

    def _choose_script(
        self,
        stored_messages: list[Message],
        new_messages: list[dict[str, Any]],
        run_metadata: dict[str, str] | None,
        assistant: Assistant,
        new_source: str = "the run's additional messages",
    ) -> tuple[Script | None, str]:
        """The script for a new run and the user's text the model answers."""
        user_text, source = "", ""
        for message in reversed(new_messages):
            if message["role"] == "user":
                user_text, source = _text_of_params(message), new_source
                break
        else:
            for stored in reversed(stored_messages):
                if stored.role == "user":
                    user_text, source = _text_of(stored), f"message {stored.id}"
                    break
        owners = (("the run's metadata", run_metadata), (f"assistant {assistant.id}'s metadata", assistant.metadata))
        try:
            return choose_script(user_text, source, owners, self.scenarios)
        except ScriptError as exc:
            raise bad_request(str(exc), param="messages", code="invalid_emulator_script") from None

    def _start_run(
        self,
        state: ThreadState,
        assistant: Assistant,
        params: dict[str, Any],
        tools: list[dict[str, Any]],
        script: Script | None,
        user_text: str,
    ) -> RunState:
        created = time.time()
        no_expiry = self.config.compat.no_expiry  # compat.no_expiry: expires_at null, no deadline
        instructions = params.get("instructions")
        if instructions is None:
            instructions = assistant.instructions or ""
        if params.get("additional_instructions"):
            instructions = f"{instructions}\n{params['additional_instructions']}" if instructions else params["additional_instructions"]
        run = Run.model_validate(
            {
                "id": self.ids.new("run_"),
                "object": "thread.run",
                "created_at": int(created),
                "assistant_id": assistant.id,
                "thread_id": state.thread.id,
                "status": "queued",
                "started_at": None,
                "expires_at": None if no_expiry else int(created + self.config.expiry_seconds),
                "cancelled_at": None,
                "failed_at": None,
                "completed_at": None,
                "required_action": None,
                "last_error": None,
                "model": params.get("model") or assistant.model,
                "instructions": instructions,
                "tools": tools,
                "metadata": params.get("metadata") or {},
                "incomplete_details": None,
                "usage": None,
                "temperature": params.get("temperature", assistant.temperature),
                "top_p": params.get("top_p", assistant.top_p),
                "max_prompt_tokens": params.get("max_prompt_tokens"),
                "max_completion_tokens": params.get("max_completion_tokens"),
                "truncation_strategy": params.get("truncation_strategy") or {"type": "auto", "last_messages": None},
                "response_format": params.get("response_format") or assistant.response_format or "auto",
                "tool_choice": params.get("tool_choice") or "auto",
                "parallel_tool_calls": params.get("parallel_tool_calls", True),
            }
        )
        prompt_text = instructions + "".join(_text_of(m) for m in state.messages) + json.dumps(tools)
        run_state = RunState(
            run=run,
            thread=state,
            script=script,
            user_text=user_text,
            prompt_tokens=count_tokens(prompt_text),
            deadline=math.inf if no_expiry else created + self.config.expiry_seconds,
        )
        state.runs.append(run_state)
        state.active_run = run_state
        self.runs[run.id] = run_state
        self.stats.thread(state.thread.id, "runs_created")
        return run_state

    def launch(self, run_state: RunState) -> None:
        """Start the run's lifecycle task. Call after subscribing a stream, so it sees every event."""
        run_state.task = asyncio.get_running_loop().create_task(self._drive(run_state), name=run_state.run.id)

    def get_run(self, thread_id: str, run_id: str) -> RunState:
        self.get_thread(thread_id)
        run_state = self.runs.get(run_id)
        if run_state is None or run_state.thread.thread.id != thread_id:
            raise not_found("run", run_id)
        return run_state

    def list_runs(self, thread_id: str, query: ListQuery) -> dict[str, Any]:
        return page(self.get_thread(thread_id).runs, query, id_of=lambda r: r.run.id, render=lambda r: dump(r.run))

    def update_run(self, thread_id: str, run_id: str, params: dict[str, Any]) -> Run:
        run_state = self.get_run(thread_id, run_id)
        if "metadata" in params:
            run_state.run.metadata = params["metadata"]
        return run_state.run

    def list_steps(self, thread_id: str, run_id: str, query: ListQuery) -> dict[str, Any]:
        steps = self.get_run(thread_id, run_id).steps
        return page(steps, query, id_of=lambda s: s.id, render=step_body)

    def get_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep:
        for step in self.get_run(thread_id, run_id).steps:
            if step.id == step_id:
                return step
        raise not_found("run step", step_id)

    # ------------------------------------------------------------------ submit and cancel

    def submit_tool_outputs(self, thread_id: str, run_id: str, params: dict[str, Any]) -> RunState:
        run_state = self.get_run(thread_id, run_id)
        try:
            self._accept_outputs(run_state, params["tool_outputs"])
        except APIError:
            self.stats.run(run_id, "submits_rejected")
            raise
        self.stats.run(run_id, "submits_accepted")
        return run_state

    def _accept_outputs(self, run_state: RunState, outputs: list[dict[str, Any]]) -> None:
        run = run_state.run
        compat = self.config.compat
        if run.status != "requires_action" or run_state.pending_step is None:
            if compat.repeat_submit_404:
                raise APIError(404, f"No run found with id '{run.id}' awaiting tool outputs (status: {run.status}).")
            raise bad_request(f'Runs in status "{run.status}" do not accept tool outputs.')
        step = run_state.pending_step
        expected = [call.id for call in step.step_details.tool_calls]  # type: ignore[union-attr]
        given = [o.get("tool_call_id") for o in outputs]
        unknown = [g for g in given if g not in expected]
        if unknown:
            if compat.unknown_call_500:
                raise server_error(f"Internal error: no pending tool call {unknown[0]}.")
            raise bad_request(f"Invalid tool_call_id: {unknown[0]}. Expected one of {expected}.", param="tool_outputs")
        duplicated = sorted({str(g) for g in given if given.count(g) > 1})
        if duplicated:
            raise bad_request(f"Duplicate tool_call_id: {duplicated[0]}.", param="tool_outputs")
        missing = [e for e in expected if e not in given]
        if missing:
            raise bad_request(
                f"Expected tool outputs for call_ids {expected}, got {given}",
                param="tool_outputs",
            )
        by_id = {o["tool_call_id"]: o.get("output", "") for o in outputs}
        completed = []
        for call in step.step_details.tool_calls:  # type: ignore[union-attr]
            assert isinstance(call, FunctionToolCall)  # the emulator's model calls functions only
            call.function.output = by_id[call.id]
            completed.append(CompletedCall(call.function.name, call.function.arguments, by_id[call.id]))
        run_state.rounds_done.append(completed)
        run_state.pending_step = None
        self._complete_step(run_state, step, sum(count_tokens(c.arguments) for c in completed))
        run.status = "queued"
        run.required_action = None
        run_state.emit("thread.run.queued", lambda: dump(run))
        run_state.submitted.set()

    def cancel_run(self, thread_id: str, run_id: str) -> Run:
        run_state = self.get_run(thread_id, run_id)
        run = run_state.run
        if run.status in TERMINAL_STATUSES or (self.config.compat.cancel_only_in_progress and run.status != "in_progress"):
            raise bad_request(f"Cannot cancel run with status '{run.status}'.")
        if run.status == "cancelling":
            return run
        run.status = "cancelling"
        run_state.emit("thread.run.cancelling", lambda: dump(run))
        if run_state.task is not None:
            run_state.task.cancel()
        asyncio.get_running_loop().create_task(self._finish_cancel(run_state))
        return run

    async def _finish_cancel(self, run_state: RunState) -> None:
        if run_state.task is not None:
            await asyncio.gather(run_state.task, return_exceptions=True)
        run = run_state.run
        now = _now()
        self._close_open_work(run_state, "cancelled", now)
        run.cancelled_at = now
        self._finish(run_state, "cancelled")

    # ------------------------------------------------------------------ the lifecycle task

    async def _drive(self, run_state: RunState) -> None:
        run = run_state.run
        try:
            run_state.emit("thread.run.created", lambda: dump(run))
            run_state.emit("thread.run.queued", lambda: dump(run))
            while True:
                await self._wait(run_state, self.config.queue_seconds)
                run.status = "in_progress"
                if run.started_at is None:
                    run.started_at = _now()
                run_state.emit("thread.run.in_progress", lambda: dump(run))
                script = run_state.script
                turn_seconds = script.turn_seconds if script and script.turn_seconds is not None else self.config.turn_seconds
                await self._wait(run_state, turn_seconds)
                turn = self.model.next_turn(script, self._context(run_state))
                if isinstance(turn, ToolCallsTurn):
                    await self._request_tools(run_state, turn)
                    continue
                if isinstance(turn, FailTurn):
                    run.last_error = run_types.LastError(code=turn.code, message=turn.message)
                    run.failed_at = _now()
                    self._finish(run_state, "failed")
                    return
                await self._reply(run_state, turn)
                return
        except _Expired:
            self._close_open_work(run_state, "expired", _now())
            self._finish(run_state, "expired")
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug here must not leave a run in_progress forever: fail it visibly.
            log.exception("run %s crashed in the emulator", run.id)
            self._close_open_work(run_state, "failed", _now())
            run.last_error = run_types.LastError(code="server_error", message="The emulator failed while running this run; see its log.")
            run.failed_at = _now()
            self._finish(run_state, "failed")

    async def _wait(self, run_state: RunState, seconds: float) -> None:
        remaining = run_state.deadline - time.time()
        if seconds >= remaining:
            await asyncio.sleep(max(0.0, remaining))
            raise _Expired
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _context(self, run_state: RunState) -> TurnContext:
        run = run_state.run
        functions = [
            FunctionSpec(t.function.name, t.function.description, t.function.parameters)
            for t in run.tools
            if t.type == "function"
        ]
        choice = run.tool_choice
        return TurnContext(
            user_text=run_state.user_text,
            tools=functions,
            tool_choice=choice if isinstance(choice, str) or choice is None else dump(choice),
            parallel_tool_calls=run.parallel_tool_calls,
            rounds_done=run_state.rounds_done,
            prompt_tokens=run_state.prompt_tokens,
            max_prompt_tokens=run.max_prompt_tokens,
            max_completion_tokens=run.max_completion_tokens,
        )

    async def _request_tools(self, run_state: RunState, turn: ToolCallsTurn) -> None:
        run = run_state.run
        calls: list[dict[str, Any]] = [
            {"id": self.ids.new("call_"), "type": "function", "function": {"name": c.name, "arguments": c.arguments, "output": None}}
            for c in turn.calls
        ]
        step = self._new_step(run_state, {"type": "tool_calls", "tool_calls": calls})
        run_state.pending_step = step
        run_state.completion_tokens += sum(count_tokens(c.arguments) for c in turn.calls)

        def created_body() -> dict[str, Any]:
            # Stream clients build the step from deltas, so it is announced with no calls yet.
            body = step_body(step)
            body["step_details"] = {"type": "tool_calls", "tool_calls": []}
            return body

        run_state.emit("thread.run.step.created", created_body)
        run_state.emit("thread.run.step.in_progress", created_body)
        for index, call in enumerate(calls):
            delta = {"index": index, **call}
            run_state.emit(
                "thread.run.step.delta",
                lambda delta=delta: {
                    "id": step.id,
                    "object": "thread.run.step.delta",
                    "delta": {"step_details": {"type": "tool_calls", "tool_calls": [delta]}},
                },
            )
        run.status = "requires_action"
        run.required_action = run_types.RequiredAction.model_validate(
            {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {
                    "tool_calls": [
                        {"id": c["id"], "type": "function", "function": {k: c["function"][k] for k in ("name", "arguments")}}
                        for c in calls
                    ]
                },
            }
        )
        run_state.emit("thread.run.requires_action", lambda: dump(run))
        run_state.submitted.clear()
        if math.isinf(run_state.deadline):
            await run_state.submitted.wait()  # a run that never expires waits as long as it takes
            return
        remaining = run_state.deadline - time.time()
        try:
            await asyncio.wait_for(run_state.submitted.wait(), timeout=max(0.0, remaining))
        except TimeoutError:
            raise _Expired from None

    async def _reply(self, run_state: RunState, turn: ReplyTurn) -> None:
        run = run_state.run
        message = self._add_message(
            run_state.thread, {"role": "assistant", "content": [{"type": "text", "text": ""}]}, run_id=run.id, assistant_id=run.assistant_id
        )
        message.status = "in_progress"
        message.content = []
        run_state.open_message = message
        step = self._new_step(run_state, {"type": "message_creation", "message_creation": {"message_id": message.id}})
        run_state.emit("thread.run.step.created", lambda: step_body(step))
        run_state.emit("thread.run.step.in_progress", lambda: step_body(step))
        run_state.emit("thread.message.created", lambda: dump(message))
        run_state.emit("thread.message.in_progress", lambda: dump(message))

        script = run_state.script
        chunk = (script.chunk_chars if script and script.chunk_chars else None) or self.config.chunk_chars
        rate = (script.chars_per_second if script and script.chars_per_second else None) or self.config.chars_per_second
        text = turn.text
        if text:
            block = TextContentBlock.model_validate({"type": "text", "text": {"value": "", "annotations": []}})
            message.content = [block]
            for start in range(0, len(text), chunk):
                piece = text[start : start + chunk]
                if rate and start:
                    await self._wait(run_state, len(piece) / rate)
                block.text.value += piece
                run_state.emit(
                    "thread.message.delta",
                    lambda piece=piece: {
                        "id": message.id,
                        "object": "thread.message.delta",
                        "delta": {"content": [{"index": 0, "type": "text", "text": {"value": piece, "annotations": []}}]},
                    },
                )
        run_state.completion_tokens += count_tokens(text)
        now = _now()
        if turn.incomplete_reason is not None:
            message.status = "incomplete"
            message.incomplete_at = now
            # Messages say why they stopped in their own terms: a token limit is `max_tokens`.
            message.incomplete_details = message_types.IncompleteDetails(reason="max_tokens")
            run_state.emit("thread.message.incomplete", lambda: dump(message))
        else:
            message.status = "completed"
            message.completed_at = now
            run_state.emit("thread.message.completed", lambda: dump(message))
        run_state.open_message = None
        self._complete_step(run_state, step, count_tokens(text))
        # An incomplete run has finished too: OpenAI set its completed_at.
        run.completed_at = now
        if turn.incomplete_reason is not None:
            run.incomplete_details = run_types.IncompleteDetails(reason=turn.incomplete_reason)
            self._finish(run_state, "incomplete")
        else:
            self._finish(run_state, "completed")

    def _new_step(self, run_state: RunState, details: dict[str, Any]) -> RunStep:
        run = run_state.run
        step = RunStep.model_validate(
            {
                "id": self.ids.new("step_"),
                "object": "thread.run.step",
                "created_at": _now(),
                "assistant_id": run.assistant_id,
                "thread_id": run.thread_id,
                "run_id": run.id,
                "type": details["type"],
                "status": "in_progress",
                "step_details": details,
                "last_error": None,
                # Sent as `expires_at` (step_body): the run's deadline while the step is open.
                "expired_at": run.expires_at,
                "cancelled_at": None,
                "failed_at": None,
                "completed_at": None,
                "metadata": {},
                "usage": None,
            }
        )
        run_state.steps.append(step)
        run_state.open_step = step
        return step

    def _complete_step(self, run_state: RunState, step: RunStep, completion_tokens: int) -> None:
        step.status = "completed"
        step.completed_at = _now()
        step.expired_at = None
        step.usage = step_types.Usage(**_usage(run_state.prompt_tokens, completion_tokens))
        run_state.open_step = None
        run_state.emit("thread.run.step.completed", lambda: step_body(step))

    def _close_open_work(self, run_state: RunState, status: str, now: int) -> None:
        """A run that stops early (cancelled, expired) closes its open step and message."""
        step = run_state.open_step
        if step is not None and step.status == "in_progress":
            step.status = status  # type: ignore[assignment]
            step.expired_at = None
            setattr(step, {"cancelled": "cancelled_at", "expired": "expired_at", "failed": "failed_at"}[status], now)
            run_state.emit(f"thread.run.step.{status}", lambda: step_body(step))
        run_state.open_step = None
        run_state.pending_step = None
        message = run_state.open_message
        if message is not None:
            message.status = "incomplete"
            message.incomplete_at = now
            message.incomplete_details = message_types.IncompleteDetails(reason=f"run_{status}")
            run_state.emit("thread.message.incomplete", lambda: dump(message))
        run_state.open_message = None

    def _finish(self, run_state: RunState, status: str) -> None:
        run = run_state.run
        run.status = status  # type: ignore[assignment]
        run.required_action = None
        if status != "expired":
            run.expires_at = None
        # Every model turn reads the whole prompt again, as billing did.
        turns = 1 + len(run_state.rounds_done)
        run.usage = run_types.Usage(**_usage(run_state.prompt_tokens * turns, run_state.completion_tokens))
        if run_state.thread.active_run is run_state:
            run_state.thread.active_run = None
        self.stats.run(run.id, f"ended_{status}")
        run_state.emit(f"thread.run.{status}", lambda: dump(run))


class _Expired(Exception):
    """The run's `expires_at` passed while it waited."""


def _now() -> int:
    return int(time.time())


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _content_blocks(content: str | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    blocks = []
    for part in content:
        if part["type"] == "text":
            blocks.append({"type": "text", "text": {"value": part["text"], "annotations": []}})
        elif part["type"] == "image_file":
            blocks.append({"type": "image_file", "image_file": {"detail": "auto", **part["image_file"]}})
        else:
            blocks.append({"type": "image_url", "image_url": {"detail": "auto", **part["image_url"]}})
    return blocks


def _text_of(message: Message) -> str:
    return "\n".join(block.text.value for block in message.content if block.type == "text")


def _text_of_params(params: dict[str, Any]) -> str:
    content = params["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def _check_message_params(params: dict[str, Any], where: str) -> None:
    prefix = f"{where}." if where else ""
    content = params["content"]
    if isinstance(content, str) and not content:
        raise bad_request(
            f"Invalid '{prefix}content': string too short. Expected a string with minimum length 1, but got an empty string instead.",
            param=f"{prefix}content",
            code="string_too_short",
        )
    if not isinstance(content, str):
        for i, part in enumerate(content):
            if part.get("type") == "text" and not part.get("text"):
                raise bad_request(
                    f"Invalid '{prefix}content[{i}].text': string too short. Expected a string with minimum length 1, but got an empty string instead.",
                    param=f"{prefix}content[{i}].text",
                    code="string_too_short",
                )
    if not isinstance(content, str) and not content:
        raise bad_request(
            f"Invalid '{prefix}content': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param=f"{prefix}content",
            code="empty_array",
        )


_FUNCTION_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _file_search_defaults(tool: dict[str, Any]) -> dict[str, Any]:
    """OpenAI echoed a file_search tool with the ranking options it applied."""
    if tool.get("type") != "file_search":
        return tool
    options = dict(tool.get("file_search") or {})
    options.setdefault("ranking_options", {"ranker": "default_2024_08_21", "score_threshold": 0.0})
    return {**tool, "file_search": options}


def _check_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(tools) > 128:
        raise bad_request(
            f"Invalid 'tools': array too long. Expected an array with maximum length 128, but got an array with length {len(tools)} instead.",
            param="tools",
            code="array_above_max_length",
        )
    tools = [_file_search_defaults(tool) for tool in tools]
    for i, tool in enumerate(tools):
        if tool["type"] != "function":
            continue
        name = tool["function"]["name"]
        if not (1 <= len(name) <= 64) or not set(name) <= _FUNCTION_NAME_CHARS:
            raise bad_request(
                f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected a string that "
                f"matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$', but got {name!r} instead.",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
    return tools
