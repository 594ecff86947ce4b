"""Server-wide settings of the emulator, changeable at run time through the admin API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EmulatorConfig(BaseModel):
    """Timing and behaviour knobs. Every field can be set on the command line
    (``--expiry-seconds 3``) or changed live with ``PATCH /_emulator/config``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    expiry_seconds: float = Field(
        600.0, gt=0, description="A run expires this long after it was created (OpenAI: 600 s)."
    )
    queue_seconds: float = Field(
        0.0, ge=0, description="Time a run spends `queued` before it goes `in_progress`."
    )
    turn_seconds: float = Field(
        0.05, ge=0, description="Default time the scripted model takes for one turn."
    )
    chars_per_second: float | None = Field(
        None, gt=0, description="Default streaming rate of assistant text; None sends it at once."
    )
    chunk_chars: int = Field(8, ge=1, description="Characters per text delta when streaming.")
    poll_after_ms: int = Field(
        100, ge=0, description="Value of `openai-poll-after-ms` on reads of a non-terminal run."
    )
    keepalive_seconds: float = Field(
        15.0, gt=0, description="An idle SSE stream gets a `: keep-alive` comment this often."
    )
    api_key: str | None = Field(
        None, description="When set, requests must carry `Authorization: Bearer <api_key>`."
    )
    seed: int | None = Field(
        None, description="Seeds ID generation and fault sampling so a session can be replayed."
    )
