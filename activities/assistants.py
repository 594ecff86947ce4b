"""The Assistants API backend: threads, messages and runs over ``AsyncOpenAI``.

Idempotency is built here, because the API has none: every message and run the worker
creates carries ``metadata[TAG_KEY]``; before creating one, the backend lists the thread's
newest objects and adopts one that carries its tag. A submit the API refuses because the run
already moved past those tool calls counts as done, confirmed from the run itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import warnings
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI
from openai.types.beta.threads import Run
from temporalio.exceptions import ApplicationError

from tools import ToolRegistry
from workflows.models import TERMINAL_STATUSES, RunRequest, RunSnapshot, ToolCall, Usage

from .backend import POLL_FLOOR_SECONDS, TurnIO, api_call as _api, poll_delay
from .errors import to_temporal_error

# The SDK marks every Assistants method deprecated (OpenAI's hosted API is gone); speaking
# that protocol to compatible servers is this backend's whole job, so the warning is noise.
warnings.filterwarnings("ignore", message="(deprecated|The Assistants API is deprecated)", category=DeprecationWarning)

log = structlog.get_logger("assistants")

TAG_KEY = "durable_assistants_key"
AGENT_TAG_KEY = "durable_assistants_agent"
AGENT_LOOKBACK = 100
RUN_LOOKBACK = 20
MESSAGE_LOOKBACK = 100


class AssistantsBackend:
    name = "assistants"

    def __init__(self, client: AsyncOpenAI, tools: ToolRegistry | None = None) -> None:
        self.client = client
        self.tools = tools
        self._agents: dict[str, str] = {}  # agent tag -> assistant ID, found or created once

    async def check_request(self, request: RunRequest) -> None:
        assistant_id = request.assistant_id
        if assistant_id is None:
            return  # an inline agent: its assistant is found or created when the run starts
        await _api(self.client.beta.assistants.retrieve(assistant_id), f"look up assistant {assistant_id}")

    async def assistant_for(self, request: RunRequest) -> str:
        """The request's assistant, or for an inline agent (model, instructions, tools) the
        assistant that carries it: found by its tag among the server's newest assistants, else
        created, then remembered. The run repeats these settings as overrides anyway; the
        assistant only has to exist (and hold the tools when the request gives none)."""
        if request.assistant_id is not None:
            return request.assistant_id
        tools = request.tools if request.tools is not None else (self.tools.schemas() if self.tools else [])
        agent = {"model": request.model, "instructions": request.instructions, "tools": tools}
        tag = hashlib.sha256(json.dumps(agent, sort_keys=True).encode()).hexdigest()[:32]
        if tag in self._agents:
            return self._agents[tag]
        page = await _api(self.client.beta.assistants.list(limit=AGENT_LOOKBACK, order="desc"), "list assistants")
        found = next((a for a in page.data if a.metadata and a.metadata.get(AGENT_TAG_KEY) == tag), None)
        if found is None:
            found = await _api(
                self.client.beta.assistants.create(
                    model=request.model,  # type: ignore[arg-type]
                    instructions=request.instructions,
                    tools=tools,  # type: ignore[arg-type]
                    name=f"durable-assistants {request.model} {tag[:8]}",
                    metadata={AGENT_TAG_KEY: tag},
                ),
                f"create an assistant for model {request.model}",
            )
            log.info("created an assistant for an inline agent", assistant_id=found.id, model=request.model)
        self._agents[tag] = found.id
        return found.id

    async def create_conversation(self, request: RunRequest, key: str) -> str:
        # A retry after a lost response makes a second thread; the first is an orphan with
        # no run, which costs nothing. Messages go in with the thread, so they are never
        # duplicated on the thread the run uses.
        thread = await _api(
            self.client.beta.threads.create(
                messages=[_message_params(m, f"{key}#m{i}") for i, m in enumerate(request.messages)],  # type: ignore[misc]
                metadata={**(request.thread_metadata or {}), TAG_KEY: key},
            ),
            "create thread",
        )
        return thread.id

    async def start(self, request: RunRequest, thread_id: str | None, key: str, add_messages: bool, io: TurnIO) -> RunSnapshot:
        if thread_id is None:
            # A request that named no API and ran here by the worker's default: the workflow
            # made no thread, so this turn does, remembering it for a retry.
            thread_id = io.recalled.get("thread_id") or await self.create_conversation(request, key)
            io.record(thread_id=thread_id)
            add_messages = False  # they went in with the thread
        if add_messages and request.messages:
            await self._add_messages(request, thread_id, key)
        run = await self._find_run(thread_id, key)
        if run is None:
            params: dict[str, Any] = {
                "thread_id": thread_id,
                "assistant_id": await self.assistant_for(request),
                "metadata": {**(request.metadata or {}), TAG_KEY: key},
                **request.run_create_params(),
            }
            if request.mode == "stream":
                stream = await _api(self.client.beta.threads.runs.create(**params, stream=True), f"create run on {thread_id}")
                return await self._follow(stream, thread_id, io)
            run = await _api(self.client.beta.threads.runs.create(**params), f"create run on {thread_id}")
        io.running(RunSnapshot(run_id=run.id, thread_id=thread_id, status=run.status))
        io.beat(run_id=run.id, status=run.status)
        return await self._poll(run, io)

    async def submit_and_wait(
        self, request: RunRequest | None, snapshot: RunSnapshot, outputs: list[dict[str, str]], mode: str, io: TurnIO
    ) -> RunSnapshot:
        assert snapshot.thread_id is not None
        io.running(snapshot)
        runs = self.client.beta.threads.runs
        what = f"submit {len(outputs)} tool outputs to {snapshot.run_id}"
        try:
            if mode == "stream":
                stream = await runs.submit_tool_outputs(
                    snapshot.run_id, thread_id=snapshot.thread_id, tool_outputs=outputs, stream=True  # type: ignore[arg-type]
                )
                return await self._follow(stream, snapshot.thread_id, io)
            run = await runs.submit_tool_outputs(snapshot.run_id, thread_id=snapshot.thread_id, tool_outputs=outputs)  # type: ignore[arg-type]
        except openai.BadRequestError as exc:
            run = await self._retrieve(snapshot.thread_id, snapshot.run_id)
            if not _moved_past(run, snapshot):
                raise to_temporal_error(exc, what) from None
            # The run no longer waits for these calls: an earlier attempt's submit landed
            # (or the run ended). Either way there is nothing left to submit.
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, what) from None
        return await self._poll(run, io)

    async def wait(self, snapshot: RunSnapshot, io: TurnIO) -> RunSnapshot:
        assert snapshot.thread_id is not None
        return await self._poll(await self._retrieve(snapshot.thread_id, snapshot.run_id), io)

    async def cancel(self, snapshot: RunSnapshot, io: TurnIO, reason: str | None = None) -> RunSnapshot:
        thread_id, run_id = snapshot.thread_id, snapshot.run_id
        assert thread_id is not None
        try:
            run = await self.client.beta.threads.runs.cancel(run_id, thread_id=thread_id)
        except openai.BadRequestError:
            run = await self._retrieve(thread_id, run_id)  # already terminal
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, f"cancel run {run_id}") from None
        return await self._poll(run, io, until_terminal=True)

    # ------------------------------------------------------------------ internals

    async def _add_messages(self, request: RunRequest, thread_id: str, key: str) -> None:
        page = await _api(
            self.client.beta.threads.messages.list(thread_id, limit=MESSAGE_LOOKBACK, order="desc"),
            f"list messages of {thread_id}",
        )
        present = {m.metadata.get(TAG_KEY) for m in page.data if m.metadata}
        for i, message in enumerate(request.messages):
            tag = f"{key}#m{i}"
            if tag in present:
                continue
            await _api(
                self.client.beta.threads.messages.create(thread_id, **_message_params(message, tag)),  # type: ignore[arg-type]
                f"add message {i} to {thread_id}",
            )

    async def _find_run(self, thread_id: str, key: str) -> Run | None:
        page = await _api(
            self.client.beta.threads.runs.list(thread_id, limit=RUN_LOOKBACK, order="desc"), f"list runs of {thread_id}"
        )
        return next((r for r in page.data if r.metadata and r.metadata.get(TAG_KEY) == key), None)

    async def _retrieve(self, thread_id: str, run_id: str) -> Run:
        return await _api(self.client.beta.threads.runs.retrieve(run_id, thread_id=thread_id), f"read run {run_id}")

    async def _poll(self, run: Run, io: TurnIO, *, until_terminal: bool = False) -> RunSnapshot:
        """Re-read the run until it needs action or ends, at the pace the server asks for
        (``openai-poll-after-ms``), within a floor and a cap. One activity, many reads."""
        polls = 0
        delay = POLL_FLOOR_SECONDS
        while not (run.status in TERMINAL_STATUSES or (run.status == "requires_action" and not until_terminal)):
            io.beat(run_id=run.id, status=run.status, polls=polls)
            await asyncio.sleep(delay)
            try:
                raw = await self.client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id)
            except openai.OpenAIError as exc:
                raise to_temporal_error(exc, f"read run {run.id}") from None
            run = raw.parse()
            polls += 1
            delay = poll_delay(raw.headers.get("openai-poll-after-ms"))
        return await self._snapshot(run)

    async def _follow(self, stream: Any, thread_id: str, io: TurnIO) -> RunSnapshot:
        """Read a run's SSE stream until the run needs action or ends. The run object's status
        decides, not the event name; anything the server sends after that is not read."""
        run: Run | None = None
        try:
            async with stream:
                async for event in stream:
                    if event.event == "thread.message.delta":
                        for part in event.data.delta.content or []:
                            if part.type == "text" and part.text is not None and part.text.value:
                                io.on_text(part.text.value)
                    elif isinstance(event.data, Run):
                        if run is None:
                            io.running(RunSnapshot(run_id=event.data.id, thread_id=thread_id, status=event.data.status))
                        run = event.data
                        io.beat(run_id=run.id, status=run.status, event=event.event)
                        if run.status == "requires_action" or run.status in TERMINAL_STATUSES:
                            break
        except openai.APIConnectionError as exc:  # the SDK wraps the HTTP library's errors
            # A dropped connection. An Assistants run stream cannot be resumed, but once the
            # run is known it can be polled to the same point, in this attempt.
            if run is None:
                raise ApplicationError(
                    f"read the run stream on {thread_id}: {type(exc).__name__}: {exc}", type="ModelApiConnection"
                ) from None
            log.info("run stream broke; polling the run instead", run_id=run.id, error=type(exc).__name__)
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, f"read the run stream on {thread_id}") from None
        if run is None:
            raise ApplicationError(f"the run stream on {thread_id} ended before any run event", type="ModelApiStream")
        # A stream that ended early (or broke) is finished by polling.
        return await self._poll(run, io)

    async def _snapshot(self, run: Run) -> RunSnapshot:
        tool_calls: list[ToolCall] = []
        if run.status == "requires_action" and run.required_action is not None:
            tool_calls = [
                ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                for c in run.required_action.submit_tool_outputs.tool_calls
            ]
        final_text, message_ids = None, []
        if run.status in ("completed", "incomplete"):
            page = await _api(
                self.client.beta.threads.messages.list(run.thread_id, run_id=run.id, order="asc", limit=100),
                f"read the messages of {run.id}",
            )
            replies = [m for m in page.data if m.role == "assistant"]
            message_ids = [m.id for m in replies]
            final_text = "\n\n".join(
                block.text.value for m in replies for block in m.content if block.type == "text"
            )
        return RunSnapshot(
            run_id=run.id,
            thread_id=run.thread_id,
            status=run.status,
            tool_calls=tool_calls,
            expires_at=run.expires_at,
            usage=Usage(**run.usage.model_dump()) if run.usage else None,
            last_error=run.last_error.model_dump() if run.last_error else None,
            incomplete_details=run.incomplete_details.model_dump() if run.incomplete_details else None,
            final_text=final_text,
            message_ids=message_ids,
        )


def _moved_past(run: Run, snapshot: RunSnapshot) -> bool:
    if run.status != "requires_action" or run.required_action is None:
        return True
    waiting_for = {c.id for c in run.required_action.submit_tool_outputs.tool_calls}
    return waiting_for != {c.id for c in snapshot.tool_calls}


def _message_params(message: Any, tag: str) -> dict[str, Any]:
    params = message.model_dump(exclude_none=True)
    params["metadata"] = {**(message.metadata or {}), TAG_KEY: tag}
    return params
