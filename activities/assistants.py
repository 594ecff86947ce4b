"""The Assistants API backend: threads, messages and runs over ``AsyncOpenAI``.

Idempotency is built here, because the API has none: every message and run the worker
creates carries ``metadata[TAG_KEY]``; before creating one, the backend lists the thread's
newest objects and adopts one that carries its tag. A submit the API refuses because the run
already moved past those tool calls counts as done, confirmed from the run itself.

Compatible servers are not OpenAI (DESIGN.md, "Servers differ"), so what the worker does is
decided from the run's own state, never from one error code or event name:

- a refused submit (any 4xx, or a 5xx) reads the run: if it no longer waits for the round's
  calls, the outputs landed (or the run ended) and the submit counts as done;
- a submit stream that ends with no fresh run event (a server that replays a stale ``done``)
  polls the run it knows; a run event or read that still shows the round just answered is
  stale, not a new round;
- a cancel the server refuses while the run waits for tool outputs (servers that cancel only
  ``in_progress`` runs) answers the pending calls with error outputs and cancels again, all
  within ``CANCEL_BOUND_SECONDS``;
- reads follow ``openai-poll-after-ms`` exactly; without it they come at a fifth of the time
  the turn has taken (``PollPacer``), instead of a flat second from the start.

Why one module of about 460 lines: one class implements the model-API seam for the
Assistants API, and its idempotency (the tagged lookups above) runs through create, stream
and poll alike; split, each half would need the other's lookups.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI
from openai.types.beta import Assistant
from openai.types.beta.threads import Run
from temporalio.exceptions import ApplicationError

from durable_assistants.activities.backend import PollPacer, TurnIO
from durable_assistants.activities.backend import api_call as _api
from durable_assistants.activities.errors import to_temporal_error
from durable_assistants.tools import ToolRegistry
from durable_assistants.workflows.models import TERMINAL_STATUSES, RunRequest, RunSnapshot, ToolCall, Usage

# The SDK marks every Assistants method deprecated (OpenAI's hosted API is gone); speaking
# that protocol to compatible servers is this backend's whole job, so the warning is noise.
warnings.filterwarnings("ignore", message="(deprecated|The Assistants API is deprecated)", category=DeprecationWarning)

log = structlog.get_logger("assistants")

TAG_KEY = "durable_assistants_key"
AGENT_TAG_KEY = "durable_assistants_agent"
AGENT_LOOKBACK = 100
RUN_LOOKBACK = 20
MESSAGE_LOOKBACK = 100
# How long a run may go on showing the round whose outputs were just accepted before the
# worker decides they did not land (the retry submits them again; a repeat is recognised).
STALE_ROUND_SECONDS = 5.0
# How long `cancel` works at stopping a run: refused cancels retried, pending calls answered.
# Below the cancel activity's start-to-close timeout (2 min), so it returns instead of timing out.
CANCEL_BOUND_SECONDS = 60.0
STOPPED_REASON = "the run was stopped"


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
        found: Assistant | None = next((a for a in page.data if a.metadata and a.metadata.get(AGENT_TAG_KEY) == tag), None)
        if found is None:
            created: Assistant = await _api(  # the agent's assistant, made once and found again by its tag
                self.client.beta.assistants.create(
                    model=request.model,  # type: ignore[arg-type]
                    instructions=request.instructions,
                    tools=tools,  # type: ignore[arg-type]
                    name=f"durable-assistants {request.model} {tag[:8]}",
                    metadata={AGENT_TAG_KEY: tag},
                ),
                f"create an assistant for model {request.model}",
            )
            log.info("created an assistant for an inline agent", assistant_id=created.id, model=request.model)
            found = created
        assert found is not None
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
            io.remember_for_retry(thread_id=thread_id)
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
        assert run is not None  # found, or created just above
        io.under_way(RunSnapshot(run_id=run.id, thread_id=thread_id, status=run.status))
        io.progress(run_id=run.id, status=run.status)
        return await self._poll(run, io)

    async def submit_and_wait(
        self, request: RunRequest | None, snapshot: RunSnapshot, outputs: list[dict[str, str]], mode: str, io: TurnIO
    ) -> RunSnapshot:
        assert snapshot.thread_id is not None
        run_id = _run_id(snapshot)
        io.under_way(snapshot)
        runs = self.client.beta.threads.runs
        what = f"submit {len(outputs)} tool outputs to {run_id}"
        answered = frozenset(o["tool_call_id"] for o in outputs)
        try:
            if mode == "stream":
                stream = await runs.submit_tool_outputs(
                    run_id, thread_id=snapshot.thread_id, tool_outputs=outputs, stream=True  # type: ignore[arg-type]
                )
                return await self._follow(stream, snapshot.thread_id, io, known=snapshot, answered=answered)
            run = await runs.submit_tool_outputs(run_id, thread_id=snapshot.thread_id, tool_outputs=outputs)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            # Refused, whatever the code: OpenAI answers a repeat with 400, other servers with
            # 404, or 500 for call IDs of a round that is over. The run says what happened.
            try:
                run = await self._retrieve(snapshot.thread_id, run_id)
            except ApplicationError as read_error:
                if read_error.non_retryable:
                    raise to_temporal_error(exc, what) from None
                raise
            if not _moved_past(run, answered):
                raise to_temporal_error(exc, what) from None
            # The run no longer waits for these calls: an earlier attempt's submit landed
            # (or the run ended). Either way there is nothing left to submit.
            log.info("the submit was refused, but the run had moved past the round", run_id=run.id,
                     status=run.status, refused_with=exc.status_code)
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, what) from None
        return await self._poll(run, io, answered=answered)

    async def wait(self, snapshot: RunSnapshot, io: TurnIO) -> RunSnapshot:
        assert snapshot.thread_id is not None
        return await self._poll(await self._retrieve(snapshot.thread_id, _run_id(snapshot)), io)

    async def cancel(self, snapshot: RunSnapshot, io: TurnIO, reason: str | None = None) -> RunSnapshot:
        """Stop the run and wait until it is terminal, within ``CANCEL_BOUND_SECONDS``.

        A cancel that does not go through is judged by the run's state: ended is done;
        ``cancelling`` is waited for; a run that waits for tool outputs and was refused (a
        server that cancels only ``in_progress`` runs) gets an error output for each pending
        call (once per call), then the cancel again; otherwise the cancel is asked again after
        a pause. A run still not stopped at the bound fails the activity, non-retryable, with a
        message that names the bound and the status the run was left in."""
        thread_id, run_id = snapshot.thread_id, _run_id(snapshot)
        assert thread_id is not None
        deadline = time.monotonic() + CANCEL_BOUND_SECONDS
        run, outcome = await self._request_cancel(thread_id, run_id)
        pacer, reads = PollPacer(), 0
        answered: set[str] = set()
        while run.status not in TERMINAL_STATUSES:
            if time.monotonic() >= deadline:
                log.warning("the API run did not stop in time", run_id=run_id, status=run.status, bound_seconds=CANCEL_BOUND_SECONDS)
                raise ApplicationError(
                    f"run {run_id} did not stop within {CANCEL_BOUND_SECONDS:g} s of cancelling it; it is {run.status}",
                    {"run_id": run_id, "thread_id": thread_id, "status": run.status},
                    type="ModelApiRunNotStopped",
                    non_retryable=True,
                )
            pending = _waiting_for(run) - answered
            if outcome == "refused" and pending:
                await self._answer_stopped(run, pending, reason or STOPPED_REASON)
                answered |= pending
                run, outcome = await self._request_cancel(thread_id, run_id)
                pacer.restart()
                continue
            io.progress(run_id=run_id, status=run.status, polls=reads, cancel=outcome, answered=len(answered))
            await asyncio.sleep(pacer.delay())
            run, hint = await self._read(run)
            reads += 1
            pacer.heard(hint)
            if outcome != "accepted" and run.status in ("queued", "in_progress", "requires_action"):
                run, outcome = await self._request_cancel(thread_id, run_id)
        return await self._snapshot(run)

    async def _request_cancel(self, thread_id: str, run_id: str) -> tuple[Run, str]:
        """Ask the API to cancel. Returns the run and the outcome: ``accepted``; ``refused``
        (a 4xx, whatever the code: servers differ) or ``failed`` (408, 429, 5xx), with the run
        as it is now."""
        try:
            return await self.client.beta.threads.runs.cancel(run_id, thread_id=thread_id), "accepted"
        except openai.APIStatusError as exc:
            status = exc.status_code
            run = await self._retrieve(thread_id, run_id)
            if run.status == "cancelling":
                return run, "accepted"  # by an earlier request
            if run.status not in TERMINAL_STATUSES:
                log.info("the API did not cancel the run", run_id=run_id, status=run.status, answered_with=status)
            return run, "failed" if status in (408, 429) or status >= 500 else "refused"
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, f"cancel run {run_id}") from None

    async def _answer_stopped(self, run: Run, calls: frozenset[str], reason: str) -> None:
        """Give each of ``calls`` (those the run waits for) an error output, so that a server
        that will not cancel a run waiting for tool outputs lets it move on (and be cancelled,
        or end)."""
        outputs = [{"tool_call_id": call_id, "output": f"Error: the run stopped before this call was answered: {reason}"} for call_id in sorted(calls)]
        try:
            await self.client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=run.thread_id, tool_outputs=outputs)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            # E.g. the run moved on meanwhile; the caller reads its state next.
            log.info("answering the stopped run's calls was refused", run_id=run.id, refused_with=exc.status_code)
            return
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, f"answer {len(outputs)} calls of the stopped run {run.id}") from None
        log.info("answered the stopped run's calls so that it can be cancelled", run_id=run.id, calls=len(outputs))

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
                self.client.beta.threads.messages.create(thread_id, **_message_params(message, tag)),
                f"add message {i} to {thread_id}",
            )

    async def _find_run(self, thread_id: str, key: str) -> Run | None:
        page = await _api(
            self.client.beta.threads.runs.list(thread_id, limit=RUN_LOOKBACK, order="desc"), f"list runs of {thread_id}"
        )
        return next((r for r in page.data if r.metadata and r.metadata.get(TAG_KEY) == key), None)

    async def _retrieve(self, thread_id: str, run_id: str) -> Run:
        return await _api(self.client.beta.threads.runs.retrieve(run_id, thread_id=thread_id), f"read run {run_id}")

    async def _poll(self, run: Run, io: TurnIO, *, answered: frozenset[str] = frozenset()) -> RunSnapshot:
        """Re-read the run until it needs action or ends, at the pace the server asks for
        (``openai-poll-after-ms``; without it, ``PollPacer``'s). One activity, many reads.

        ``answered``: the calls whose outputs were just submitted. A run that still shows
        exactly those is not at a new round (a stale read or a server that applies submits
        late); it is read again, and after ``STALE_ROUND_SECONDS`` the attempt fails so that
        its retry submits again."""
        polls = 0
        pacer = PollPacer()
        stale_since: float | None = None
        while run.status not in TERMINAL_STATUSES:
            if run.status == "requires_action":
                if not answered or _waiting_for(run) != answered:
                    break
                now = time.monotonic()
                stale_since = now if stale_since is None else stale_since
                if now - stale_since >= STALE_ROUND_SECONDS:
                    raise ApplicationError(
                        f"run {run.id} still waits for the {len(answered)} tool outputs submitted {STALE_ROUND_SECONDS:g} s ago; "
                        "submitting them again",
                        type="ModelApiSubmitNotApplied",
                    )
            io.progress(run_id=run.id, status=run.status, polls=polls)
            await asyncio.sleep(pacer.delay())
            run, hint = await self._read(run)
            polls += 1
            pacer.heard(hint)
        return await self._snapshot(run)

    async def _read(self, run: Run) -> tuple[Run, str | None]:
        """The run as it is now, and the server's ``openai-poll-after-ms`` if it sent one."""
        try:
            raw = await self.client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id)
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, f"read run {run.id}") from None
        return raw.parse(), raw.headers.get("openai-poll-after-ms")

    async def _follow(
        self,
        stream: Any,
        thread_id: str,
        io: TurnIO,
        *,
        known: RunSnapshot | None = None,
        answered: frozenset[str] = frozenset(),
    ) -> RunSnapshot:
        """Read a run's SSE stream until the run needs action or ends. The run object's status
        decides, not the event name; anything the server sends after that is not read.

        After a submit (``known``: the run; ``answered``: the calls just answered), a run event
        that still waits for exactly those calls is stale (a replayed event), and a stream that
        ends with no fresh run event is finished by polling the known run."""
        run: Run | None = None
        try:
            async with stream:
                async for name, data in _run_events(stream):
                    if isinstance(data, Run):
                        if answered and data.status == "requires_action" and _waiting_for(data) == answered:
                            log.info("ignoring a stale run event for the round just answered", run_id=data.id, sse_event=name)
                            continue
                        if run is None:
                            io.under_way(RunSnapshot(run_id=data.id, thread_id=thread_id, status=data.status))
                        run = data
                        io.progress(run_id=run.id, status=run.status, event=name)
                        if run.status == "requires_action" or run.status in TERMINAL_STATUSES:
                            break
                    else:
                        io.on_text(data)
        except openai.APIConnectionError as exc:  # the SDK wraps the HTTP library's errors
            # A dropped connection. An Assistants run stream cannot be resumed, but once the
            # run is known it can be polled to the same point, in this attempt.
            if run is None and known is None:
                raise ApplicationError(
                    f"read the run stream on {thread_id}: {type(exc).__name__}: {exc}", type="ModelApiConnection"
                ) from None
            where = run.id if run is not None else known.run_id  # type: ignore[union-attr]
            log.info("run stream broke; polling the run instead", run_id=where, error=type(exc).__name__)
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, f"read the run stream on {thread_id}") from None
        if run is None:
            if known is None:
                raise ApplicationError(f"the run stream on {thread_id} ended before any run event", type="ModelApiStream")
            # The submit was accepted (the stream began) but the server sent no fresh run
            # event, e.g. only a stale `done`: the run it was sent to says where it is.
            log.info("the submit stream ended with no run event; polling the run", run_id=known.run_id)
            run = await self._retrieve(thread_id, _run_id(known))
        # A stream that ended early (or broke) is finished by polling.
        return await self._poll(run, io, answered=answered)

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
            model=run.model or None,
            usage=Usage(**run.usage.model_dump()) if run.usage else None,
            last_error=run.last_error.model_dump() if run.last_error else None,
            incomplete_details=run.incomplete_details.model_dump() if run.incomplete_details else None,
            final_text=final_text,
            message_ids=message_ids,
        )


