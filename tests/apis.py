"""The two model APIs as the worker tests see them, behind one small interface.

A worker test takes the ``api`` fixture (parametrized: ``assistants`` and ``responses``) and
asks it for a request, a thread or conversation, and what the emulator saw, so that one test
body proves the same behaviour on both backends. Each side reads the API's own objects and the
emulator's counters in its own terms; the tests compare the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openai import OpenAI

from durable_assistants.tools import registry
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult

MODEL = "gpt-4o"


@dataclass
class Seen:
    """What the emulator counted for one run, in API-neutral terms."""

    turns_created: int  # runs (Assistants) or responses (Responses)
    user_messages: int  # user messages stored in the thread, conversation or chain
    rounds_submitted: int  # rounds of tool outputs the API accepted


class AssistantsApi:
    name = "assistants"

    def __init__(self, client: OpenAI) -> None:
        self.client = client
        tools = [t.schema() for t in registry]
        self.assistant_id = client.beta.assistants.create(model=MODEL, name="worker-test", tools=tools).id  # type: ignore[arg-type]

    def request(self, messages: list[str], *, context: str | None = None, **fields: Any) -> RunRequest:
        return RunRequest(
            assistant_id=self.assistant_id, thread_id=context, messages=[MessageInput(content=m) for m in messages], **fields
        )

    def new_context(self) -> str:
        return self.client.beta.threads.create().id

    def api_status(self, result: RunResult) -> str:
        """The status the API itself reports for the run's last turn."""
        assert result.thread_id is not None
        return self.client.beta.threads.runs.retrieve(thread_id=result.thread_id, run_id=result.run_id).status

    def tool_outputs_seen(self, result: RunResult) -> list[str]:
        """The first round's tool outputs as the model received them."""
        assert result.thread_id is not None
        steps = self.client.beta.threads.runs.steps.list(thread_id=result.thread_id, run_id=result.run_id, order="asc").data
        return [c.function.output for c in steps[0].step_details.tool_calls]  # type: ignore[union-attr]

    def seen(self, stats: dict[str, Any], result: RunResult) -> Seen:
        assert result.thread_id is not None
        thread = stats["threads"].get(result.thread_id, {})
        return Seen(
            turns_created=thread.get("runs_created", 0),
            user_messages=thread.get("user_messages_created", 0),
            rounds_submitted=stats["runs"].get(result.run_id, {}).get("submits_accepted", 0),
        )

    # The API's own status for a run the worker stopped: the worker cancelled the run.
    status_after_stop = "cancelled"

    def turns(self, rounds: int) -> int:
        """API objects a run of ``rounds`` tool rounds creates: one run."""
        return 1

    def tag_of(self, result: RunResult) -> dict[str, str]:
        assert result.thread_id is not None
        run = self.client.beta.threads.runs.retrieve(thread_id=result.thread_id, run_id=result.run_id)
        return dict(run.metadata or {})


class ResponsesApi:
    """Requests name no backend: the worker serving them defaults to Responses (``api`` sets that)."""

    name = "responses"

    def __init__(self, client: OpenAI) -> None:
        self.client = client

    def request(self, messages: list[str], *, context: str | None = None, **fields: Any) -> RunRequest:
        return RunRequest(
            model=MODEL,
            instructions="Be brief.",
            conversation_id=context,
            messages=[MessageInput(content=m) for m in messages],
            **fields,
        )

    def new_context(self) -> str:
        return self.client.conversations.create().id

    def api_status(self, result: RunResult) -> str:
        return self.client.responses.retrieve(result.run_id).status or "none"

    def tool_outputs_seen(self, result: RunResult) -> list[str]:
        assert len(result.response_ids) >= 2, result.response_ids
        items = self.client.responses.input_items.list(result.response_ids[1], order="asc").data
        return [item.output for item in items if item.type == "function_call_output"]  # type: ignore[union-attr,misc]

    def seen(self, stats: dict[str, Any], result: RunResult) -> Seen:
        responses = {rid: c for rid, c in stats["runs"].items() if c.get("responses_created")}
        if result.thread_id is not None:
            items = self.client.conversations.items.list(result.thread_id, order="asc", limit=100).data
            user_messages = sum(1 for i in items if i.type == "message" and i.role == "user")  # type: ignore[union-attr]
        else:
            first = result.response_ids[0]
            items = self.client.responses.input_items.list(first, order="asc", limit=100).data
            user_messages = sum(1 for i in items if i.type == "message" and i.role == "user")  # type: ignore[union-attr]
        return Seen(
            turns_created=len(responses),
            user_messages=user_messages,
            rounds_submitted=sum(1 for c in responses.values() if c.get("function_call_outputs_accepted")),
        )

    # A stopped run's last response had ended already, with the calls nobody will answer.
    status_after_stop = "completed"

    def turns(self, rounds: int) -> int:
        """API objects a run of ``rounds`` tool rounds creates: one response per turn."""
        return rounds + 1

    def tag_of(self, result: RunResult) -> dict[str, str]:
        return dict(self.client.responses.retrieve(result.run_id).metadata or {})


Api = AssistantsApi | ResponsesApi
