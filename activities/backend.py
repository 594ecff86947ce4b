"""The seam between the worker and a model API.

Workflows and tools never see which API runs: the model activities call a ``ModelBackend``.
The Assistants backend (``assistants.py``) implements it over threads and runs; the
Responses backend (``responses.py``) over background responses, ``function_call`` items and
``function_call_output`` items. A turn of either ends in a compact ``RunSnapshot``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import openai

from durable_assistants.activities.errors import refused_by_sdk, to_temporal_error
from durable_assistants.workflows.models import RunRequest, RunSnapshot

Heartbeat = Callable[[dict[str, Any]], None]
OnText = Callable[..., None]  # (delta, run_id=None, sequence=None)

POLL_FLOOR_SECONDS = 0.025
POLL_CAP_SECONDS = 5.0
DEFAULT_POLL_SECONDS = 1.0

T = TypeVar("T")


@dataclass
class TurnIO:
    """What a backend may do besides calling the API, while one activity attempt runs.

    ``key`` tags what the turn creates (the workflow's ID). ``recalled`` is what the previous attempt of the same activity recorded (its last heartbeat
    details): a backend that cannot look its objects up (the Responses API lists no responses)
    records an ID there the moment it has one, and a retry adopts it instead of creating another.

    What an earlier attempt recorded stays recorded (``recorded`` starts from ``recalled``)
    until this attempt replaces or forgets it: every heartbeat of this attempt, from the first,
    carries it, so a retry of this attempt recalls it too. Every heartbeat goes through here;
    ``last_beat`` is when the last one went out, and ``keep_alive`` repeats it (the activity's
    background heartbeat, while a call is slow to answer).
    """

    heartbeat: Heartbeat = lambda details: None
    on_text: OnText = lambda text, run_id=None, sequence=None: None
    recalled: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    attempt: int = 1
    recorded: dict[str, Any] = field(default_factory=dict)
    # The run or response this attempt has under way: what to cancel if the workflow is cancelled.
    in_flight: RunSnapshot | None = None
    # When this attempt last heartbeated (time.monotonic()); its start until then.
    last_beat: float = field(default_factory=time.monotonic)
    _sent: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.recorded = {**self.recalled, **self.recorded}
        self._sent = dict(self.recorded)

    def under_way(self, snapshot: RunSnapshot, **details: Any) -> None:
        """Name the API run or response now under way: this attempt stops it if the workflow is
        cancelled; the heartbeat carries it (``in_flight``, with ``details``) for when the
        attempt cannot."""
        self.in_flight = snapshot
        self.remember_for_retry(in_flight=snapshot.model_dump(include={"run_id", "thread_id", "backend", "foreground"}), **details)

    def remember_for_retry(self, **details: Any) -> None:
        """Remember ``details`` for a retry of this activity, and heartbeat them now."""
        self.recorded.update(details)
        self._send(dict(self.recorded))

    def forget_for_retry(self, *keys: str) -> None:
        """Drop ``keys`` from what a retry recalls (and from what a cancel would stop)."""
        for key in (*keys, "in_flight"):
            self.recorded.pop(key, None)
        self.in_flight = None
        self._send(dict(self.recorded))

    def progress(self, **progress: Any) -> None:
        """Heartbeat ``progress`` along with everything recorded so far."""
        self._send({**self.recorded, **progress})

    def keep_alive(self) -> None:
        """Heartbeat again what the last heartbeat said (all that is recorded, and the latest progress)."""
        self._send(dict(self._sent))

    def _send(self, details: dict[str, Any]) -> None:
        self._sent = details
        self.last_beat = time.monotonic()
        self.heartbeat(details)


class ModelBackend(Protocol):
    name: str

    async def check_request(self, request: RunRequest) -> None:
        """Raise a non-retryable error if the request cannot run here (e.g. no such assistant)."""

    async def create_conversation(self, request: RunRequest, key: str) -> str:
        """Create the thread (with the request's messages) and return its ID."""

    async def start(self, request: RunRequest, thread_id: str | None, key: str, add_messages: bool, io: TurnIO) -> RunSnapshot:
        """Add the request's messages and start the run's first turn, both idempotent under
        ``key``; wait until it is actionable. In stream mode ``io.on_text`` gets text deltas."""

    async def submit_and_wait(
        self, request: RunRequest | None, snapshot: RunSnapshot, outputs: list[dict[str, str]], mode: str, io: TurnIO
    ) -> RunSnapshot:
        """Hand every output of the round to the model in one request (a repeat is success), then wait."""

    async def wait(self, snapshot: RunSnapshot, io: TurnIO) -> RunSnapshot:
        """Wait until the run needs action or ends."""

    async def cancel(self, snapshot: RunSnapshot, io: TurnIO, reason: str | None = None) -> RunSnapshot:
        """Stop the run (already ended is fine) and wait until it is terminal. Calls the run
        leaves unanswered are closed as the API needs, with ``reason`` where it can be said."""


# Without the server's hint, the pause before a read is this fraction of the time the turn
# has taken so far (within POLL_FLOOR_SECONDS and DEFAULT_POLL_SECONDS): a turn's end is seen
# within about a fifth of its length at any length, a 300 ms turn as well as a 30 s one, for
# about 15 reads plus one a second beyond 5 s.
NO_HINT_FRACTION = 0.2
# A hint of 0 (or less) would make a busy loop: at least this pause.
HINT_FLOOR_SECONDS = 0.01


class PollPacer:
    """The pauses between reads of one turn: none before the first (as the SDK's
    ``create_and_poll``: the server's hint comes with a read); then exactly the server's
    ``openai-poll-after-ms`` when it sends one (within ``HINT_FLOOR_SECONDS`` and
    ``POLL_CAP_SECONDS``); without it (compatible servers send none) a fifth of the time since
    the pacer started, from ``POLL_FLOOR_SECONDS`` up to ``DEFAULT_POLL_SECONDS``."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.hint: str | None = None
        self.first = True

    def restart(self) -> None:
        self.started = time.monotonic()

    def heard(self, header: str | None) -> None:
        """The last read's ``openai-poll-after-ms``, if it sent one (a later read without it keeps the last)."""
        if header is not None:
            self.hint = header

    def delay(self) -> float:
        """The pause before the next read."""
        if self.first:
            self.first = False
            return 0.0
        if self.hint is not None:
            try:
                return min(max(float(self.hint) / 1000, HINT_FLOOR_SECONDS), POLL_CAP_SECONDS)
            except ValueError:
                self.hint = None
        elapsed = time.monotonic() - self.started
        return min(max(elapsed * NO_HINT_FRACTION, POLL_FLOOR_SECONDS), DEFAULT_POLL_SECONDS)


async def api_call(call: Awaitable[T], what: str) -> T:
    """Await an SDK call; an API error becomes the Temporal error that says what failed."""
    try:
        return await call
    except openai.OpenAIError as exc:
        raise to_temporal_error(exc, what) from None
    except (ValueError, TypeError) as exc:
        raise refused_by_sdk(exc, what) from None