def _waiting_for(run: Run) -> frozenset[str]:
    """The IDs of the calls a run waits for (none unless it is at ``requires_action``)."""
    if run.status != "requires_action" or run.required_action is None:
        return frozenset()
    return frozenset(c.id for c in run.required_action.submit_tool_outputs.tool_calls or [])


def _moved_past(run: Run, answered: frozenset[str]) -> bool:
    """Whether the run no longer waits for the calls of the round ``answered`` answers."""
    return run.status != "requires_action" or _waiting_for(run) != answered


def _message_params(message: Any, tag: str) -> dict[str, Any]:
    params = message.model_dump(exclude_none=True)
    params["metadata"] = {**(message.metadata or {}), TAG_KEY: tag}
    return params


async def _run_events(stream: Any) -> AsyncIterator[tuple[str, Run | str]]:
    """What a run's SSE stream says that a turn needs: ``(event, Run)`` for each run event and
    ``(event, text)`` for each text delta of a message. The SDK's own iteration builds a typed
    object of every event (run steps, message snapshots, ...) through pydantic, a quarter of
    the worker's CPU in a streamed run; here the other events are skipped unparsed, a delta's
    text is read from its JSON, and a run is built as the SDK builds it (``Run.construct``).
    Errors are the SDK's: a broken connection is ``APIConnectionError`` (its ``_iter_events``),
    an ``error`` event ``APIError``. Where the SDK has no ``_iter_events`` (a version this
    was not written for), its own typed iteration is used instead."""
    events = getattr(stream, "_iter_events", None)
    if events is None:
        async for event in stream:
            if event.event == "thread.message.delta":
                for part in event.data.delta.content or []:
                    if part.type == "text" and part.text is not None and part.text.value:
                        yield event.event, part.text.value
            elif isinstance(event.data, Run):
                yield event.event, event.data
        return
    async for sse in events():
        name = sse.event or ""
        if sse.data.startswith("[DONE]"):
            return
        if name == "thread.message.delta":
            for part in (sse.json().get("delta") or {}).get("content") or []:
                text = (part.get("text") or {}).get("value") if part.get("type") == "text" else None
                if text:
                    yield name, text
        elif name.startswith("thread.run.") and not name.startswith("thread.run.step."):
            yield name, Run.construct(**sse.json())
        elif name == "error":
            data = sse.json()
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(message or "An error occurred during streaming", request=stream.response.request, body=error)


def _run_id(snapshot: RunSnapshot) -> str:
    """An Assistants snapshot always names its run (only a Responses turn can lose its ID)."""
    if snapshot.run_id is None:
        raise ApplicationError(f"an Assistants snapshot without a run ID reached the Assistants backend: {snapshot!r}",
                               type="ModelApiBadSnapshot", non_retryable=True)
    return snapshot.run_id
