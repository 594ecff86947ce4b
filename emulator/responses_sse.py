"""Server-sent events for response streams, in the framing the `openai` SDK reads.

Each event is ``event: <type>`` and ``data: <json>`` where the JSON carries the same
``type`` and the response's ``sequence_number``. The stream ends after the response's
terminal event (``response.completed``, ``response.failed`` or ``response.incomplete``);
the Responses API sends no ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from starlette.responses import StreamingResponse

from durable_assistants.emulator.errors import ConnectionDropped
from durable_assistants.emulator.responses import FINAL_EVENTS, Event, ResponseState
from durable_assistants.emulator.sse import KEEP_ALIVE, frame


def encode(event: Event) -> bytes:
    return frame(event["type"], json.dumps(event, separators=(",", ":")))


class ResponseEventStream(StreamingResponse):
    """Streams a response's events after ``starting_after`` (all of them when None): first
    the ones it kept, then the ones still to come, until its terminal event.

    The subscription is taken when the stream is built, so no event falls between the kept
    ones and the live ones. ``discard()`` releases a stream that is never sent.
    """

    def __init__(self, state: ResponseState, keepalive_seconds: float, starting_after: int | None = None) -> None:
        self._state = state
        self._cut: int | None = None
        backlog, self._queue, ended = state.subscribe(starting_after)
        super().__init__(
            self._events(backlog, ended, keepalive_seconds),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def _events(self, backlog: list[Event], ended: bool, keepalive_seconds: float) -> AsyncIterator[bytes]:
        sent = 0
        try:
            for event in backlog:
                if sent == self._cut:
                    raise ConnectionDropped
                yield encode(event)
                sent += 1
                if event["type"] in FINAL_EVENTS:
                    return
            if ended:
                return  # the response had ended and its last event was before `starting_after`
            while True:
                try:
                    event = await asyncio.wait_for(self._queue.get(), keepalive_seconds)
                except TimeoutError:
                    yield KEEP_ALIVE
                    continue
                if sent == self._cut:
                    raise ConnectionDropped
                yield encode(event)
                sent += 1
                if event["type"] in FINAL_EVENTS:
                    return
        finally:
            self.discard()

    def cut_after(self, events: int) -> None:
        """Break the connection after ``events`` events (a fault), as a network failure would."""
        self._cut = events

    def discard(self) -> None:
        self._state.unsubscribe(self._queue)


def response_stream(state: ResponseState, start: Callable[[], None], keepalive_seconds: float) -> ResponseEventStream:
    """Subscribe to a new response's events, then ``start`` it."""
    stream = ResponseEventStream(state, keepalive_seconds)
    try:
        start()
    except BaseException:
        stream.discard()
        raise
    return stream
