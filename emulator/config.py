"""Server-wide settings of the emulator, changeable at run time through the admin API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CompatConfig(BaseModel):
    """Ways an independent Assistants-compatible server, or an OpenAI-compatible gateway in
    front of a chat-completions model serving the Responses API, behaves that OpenAI did not.
    Each one is off by default (the emulator then behaves as OpenAI did); turn them on to check
    that a client copes. On the command line: ``--compat NAME`` (repeatable, or ``all``); live:
    ``PATCH /_emulator/config`` with ``{"compat": {"NAME": true}}``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    completed_after_requires_action: bool = Field(
        False,
        description="A run stream that reaches `thread.run.requires_action` goes on with a "
        "`thread.run.completed` event (carrying the run, still `requires_action`) and `done`.",
    )
    stale_done_on_submit: bool = Field(
        False,
        description="A streamed submit_tool_outputs takes effect, but its stream only replays the tail "
        "the run's previous stream sent after `requires_action` (`done`, preceded by that stale "
        "`thread.run.completed` when completed_after_requires_action is on) and ends: no fresh run event.",
    )
    repeat_submit_404: bool = Field(
        False, description="A submit to a run that is not waiting for tool outputs answers 404 (OpenAI: 400)."
    )
    unknown_call_500: bool = Field(
        False, description="A submit naming a tool_call_id the run is not waiting for answers 500 (OpenAI: 400)."
    )
    cancel_only_in_progress: bool = Field(
        False, description="Cancel is refused (400) unless the run is `in_progress` (OpenAI also cancels "
        "`queued` and `requires_action` runs)."
    )
    no_expiry: bool = Field(False, description="Runs never expire: `expires_at` is null from the start.")
    null_tools: bool = Field(False, description='An assistant with no tools is sent with `"tools": null` (OpenAI: `[]`).')
    no_poll_after_header: bool = Field(
        False,
        description="Reads of an unfinished run or response (`GET /v1/responses/{id}`) carry no "
        "`openai-poll-after-ms` header.",
    )
    # The Responses API of a gateway that proxies a chat-completions model (not OpenAI).
    responses_background_ignored: bool = Field(
        False,
        description="`background: true` is accepted but ignored: every response runs in the foreground. A "
        "non-streamed create answers only when the response has ended (after its turn time), never `queued`; "
        "a streamed create streams as a foreground one (no `response.queued` event, nothing kept to stream "
        "again). Responses created while this is on have no `background` key at all in any body or event "
        "(the store check for background responses is skipped too); cancel refuses them (400) as foreground.",
    )
    responses_retrieve_unsupported: bool = Field(
        False,
        description="`GET /v1/responses/{id}` (a retrieve, and a `?stream=true` resume) answers 500 "
        '`{"error": {"message": "not supported", "type": "server_error", "param": null, "code": null}}` '
        "for any ID, known or not.",
    )
    responses_cancel_unsupported: bool = Field(
        False,
        description="`POST /v1/responses/{id}/cancel` answers 500 with the error message `not supported` "
        "(`type: server_error`) for any ID; the response goes on.",
    )
    responses_background_stream_as_json: bool = Field(
        False,
        description="A create with both `background: true` and `stream: true` answers 200 with the queued "
        "response as plain JSON (`content-type: application/json`), not an event stream (the SDK then "
        "yields no events); the response runs in the background as usual, retrievable by its ID. "
        "(Under responses_background_ignored there is no background response: the create streams.)",
    )
    previous_response_id_ignored: bool = Field(
        False,
        description="`previous_response_id` is accepted but ignored, as by a stateless proxy: it is not looked "
        "up (an unknown ID is no error), the response sees only this request's input items, its "
        "`previous_response_id` is null, and `function_call_output` items whose call is not in the input are "
        "accepted (OpenAI: 400). The model, given tool outputs for calls it cannot see, follows no script and "
        "makes no calls: it answers with its default text (`You said: <text>` with a user message in the "
        "input, else `Hello from the durable-assistants emulator.`) and the response completes. A client "
        "that resends the whole history in `input` gets the right turn.",
    )
    conversations_absent: bool = Field(
        False,
        description="There is no Conversations API: every `/v1/conversations...` route answers 404 "
        '`{"error": {"message": "Not Found", "type": "invalid_request_error", "param": null, "code": null}}`, '
        "and a response create that names a `conversation` (even one created while this was off) answers "
        "404 `Conversation with id '<id>' not found.` (`param: conversation`) before anything is created.",
    )
    unknown_response_400: bool = Field(
        False,
        description="Retrieve (also `?stream=true`), cancel, delete and input_items of an unknown response ID "
        "answer 400 `invalid_request_error` `Response with id '<id>' not found.` (OpenAI: 404). An unknown "
        "`previous_response_id` on a create is still a 404.",
    )
    long_response_ids: bool = Field(
        False,
        description="Response IDs are 425 characters long (`resp_` and 420 letters and digits; OpenAI's are "
        "far shorter). Item IDs (`msg_`, `fc_`, `call_`) keep their usual length.",
    )

    def on(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name)]


COMPAT_SWITCHES: tuple[str, ...] = tuple(CompatConfig.model_fields)


# Model names the emulator knows, each with the dated snapshot the Responses API echoes for it
# (OpenAI answered `model: "gpt-4o-2024-08-06"` to a request for `gpt-4o`). A snapshot name is
# known too, and echoed as it is.
DEFAULT_MODELS: dict[str, str] = {
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-4": "gpt-4-0613",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "o1": "o1-2024-12-17",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
}


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
    models: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_MODELS),
        description="Known models, each mapped to the snapshot the Responses API echoes for it; any other "
        "model is a 400 `model_not_found`. A snapshot name is known and echoed as is. Map a name to itself "
        "to echo it unchanged.",
    )
    strict_spec: bool = Field(
        False,
        description="Enforce the pinned spec's letter where the real service was more lenient (e.g. "
        "`max_completion_tokens` of at least 256; the service took 16). Off: as the service did.",
    )
    compat: CompatConfig = Field(
        default_factory=CompatConfig, description="Compatibility switches: behave like a server that is not OpenAI."
    )


def resolve_model(config: EmulatorConfig, model: str) -> str | None:
    """The snapshot a known model resolves to (a snapshot resolves to itself); None if unknown."""
    if model in config.models:
        return config.models[model]
    return model if model in config.models.values() else None
