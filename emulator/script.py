"""The scripted model's language: what a test or demo writes to make the model behave.

A script is JSON. It reaches the model in one of these ways, first match wins:

1. in the newest user message of the thread, after a line that starts with ``@emulator``:
   ``@emulator {"rounds": [[{"name": "add", "arguments": {"a": 1, "b": 2}}]]}``
   or by name: ``@emulator my-scenario`` (a scenario stored with ``PUT /_emulator/scenarios/my-scenario``);
2. the run's (or the response's) metadata ``{"emulator_scenario": "my-scenario"}``;
3. the assistant's metadata ``{"emulator_scenario": "my-scenario"}`` (Assistants API only);
4. the server's default scenario (``PUT /_emulator/scenarios/default``).

On the Responses API "the newest user message" is the newest one in the response's whole
context: its conversation's items or its ``previous_response_id`` chain, then its input
(its input alone under ``compat.previous_response_id_ignored``).

With none of them, the model follows its default policy (see ``model.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MARKER = re.compile(r"^@emulator[ \t]+(?P<rest>.*)\Z", re.MULTILINE | re.DOTALL)
SCENARIO_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SCENARIO_METADATA_KEY = "emulator_scenario"


class ScriptError(ValueError):
    """A script that can't be used; the message says what is wrong."""


class ScriptedCall(BaseModel):
    """One tool call the model makes. ``count`` repeats it (each copy gets its own call ID)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = Field(
        None, description="Sent as the arguments string verbatim, e.g. malformed JSON for bad-input tests."
    )
    count: int = Field(1, ge=1, le=128)

    @model_validator(mode="after")
    def _one_kind_of_arguments(self) -> ScriptedCall:
        if self.arguments is not None and self.raw_arguments is not None:
            raise ValueError("give either 'arguments' or 'raw_arguments', not both")
        return self

    def arguments_text(self) -> str:
        if self.raw_arguments is not None:
            return self.raw_arguments
        return json.dumps(self.arguments or {}, separators=(",", ":"))


class Script(BaseModel):
    """What the model does in one run, turn by turn."""

    model_config = ConfigDict(extra="forbid")

    rounds: list[list[ScriptedCall]] = Field(
        default_factory=list, description="Tool-call rounds in order; each inner list is called in parallel."
    )
    reply: str | None = Field(
        None,
        description="Final assistant text. `{outputs}` becomes the tool outputs, one per line; "
        "`{user}` the user's message. Default: a summary of the tool outputs.",
    )
    end: Literal["completed", "incomplete", "failed"] = "completed"
    error_code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"] = "server_error"
    error_message: str | None = None
    incomplete_reason: Literal["max_completion_tokens", "max_prompt_tokens"] = "max_completion_tokens"
    turn_seconds: float | None = Field(None, ge=0, le=3600, description="Time per model turn.")
    chars_per_second: float | None = Field(None, gt=0, description="Streaming rate of the reply text.")
    chunk_chars: int | None = Field(None, ge=1, description="Characters per text delta.")


def parse_script(data: Any, *, source: str) -> Script:
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "script"
        raise ScriptError(f"invalid emulator script in {source}: {where}: {first['msg']}") from None


def find_directive(text: str) -> str | None:
    match = MARKER.search(text)
    return match.group("rest").strip() if match else None


def script_from_directive(directive: str, scenarios: dict[str, Script], *, source: str) -> Script:
    if directive.startswith("{"):
        try:
            data = json.loads(directive)
        except ValueError as exc:
            raise ScriptError(f"invalid emulator script in {source}: not JSON ({exc})") from None
        return parse_script(data, source=source)
    return named_scenario(directive, scenarios, source=source)


def choose_script(
    user_text: str,
    source: str,
    metadata_owners: Iterable[tuple[str, Mapping[str, str] | None]],
    scenarios: dict[str, Script],
) -> tuple[Script | None, str]:
    """The script for a new turn and the user text the model sees, whatever the API surface.

    ``user_text`` is the newest user message (``source`` names it in errors); a directive in
    it wins and is cut from the visible text. Then each ``(owner, metadata)`` is asked for an
    ``emulator_scenario``, in order; then the ``default`` scenario. Raises `ScriptError`.
    """
    directive = find_directive(user_text)
    if directive is not None:
        visible = user_text[: user_text.find("@emulator")].strip()
        return script_from_directive(directive, scenarios, source=source), visible
    for owner, metadata in metadata_owners:
        if metadata and SCENARIO_METADATA_KEY in metadata:
            return named_scenario(metadata[SCENARIO_METADATA_KEY], scenarios, source=owner), user_text
    return scenarios.get("default"), user_text


def named_scenario(name: str, scenarios: dict[str, Script], *, source: str) -> Script:
    try:
        return scenarios[name]
    except KeyError:
        known = ", ".join(sorted(scenarios)) or "none"
        raise ScriptError(f"unknown emulator scenario {name!r} in {source} (stored scenarios: {known})") from None
