"""The Responses API backend: a turn is one background response, over ``AsyncOpenAI``.

A run is a sequence of responses. The first turn sends the request's messages; when a response
completes with ``function_call`` output items, the round's tools run and the next turn sends
one ``function_call_output`` item per call, appended to the run's conversation (the request's,
or a new one the run creates: ``responses_state="conversation"``, the default) or chained by
``previous_response_id`` (``responses_state="chain"``, or continuing a given response). Every response is created with ``background: true`` and
``store: true`` and followed by polling ``responses.retrieve`` or over its event stream, which
is resumed with ``starting_after`` when the connection drops.

Idempotency, with no way to list responses (see README, "Idempotency on the Responses API"):

1. **The response ID is recorded the moment the create returns.** The create call's reply (or
   the stream's first event) gives the ID; it goes into the activity's heartbeat details at
   once. A retried attempt of the same activity reads them back and adopts that response, and
   its own heartbeats carry the ID from the first (``TurnIO`` keeps what an earlier attempt
   recorded), so a retry killed in turn leaves it for the next.
2. **Conversation items are checked before appending.** Before the first create, the turn
   records the conversation's newest item (its *head*). A retry whose create reply was lost
   looks at the items after that head: if this turn's input items are there, the earlier
   create took effect. The retry then adopts the outcome from the conversation's items, or,
   if that response ended without output, continues the conversation without sending the
   items again. Function-call outputs are matched exactly by ``call_id`` even without a head.
   A retry that has to wait for the conversation's lock looks again after each wait: the
   response holding it may be the earlier attempt's.
3. **Not guaranteed:** a response *chain* (no conversation) is at-least-once; that is why a
   run that continues nothing gets a conversation of its own unless told otherwise. Between the
   server creating a response and Temporal holding its ID there is a window (the reply's way
   back, then the heartbeat's; about 10 ms measured, up to the workers' 1 s heartbeat
   throttle when another heartbeat went out in the second before); a worker killed in it, or
   a create whose reply is lost, makes a second response. The first is an orphan branch: it
   changes no shared state but costs its tokens. The same holds on a conversation if the
   worker died in the moment between recording the head and the heartbeat reaching Temporal.
4. **Every wait is bounded.** A response of the turn's own still queued or in progress
   ``RESPONSE_WAIT_SECONDS`` after it was created is cancelled and the turn fails (not
   retried), naming it; the same bound holds for the conversation an earlier attempt's
   response (ID unknown) keeps busy; someone else's response gets ``LOCK_WAIT_SECONDS``.

Why one module of about 730 lines: one turn's protocol (create, follow, poll, cancel, and
adopting an earlier attempt's response) shares the turn's state and the idempotency rules
above; the wire shapes are responses_wire.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import openai
import pydantic
import structlog
from openai import AsyncOpenAI
from openai.types.responses import Response
from temporalio.exceptions import ApplicationError

from durable_assistants.activities.backend import DEFAULT_POLL_SECONDS, PollPacer, TurnIO, api_call
from durable_assistants.activities.errors import api_message, to_temporal_error
from durable_assistants.activities.responses_wire import TAG_KEY, Turn, flat_tool, item_text, message_item, output_items
from durable_assistants.tools import ToolRegistry
from durable_assistants.workflows.models import ResponsesState, RunRequest, RunSnapshot, ToolCall, Usage

ITEM_LOOKBACK = 100
STREAM_RESUMES = 5
LOCKED_CODE = "conversation_locked"
# The API's refusal to continue a conversation whose last response's calls have no outputs.
UNANSWERED_CALLS = "No tool output found"
UNANSWERED_RETRIES = 3
# How long a turn waits for someone else's response to release its conversation (per attempt).
LOCK_WAIT_SECONDS = 600.0
# How long a turn waits for a response of its own to end: polling it, counted from its
# created_at; or, when a lost reply left its ID unknown, for the conversation it holds,
# counted from when the first attempt began waiting. Then the turn fails, non-retryable,
# naming the response (or conversation) and the time waited. Long enough for background
# reasoning responses; a response still running after an hour is treated as stuck.
RESPONSE_WAIT_SECONDS = 3600.0
# How long a create that asked for background may take to answer: a server that runs the turn
# in the foreground anyway answers when the turn is over (the activity heartbeats meanwhile).
# A turn this worker runs in the foreground itself gets RESPONSE_WAIT_SECONDS.
BACKGROUND_CREATE_SECONDS = 600.0
CONNECT_SECONDS = 10.0
# A cancel the server answers with a 5xx is tried this many times (backing off from 0.5 s),
# then the run is stopped without it, saying the API could not cancel the response.
CANCEL_TRIES = 4
# The most a stateless run's items may take as JSON; they travel through Temporal every turn.
MAX_STATELESS_CONTEXT_BYTES = 1_000_000
# Background mode: "auto" asks for it and, if the server answers in the foreground, runs this
# worker's later turns in the foreground; "off" never asks.
BACKGROUND_MODES = ("auto", "off")
# A response's statuses that mean it is done (Responses has no requires_action or expired).
DONE = frozenset({"completed", "failed", "cancelled", "incomplete"})

log = structlog.get_logger("responses")

# The conversation's newest item before a turn (its "head") was never recorded: not the same as
# None, a head recorded for a conversation that was empty.
_HEAD_NOT_RECORDED = object()


class ResponsesBackend:
    name = "responses"

    def __init__(
        self,
        client: AsyncOpenAI,
        tools: ToolRegistry | None = None,
        default_state: ResponsesState = "conversation",
        background: str = "auto",
    ) -> None:
        if background not in BACKGROUND_MODES:
            raise ValueError(f"unknown background mode {background!r}; choose one of {', '.join(BACKGROUND_MODES)}")
        self.client = client
        self.tools = tools
        # Where a run that continues nothing keeps its context, when its request does not say.
        self.default_state = default_state
        self.background = background
        # Turns run in the foreground: configured, or learnt from a server that ignored background.
        self.foreground = background == "off"

    async def check_request(self, request: RunRequest) -> None:
        """Everything the Responses API would refuse is caught by ``RunRequest.check_backend``;
        a missing conversation or previous response is the API's 404 on the first call."""

    async def create_conversation(self, request: RunRequest, key: str) -> str:
        raise ApplicationError(
            "the responses backend runs without a thread; give conversation_id, previous_response_id or neither",
            type="InvalidRunRequest",
            non_retryable=True,
        )

    async def start(self, request: RunRequest, thread_id: str | None, key: str, add_messages: bool, io: TurnIO) -> RunSnapshot:
        conversation_id = request.conversation_id
        fresh = conversation_id is None and request.previous_response_id is None
        state = (request.responses_state or self.default_state) if fresh else None
        if state == "conversation":
            conversation_id = await self._new_conversation(request, io)
        turn = Turn(
            request=request,
            items=[message_item(m) for m in request.messages],
            conversation_id=conversation_id,
            previous_response_id=request.previous_response_id,
            prior=None,
            key=key,
            context=[] if state == "stateless" else None,
        )
        return await self._turn(turn, request.mode, io)

    async def _new_conversation(self, request: RunRequest, io: TurnIO) -> str:
        """The run's own new conversation, tagged with the run's key. Its ID is recorded the
        moment the create returns; a retry uses the recorded one. A create whose reply is lost
        leaves an empty conversation behind (it holds nothing and costs nothing)."""
        recalled = io.recalled.get("conversation_id")
        if isinstance(recalled, str):
            return recalled
        metadata = {**(request.metadata or {}), TAG_KEY: io.key}
        try:
            conversation = await self.client.conversations.create(metadata=metadata)
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):
                raise ApplicationError(
                    f"the model API has no Conversations API (POST /conversations answered {exc.status_code}: "
                    f"{_said(exc)}); a run that continues nothing keeps its context in a new conversation by default. "
                    "On this server use responses_state 'chain' (previous_response_id; the server must store responses) "
                    "or 'stateless' (the run sends its whole context every turn): per request, or for the worker with "
                    "DA_RESPONSES_STATE",
                    type="ConversationsUnsupported",
                    non_retryable=True,
                ) from None
            raise to_temporal_error(exc, "create the run's conversation") from None
        except openai.OpenAIError as exc:
            raise to_temporal_error(exc, "create the run's conversation") from None
        # Empty: every item after "no head" is this run's.
        io.remember_for_retry(conversation_id=conversation.id, conversation_head=None)
        log.info("conversation created", conversation_id=conversation.id)
        return conversation.id

    async def submit_and_wait(
        self, request: RunRequest | None, snapshot: RunSnapshot, outputs: list[dict[str, str]], mode: str, io: TurnIO
    ) -> RunSnapshot:
        if request is None:
            raise ApplicationError("a Responses turn needs the run request's settings", type="InvalidRunRequest", non_retryable=True)
        stateless = snapshot.context is not None
        turn = Turn(
            request=request,
            items=[{"type": "function_call_output", "call_id": o["tool_call_id"], "output": o["output"]} for o in outputs],
            conversation_id=snapshot.thread_id,
            previous_response_id=None if snapshot.thread_id or stateless else snapshot.run_id,
            prior=snapshot,
            key=io.key,
            context=snapshot.context,
        )
        return await self._turn(turn, mode, io)

    async def wait(self, snapshot: RunSnapshot, io: TurnIO) -> RunSnapshot:
        if snapshot.run_id is None:  # adopted from the conversation's items: nothing to poll
            return snapshot
        return await self._poll(snapshot.run_id, snapshot.thread_id, _prior_usage(snapshot), io)

    async def cancel(self, snapshot: RunSnapshot, io: TurnIO, reason: str | None = None) -> RunSnapshot:
        """Stop the turn's response; a response that ended with calls nobody will answer gets
        an error output for each, so the conversation can go on (the API refuses a new
        response on a conversation with unanswered calls)."""
        done = snapshot
        if snapshot.foreground and snapshot.status != "requires_action":
            # Nothing to cancel or poll: the request that ran it was dropped with the activity.
            return snapshot.model_copy(update={"status": "cancelled"})
        if snapshot.run_id is not None and snapshot.status != "requires_action":
            await self._cancel_call(snapshot.run_id, io)
            done = await self._poll(snapshot.run_id, snapshot.thread_id, _prior_usage(snapshot), io)
        if done.status == "requires_action":
            if done.thread_id is not None and done.tool_calls:
                await self._answer_stopped(done, reason or "the workflow was cancelled")
            done = done.model_copy(update={"status": "cancelled"})
        return done

    async def _cancel_call(self, response_id: str, io: TurnIO) -> None:
        """``responses.cancel``; a 4xx means it is not cancellable (ended, or not a background
        response). A server that answers 5xx (some compatible servers: "not supported") is
        tried ``CANCEL_TRIES`` times, then the stop goes on without it, failing this activity
        for good: the run ends saying the API could not cancel the response."""
        pause = 0.5
        for tried in range(1, CANCEL_TRIES + 1):
            try:
                await self.client.responses.cancel(response_id)
                return
            except openai.APIStatusError as exc:
                if exc.status_code < 500:
                    return
                if tried == CANCEL_TRIES:
                    raise ApplicationError(
                        f"the API could not cancel response {response_id}: {tried} tries answered {exc.status_code} "
                        f"({_said(exc)})",
                        type="ModelApiCancelFailed",
                        non_retryable=True,
                    ) from None
            except openai.OpenAIError as exc:  # a connection error or timeout: retried by the activity
                raise to_temporal_error(exc, f"cancel response {response_id}") from None
            io.progress(cancelling=response_id, tried=tried)
            await asyncio.sleep(pause)
            pause *= 2

    async def _answer_stopped(self, snapshot: RunSnapshot, reason: str) -> None:
        conversation_id = snapshot.thread_id
        assert conversation_id is not None
        answered = {
            item.call_id for item in await self._items_after(conversation_id, _HEAD_NOT_RECORDED) if item.type == "function_call_output"
        }
        items = [
            {"type": "function_call_output", "call_id": call.id, "output": f"Error: the run stopped before this call was answered: {reason}"}
            for call in snapshot.tool_calls
            if call.id not in answered
        ]
        if items:
            await api_call(
                self.client.conversations.items.create(conversation_id, items=items),  # type: ignore[arg-type]
                f"answer {len(items)} unanswered calls in conversation {conversation_id}",
            )
            log.info("answered the stopped run's calls", conversation_id=conversation_id, calls=len(items))

    # ------------------------------------------------------------------ one turn

    async def _turn(self, turn: Turn, mode: str, io: TurnIO) -> RunSnapshot:
        # A foreground response is not recorded for adoption (nothing to poll or resume): a
        # retry of a foreground turn creates the turn's response again (at-least-once).
        turn.foreground = self.foreground or turn.context is not None  # stateless: store false cannot be background
        recalled_id = io.recalled.get("response_id")
        if recalled_id:
            # An earlier attempt of this activity created the response: adopt it. (What that
            # attempt recorded, the conversation's head too, is still recorded: TurnIO.)
            _own(io, recalled_id, turn.conversation_id)
            log.info("adopting the response an earlier attempt created", response_id=recalled_id)
            after = io.recalled.get("sequence_number")
            if mode == "stream" and isinstance(after, int):
                try:
                    stream = await self.client.responses.retrieve(recalled_id, stream=True, starting_after=after)
                except openai.OpenAIError as exc:  # e.g. a server that cannot resume streams: poll instead
                    log.info("cannot resume the stream; polling", response_id=recalled_id, error=type(exc).__name__)
                else:
                    return await self._follow(stream, turn, recalled_id, after, io)
            return await self._poll(recalled_id, turn.conversation_id, _prior_usage(turn.prior), io)

        head: Any = _HEAD_NOT_RECORDED
        if turn.conversation_id is not None:
            head = io.recorded.get("conversation_head", _HEAD_NOT_RECORDED)  # an earlier attempt's, or a new conversation's
            # Only a retry can find its own input already there.
            landed = await self._landed(turn, head) if io.attempt > 1 else None
            if landed is not None:
                return await self._adopt_from_items(turn, head, mode, io)
            if head is _HEAD_NOT_RECORDED:
                head = await self._newest_item(turn.conversation_id)
            io.remember_for_retry(conversation_head=head)
        return await self._create(turn, turn.items, mode, io, head)

    async def _create(self, turn: Turn, items: list[dict[str, Any]], mode: str, io: TurnIO, head: Any = _HEAD_NOT_RECORDED) -> RunSnapshot:
        params = turn.params(items, self._registry_tools())
        if turn.context is not None:
            turn.sent = list(params.get("input", []))
        where = (
            f"on conversation {turn.conversation_id}" if turn.conversation_id
            else "of the stateless run" if turn.context is not None
            else "in the response chain"
        )
        locked_since: float | None = None
        while True:
            if locked_since is not None and io.attempt > 1:
                # A retry checks again after each wait, not only before it: the response that
                # held the conversation may be an earlier attempt's, whose create was still on
                # its way when this retry looked, and it took this turn's input. Creating now
                # would send that input a second time.
                if await self._landed(turn, head) is not None:
                    return await self._adopt_from_items(turn, head, mode, io)
            try:
                if mode == "stream":
                    created = await self._create_call(params, True, io, turn)
                    if isinstance(created, Response):
                        # A streamed create answered with the response as JSON (background with
                        # stream, on some compatible servers): it runs; poll it.
                        log.info("the streamed create was answered with JSON; polling", response_id=created.id)
                        response = created
                        break
                    return await self._follow(created, turn, None, None, io)
                response = await self._create_call(params, False, io, turn)
                break
            except openai.BadRequestError as exc:
                if exc.code != LOCKED_CODE:
                    raise to_temporal_error(exc, f"create a response {where}") from None
                # Another response on this conversation is still running; wait for it to end.
                locked_since = locked_since if locked_since is not None else time.monotonic()
                if time.monotonic() - locked_since > LOCK_WAIT_SECONDS:
                    raise ApplicationError(
                        f"conversation {turn.conversation_id} stayed busy with another response for "
                        f"{LOCK_WAIT_SECONDS:.0f} s; cancel that response or run on another conversation",
                        type="ConversationLocked",
                        non_retryable=True,
                    ) from None
                io.progress(waiting_for="conversation_locked")
                await asyncio.sleep(DEFAULT_POLL_SECONDS / 4)
            except openai.OpenAIError as exc:
                raise to_temporal_error(exc, f"create a response {where}") from None
        self._learn(response, turn)
        _own(io, response.id, turn.conversation_id, turn.foreground)
        try:
            self._check_chain(turn, response)
        except ApplicationError:
            if not turn.foreground and response.status not in DONE:
                await self._give_up_on(response)
            raise
        return await self._poll_from(response, turn.conversation_id, _prior_usage(turn.prior), io, turn.sent)

    async def _create_call(self, params: dict[str, Any], stream: bool, io: TurnIO, turn: Turn) -> Any:
        """``responses.create``: the response, or (``stream``) its event stream, or the
        response if the server answered the streamed create with JSON. A background create is
        seen through even if the activity is cancelled meanwhile: a response the server made
        must be known (``_own``) to be stopped, not left running. A foreground one is dropped
        at once (the server stops it, or finishes it unread: nothing else can stop it)."""
        timeout = httpx.Timeout(RESPONSE_WAIT_SECONDS if turn.foreground else BACKGROUND_CREATE_SECONDS, connect=CONNECT_SECONDS)
        task = asyncio.ensure_future(self._raw_create(params, stream, timeout))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if turn.foreground:
                task.cancel()
                raise
            with contextlib.suppress(Exception):
                created = await task
                if isinstance(created, Response):
                    _own(io, created.id, turn.conversation_id)
                else:
                    async with created:
                        async for event in created:  # the first event carries the response
                            response = getattr(event, "response", None)
                            if response is not None:
                                _own(io, response.id, turn.conversation_id)
                                break
            raise

    async def _raw_create(self, params: dict[str, Any], stream: bool, timeout: httpx.Timeout) -> Any:
        if not stream:
            # params are built at run time: no overload of create can be picked statically.
            return await self.client.responses.create(**params, timeout=timeout)  # type: ignore[call-overload]
        raw = await self.client.responses.with_raw_response.create(**params, stream=True, timeout=timeout)  # type: ignore[call-overload]
        if "text/event-stream" in (raw.headers.get("content-type") or ""):
            return raw.parse()
        body = await raw.http_response.aread()
        try:
            return Response.model_validate_json(body)
        except pydantic.ValidationError:
            raise ApplicationError(
                f"a streamed create was answered with {raw.headers.get('content-type')!r}, neither an event stream nor a "
                f"response: {body[:300]!r}",
                type="ModelApiStream",
            ) from None

    def _learn(self, response: Response, turn: Turn) -> None:
        """A response created with ``background: true`` that comes back without it ran in the
        foreground: the server ignores background mode. The turn is then a foreground one, and
        in ``auto`` mode this worker runs its later turns in the foreground."""
        if turn.foreground or getattr(response, "background", None) is True:
            return
        turn.foreground = True
        if not self.foreground:
            self.foreground = True
            log.warning(
                "the model API ran a background response in the foreground; this worker runs Responses turns in the "
                "foreground from now on (DA_RESPONSES_BACKGROUND=off says so from the start)",
                response_id=response.id,
            )

    def _check_chain(self, turn: Turn, response: Response) -> None:
        """A response created with ``previous_response_id`` that comes back without it: the
        server dropped the chain, so the model did not see the earlier turns."""
        if turn.previous_response_id is None or getattr(response, "previous_response_id", None) is not None:
            return
        raise ApplicationError(
            f"the model API ignored previous_response_id: response {response.id} came back with previous_response_id "
            f"null although {turn.previous_response_id} was sent, so the model answered without the earlier turns (a "
            "server that keeps no state between responses). Run with responses_state 'stateless', which sends the whole "
            "context every turn: per request, or for the worker with DA_RESPONSES_STATE=stateless",
            {"response_id": response.id, "previous_response_id": turn.previous_response_id},
            type="ChainDropped",
            non_retryable=True,
        )

    async def _follow(self, stream: Any, turn: Turn, response_id: str | None, after: int | None, io: TurnIO) -> RunSnapshot:
        """Read a response's events until it ends; resume after the last event seen when the
        connection drops; fall back to polling if it keeps dropping."""
        prior = _prior_usage(turn.prior)
        for _ in range(STREAM_RESUMES + 1):
            try:
                async with stream:
                    async for event in stream:
                        response = getattr(event, "response", None)
                        if response_id is None and response is not None:
                            response_id = response.id
                            self._learn(response, turn)
                            _own(io, response_id, turn.conversation_id, turn.foreground)
                            self._check_chain(turn, response)
                        sequence = getattr(event, "sequence_number", None)
                        if event.type == "response.output_text.delta":
                            # The sequence lets followers drop a delta a resumed stream repeats.
                            io.on_text(event.delta, response_id, sequence)
                        if isinstance(sequence, int):
                            after = sequence  # this attempt resumes after what it received
                            # A retry resumes after what reached followers: the publisher records that.
                            io.progress(event=event.type)
                        if isinstance(response, Response) and response.status in DONE:
                            return await self._snapshot(response, turn.conversation_id, prior, turn.sent)
            except openai.APIStatusError as exc:
                raise to_temporal_error(exc, "read the response stream") from None
            except ApplicationError:
                raise
            except Exception as exc:  # a dropped connection: the SDK's or the HTTP library's error
                log.info("response stream broke; resuming", response_id=response_id, after=after, error=type(exc).__name__)
            if response_id is None:
                raise ApplicationError("the response stream ended before the response was created", type="ModelApiStream")
            if turn.foreground:
                # Only background responses can be resumed or polled: the turn starts again.
                raise ApplicationError(
                    f"the stream of response {response_id} broke, and a foreground response can be neither resumed nor "
                    "polled; the turn is made again",
                    type="ModelApiStream",
                )
            if after is None:
                break
            try:
                stream = await self.client.responses.retrieve(response_id, stream=True, starting_after=after)
            except openai.OpenAIError:
                break  # e.g. a server that cannot resume streams: poll instead
        assert response_id is not None
        return await self._poll(response_id, turn.conversation_id, prior, io)

    async def _poll(self, response_id: str, conversation_id: str | None, prior: Usage | None, io: TurnIO) -> RunSnapshot:
        response = await api_call(self.client.responses.retrieve(response_id), f"read response {response_id}")
        return await self._poll_from(response, conversation_id, prior, io)

    async def _poll_from(
        self, response: Response, conversation_id: str | None, prior: Usage | None, io: TurnIO, sent: list[dict[str, Any]] | None = None
    ) -> RunSnapshot:
        """Re-read the response until it ends, at the pace the server asks for. One activity, many reads.

        Bounded: a response still queued or in progress ``RESPONSE_WAIT_SECONDS`` after it was
        created (the server's ``created_at``, so retries count the same time) is cancelled
        and the turn fails, saying so."""
        polls = 0
        pacer = PollPacer()
        since = _created(response)
        while response.status is not None and response.status not in DONE:
            if time.time() - since > RESPONSE_WAIT_SECONDS:
                await self._give_up_on(response)
                raise ApplicationError(
                    f"response {response.id} was still {response.status} {time.time() - since:.0f} s after it was created "
                    f"(polled {polls} times by this attempt); the worker waits at most RESPONSE_WAIT_SECONDS = "
                    f"{RESPONSE_WAIT_SECONDS:g} s for a response to end, so it cancelled it",
                    {"response_id": response.id, "status": response.status, "waited_seconds": round(time.time() - since)},
                    type="ResponseWaitExceeded",
                    non_retryable=True,
                )
            io.progress(status=response.status, polls=polls)
            await asyncio.sleep(pacer.delay())
            try:
                raw = await self.client.responses.with_raw_response.retrieve(response.id)
            except openai.OpenAIError as exc:
                raise to_temporal_error(exc, f"read response {response.id}") from None
            response = raw.parse()
            polls += 1
            pacer.heard(raw.headers.get("openai-poll-after-ms"))
        return await self._snapshot(response, conversation_id, prior, sent)

    async def _give_up_on(self, response: Response) -> None:
        """Cancel a response the turn stops waiting for: nobody will read what it makes."""
        try:
            await self.client.responses.cancel(response.id)
        except openai.OpenAIError as exc:
            log.warning("cancelling the response given up on failed", response_id=response.id, error=f"{type(exc).__name__}: {exc}")

    async def _snapshot(
        self, response: Response, conversation_id: str | None, prior: Usage | None, sent: list[dict[str, Any]] | None = None
    ) -> RunSnapshot:
        """``sent``: a stateless turn's whole input; the snapshot then carries it and the
        response's output as the next turn's context."""
        calls = [item for item in response.output if item.type == "function_call"]
        status: str = response.status or "completed"
        if status == "completed" and calls:
            status = "requires_action"
        context = None
        if sent is not None:
            context = sent + [item.model_dump(mode="json", exclude_none=True) for item in response.output]
            size = len(json.dumps(context, separators=(",", ":")).encode())
            if status == "requires_action" and size > MAX_STATELESS_CONTEXT_BYTES:
                raise ApplicationError(
                    f"the stateless run's context is {size} bytes after response {response.id}, over the "
                    f"{MAX_STATELESS_CONTEXT_BYTES} bytes a stateless run carries through Temporal each turn; run it on "
                    "a conversation or a chain, or with fewer or shorter tool outputs (output_cap_chars)",
                    type="StatelessContextTooLarge",
                    non_retryable=True,
                )
        messages = [item for item in response.output if item.type == "message"]
        final_text = None
        if status in ("completed", "incomplete"):
            final_text = "\n\n".join(
                part.text for m in messages for part in m.content if part.type == "output_text"
            )
        usage = prior
        if response.usage is not None:
            usage = _add_usage(prior, response.usage.input_tokens, response.usage.output_tokens)
        return RunSnapshot(
            run_id=response.id,
            thread_id=conversation_id,
            backend="responses",
            status=status,
            tool_calls=[ToolCall(id=c.call_id, name=c.name, arguments=c.arguments) for c in calls]
            if status == "requires_action"
            else [],
            usage=usage,
            model=response.model or None,
            last_error=response.error.model_dump() if response.error else None,
            incomplete_details=response.incomplete_details.model_dump() if response.incomplete_details else None,
            final_text=final_text,
            message_ids=[m.id for m in messages] if final_text is not None else [],
            foreground=getattr(response, "background", None) is not True,
            context=context,
        )

    # ------------------------------------------------------------------ conversations

    async def _newest_item(self, conversation_id: str) -> str | None:
        page = await api_call(
            self.client.conversations.items.list(conversation_id, limit=1, order="desc"),
            f"read the newest item of conversation {conversation_id}",
        )
        return page.data[0].id if page.data else None

    async def _items_after(self, conversation_id: str, head: Any) -> list[Any]:
        """The conversation's items newer than ``head``, oldest first (the newest ``ITEM_LOOKBACK``
        when the head is unknown)."""
        page = await api_call(
            self.client.conversations.items.list(conversation_id, limit=ITEM_LOOKBACK, order="desc"),
            f"read the items of conversation {conversation_id}",
        )
        newer = []
        for item in page.data:
            if head is not _HEAD_NOT_RECORDED and getattr(item, "id", None) == head:
                break
            newer.append(item)
        return list(reversed(newer))

    async def _landed(self, turn: Turn, head: Any) -> list[Any] | None:
        """If this turn's input items are in the conversation already (an earlier attempt's
        create took effect), the items that came after them; else None."""
        call_ids = {item["call_id"] for item in turn.items if item.get("type") == "function_call_output"}
        if not call_ids and head is _HEAD_NOT_RECORDED:
            return None  # messages can only be matched against a recorded head
        items = await self._items_after(turn.conversation_id, head)  # type: ignore[arg-type]
        if not turn.items:
            # A turn with no input: whatever came after the head is an earlier create's doing.
            return items
        if call_ids:
            positions = [i for i, item in enumerate(items) if item.type == "function_call_output" and item.call_id in call_ids]
            return items[positions[-1] + 1 :] if positions else None
        wanted = [(item["role"], item_text(item["content"])) for item in turn.items]
        seen = [(getattr(i, "role", None), item_text(getattr(i, "content", None))) if i.type == "message" else None for i in items]
        for start in range(len(seen) - len(wanted) + 1):
            if seen[start : start + len(wanted)] == wanted:
                return items[start + len(wanted) :]
        return None

    async def _adopt_from_items(self, turn: Turn, head: Any, mode: str, io: TurnIO) -> RunSnapshot:
        """An earlier attempt's response took this turn's input but its ID was lost. Its output
        lands in the conversation when it ends: take the turn's outcome from there. If it ended
        without output (failed, cancelled), continue the conversation without re-sending."""
        assert turn.conversation_id is not None
        log.warning("an earlier attempt's response took this turn's input; adopting its outcome", conversation_id=turn.conversation_id)
        polls = refused = 0
        what = f"continue conversation {turn.conversation_id}"
        # Counted from when the first attempt began waiting (recorded, so a retry goes on counting).
        since = io.recorded.get("waiting_since")
        if not isinstance(since, (int, float)):
            since = time.time()
            io.remember_for_retry(waiting_since=since)
        while True:
            outputs = output_items(await self._landed(turn, head) or [])
            if outputs:
                return self._snapshot_from_items(turn, outputs)
            if time.time() - since > RESPONSE_WAIT_SECONDS:
                raise ApplicationError(
                    f"waited {time.time() - since:.0f} s on conversation {turn.conversation_id} for the response an earlier "
                    "attempt of this turn created (its reply was lost, so its ID is unknown) to end, and it has not; the "
                    f"worker waits at most RESPONSE_WAIT_SECONDS = {RESPONSE_WAIT_SECONDS:g} s for a response to end. "
                    "Cancel the conversation's running response, or run on another conversation",
                    {"conversation_id": turn.conversation_id, "waited_seconds": round(time.time() - since)},
                    type="ResponseWaitExceeded",
                    non_retryable=True,
                )
            params = turn.params([], self._registry_tools())
            try:
                response = await self._create_call(params, False, io, turn)
            except openai.BadRequestError as exc:
                if exc.code == LOCKED_CODE:
                    pass  # the earlier response still runs
                elif UNANSWERED_CALLS in str(exc.message):
                    # The earlier response ended with calls between the read and the create:
                    # the next read adopts them. Calls that never show up after this turn's
                    # input are older than the turn, and no retry will change that.
                    refused += 1
                    if refused > UNANSWERED_RETRIES:
                        raise ApplicationError(
                            f"conversation {turn.conversation_id} has function calls from before this turn with no "
                            f"output ({exc.message}); answer them, or run on another conversation",
                            type="ConversationHasUnansweredCalls",
                            non_retryable=True,
                        ) from None
                else:
                    raise to_temporal_error(exc, what) from None
                io.progress(waiting_for="earlier response", polls=polls)
                polls += 1
                await asyncio.sleep(DEFAULT_POLL_SECONDS / 4)
                continue
            except openai.OpenAIError as exc:
                raise to_temporal_error(exc, what) from None
            _own(io, response.id, turn.conversation_id)
            # The earlier response may have ended with a reply between the read and the create.
            # Its items, not the new response's, are then the turn's outcome.
            landed = output_items(await self._landed(turn, head) or [])
            # Read after the items: anything the new response itself put there is in its output.
            mine = {item.id for item in (await api_call(self.client.responses.retrieve(response.id), what)).output}
            theirs = [item for item in landed if item.id not in mine]
            if theirs:
                log.warning("the earlier response ended meanwhile; cancelling the new one", response_id=response.id)
                try:
                    await self.client.responses.cancel(response.id)
                except openai.OpenAIError:
                    pass  # it ended already: an extra reply no one can take back
                io.forget_for_retry("response_id")
                return self._snapshot_from_items(turn, theirs)
            return await self._poll_from(response, turn.conversation_id, _prior_usage(turn.prior), io)

    def _snapshot_from_items(self, turn: Turn, outputs: list[Any]) -> RunSnapshot:
        calls = [item for item in outputs if item.type == "function_call"]
        messages = [item for item in outputs if item.type == "message" and getattr(item, "role", None) == "assistant"]
        if any(getattr(item, "status", None) == "incomplete" for item in outputs):
            # The response was cut short (e.g. max_output_tokens): its calls may be cut too.
            status, calls = "incomplete", []
        else:
            status = "requires_action" if calls else "completed"
        return RunSnapshot(
            run_id=None,  # the response that produced these items is not known
            thread_id=turn.conversation_id,
            backend="responses",
            status=status,
            tool_calls=[ToolCall(id=c.call_id, name=c.name, arguments=c.arguments) for c in calls],
            usage=_prior_usage(turn.prior),
            final_text=None if calls else "\n\n".join(item_text(m.content) for m in messages),
            message_ids=[] if calls else [m.id for m in messages],
            incomplete_details={"reason": "unknown: adopted from the conversation's items"} if status == "incomplete" else None,
        )

    def _registry_tools(self) -> list[dict[str, Any]]:
        return [flat_tool(schema) for schema in self.tools.schemas()] if self.tools is not None else []


