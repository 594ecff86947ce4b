"""Server-sent events for run streams, in the framing the `openai` SDK reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import ServerSentEvent
from starlette.responses import StreamingResponse

from durable_assistants.emulator.engine import FINAL_EVENTS, Event, RunState
from durable_assistants.emulator.errors import ConnectionDropped

REQUIRES_ACTION = "thread.run.requires_action"


def frame(event: str, data: str) -> bytes:
    """One event as OpenAI frames it (``event:``, ``data:``, lines ending in ``\\n``), by
    sse-starlette; both the run streams and the response streams (responses_sse.py) use it."""
    return ServerSentEvent(data=data, event=event, sep="\n").encode()


def encode(event: str, data: dict[str, Any]) -> bytes:
    return frame(event, json.dumps(data, separators=(",", ":")))


DONE = frame("done", "[DONE]")
# A comment line: what OpenAI's streams send while nothing happens.
KEEP_ALIVE = ServerSentEvent(comment="keep-alive", sep="\n").encode()


class RunEventStream(StreamingResponse):
    """Streams one run's events until it needs action or ends, then ``done``.

    Subscribe *before* the change that produces the events (creating, submitting), so the
    stream misses none. ``discard()`` releases the subscription of a stream that is never sent.
    """

    def __init__(
        self,
        run_state: RunState,
        queue: asyncio.Queue[Event] | None,
        keepalive_seconds: float,
        prelude: list[Event] | None = None,
        headers: dict[str, str] | None = None,
        *,
        completed_after_requires_action: bool = False,
    ) -> None:
        self._run_state = run_state
        self._queue = queue  # None: a stream of the prelude alone (then `done`), no live events
        self._completed_after_requires_action = completed_after_requires_action
        self._cut: int | None = None
        super().__init__(
            self._events(prelude or [], keepalive_seconds),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **(headers or {})},
        )

    async def _events(self, prelude: list[Event], keepalive_seconds: float) -> AsyncIterator[bytes]:
        sent = 0
        try:
            for event, data in prelude:
                yield encode(event, data)
                sent += 1
            while self._queue is not None:
                try:
                    event, data = await asyncio.wait_for(self._queue.get(), keepalive_seconds)
                except TimeoutError:
                    yield KEEP_ALIVE
                    continue
                if sent == self._cut:
                    raise ConnectionDropped
                yield encode(event, data)
                sent += 1
                if event in FINAL_EVENTS:
                    if event == REQUIRES_ACTION and self._completed_after_requires_action:
                        # compat.completed_after_requires_action: the event name says completed;
                        # the run it carries (status requires_action) says otherwise.
                        yield encode("thread.run.completed", data)
                    break
            yield DONE
        finally:
            self.discard()

    def cut_after(self, events: int) -> None:
        """Break the connection after ``events`` events (a fault), as a network failure would."""
        self._cut = events

    def discard(self) -> None:
        if self._queue is not None:
            self._run_state.unsubscribe(self._queue)


def run_stream(
    run_state: RunState,
    start: Callable[[], object],
    keepalive_seconds: float,
    prelude: list[Event] | None = None,
    *,
    completed_after_requires_action: bool = False,
) -> RunEventStream:
    """Subscribe to ``run_state``, then ``start`` the change whose events the stream carries."""
    queue = run_state.subscribe()
    try:
        start()
    except BaseException:
        run_state.unsubscribe(queue)
        raise
    return RunEventStream(
        run_state, queue, keepalive_seconds, prelude, completed_after_requires_action=completed_after_requires_action
    )


def stale_tail_stream(run_state: RunState, start: Callable[[], object], tail: list[Event], keepalive_seconds: float) -> RunEventStream:
    """compat.stale_done_on_submit: ``start`` the change (it takes effect), then send only
    ``tail`` (what an earlier stream left unsent) and ``done``: no event of the change itself."""
    start()
    return RunEventStream(run_state, None, keepalive_seconds, tail)