def _own(io: TurnIO, response_id: str, conversation_id: str | None, foreground: bool = False) -> None:
    """This attempt has ``response_id`` under way: a retry adopts it, a cancel stops it. A
    foreground response is named for a cancel only: a retry cannot adopt it."""
    snapshot = RunSnapshot(run_id=response_id, thread_id=conversation_id, backend="responses", status="in_progress", foreground=foreground)
    if foreground:
        io.under_way(snapshot)
    else:
        io.under_way(snapshot, response_id=response_id)


def _created(response: Response) -> float:
    """When the server created ``response`` (epoch seconds); now, if it sent nothing usable."""
    now = time.time()
    created = response.created_at
    return float(created) if isinstance(created, (int, float)) and 0 < created <= now else now


def _prior_usage(snapshot: RunSnapshot | None) -> Usage | None:
    return snapshot.usage if snapshot is not None else None


def _add_usage(prior: Usage | None, prompt: int, completion: int) -> Usage:
    base = prior or Usage()
    return Usage(
        prompt_tokens=base.prompt_tokens + prompt,
        completion_tokens=base.completion_tokens + completion,
        total_tokens=base.total_tokens + prompt + completion,
    )


def _said(exc: openai.APIStatusError) -> str:
    """The API's message for an error, on one line and cut to 300 characters."""
    return " ".join(api_message(exc).split())[:300]
