"""What a run cost, end to end on both APIs: tokens by turn and model as the workflow counted
them, Temporal actions read from the history (checked here against the history's events,
counted independently), dollars from a price table, and the `cost` command."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

import tests.worker_tools  # noqa: F401  (registers flaky)
from durable_assistants import enqueue_run
from durable_assistants.cost import PricesError, load_prices, priced
from durable_assistants.workflows.models import ModelTokens, PriceTable, RunCost
from tests.apis import Api
from tests.conftest import script
from tests.test_cli import cli  # noqa: F401  (fixture)

PRICES = {"models": {"gpt-4o": {"input": 2.5, "output": 10}}, "actions": 50}


async def retried_run(client: Client, task_queue: str, api: Api) -> Any:
    """One round: a tool that fails twice, then succeeds (two activity retries), and one that doesn't."""
    calls = [{"name": "flaky", "arguments": {"succeed_on_attempt": 3}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]
    request = api.request([script(rounds=[calls], reply="done")])
    return await enqueue_run(client, request, request_id=f"cost-{uuid.uuid4()}", task_queue=task_queue)


async def test_a_run_with_retries_counts_its_tokens_and_actions_as_its_history_has_them(
    api: Api, temporal_client: Client, task_queue: str, workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DA_PRICES", json.dumps(PRICES))
    handle = await retried_run(temporal_client, task_queue, api)
    result = await handle.result()
    events = (await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()).events
    cost = result.cost
    assert cost is not None and cost.actions is not None

    # Tokens: each turn (Responses: each response; Assistants: the run), summed as the API's usage.
    assert result.usage is not None and (cost.input_tokens, cost.output_tokens) == (result.usage.prompt_tokens, result.usage.completion_tokens)
    assert len(cost.turns) == (2 if api.name == "responses" else 1)
    assert [t.id for t in cost.turns] == (result.response_ids if api.name == "responses" else [result.run_id])
    assert sum(t.input_tokens for t in cost.turns) == cost.input_tokens and sum(t.output_tokens for t in cost.turns) == cost.output_tokens
    # The Responses API echoes the snapshot; it is priced as gpt-4o (below).
    model = "gpt-4o-2024-08-06" if api.name == "responses" else "gpt-4o"
    assert [(m.model, m.turns, m.input_tokens) for m in cost.by_model] == [(model, len(cost.turns), cost.input_tokens)]

    # Actions, against the history's own events.
    def count(kind: int) -> int:
        return sum(1 for e in events if e.event_type == kind)

    scheduled = count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    flaky = next(r for r in result.tool_calls if r.name == "flaky")
    assert flaky.attempts == 3
    assert cost.actions.activity_retries == 2
    assert cost.actions.activities_started == scheduled + 2
    assert cost.actions.workflows_started == 1 and cost.actions.continued_as_new == 0
    assert cost.actions.search_attribute_upserts == count(EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) > 0
    assert cost.actions.signals == count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    assert cost.actions.updates == count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    assert cost.actions.total == (
        1 + cost.actions.activities_started + cost.actions.signals + cost.actions.updates + cost.actions.timers
        + cost.actions.search_attribute_upserts
    )
    assert cost.actions.heartbeats is None and cost.actions.queries is None  # not in a history
    # Dollars: the table's prices, nothing unpriced.
    expected = (cost.input_tokens * 2.5 + cost.output_tokens * 10 + cost.actions.total * 50) / 1_000_000
    assert cost.dollars == pytest.approx(expected, abs=1e-6) and cost.unpriced == []


async def test_the_cost_command_sums_runs(api: Api, temporal_client: Client, task_queue: str, workers: None, cli: Any) -> None:
    handles = [await retried_run(temporal_client, task_queue, api) for _ in range(2)]
    results = [await h.result() for h in handles]
    code, out, err = await cli("cost", "--task-queue", task_queue, "--json", env={"DA_PRICES": json.dumps(PRICES)})
    assert code == 0, err
    summed = json.loads(out)

    assert summed["runs"] == 2
    assert summed["cost"]["input_tokens"] == sum(r.cost.input_tokens for r in results if r.cost)
    assert summed["cost"]["actions"]["total"] == sum(r.cost.actions.total for r in results if r.cost and r.cost.actions)
    assert summed["cost"]["actions"]["activity_retries"] == 4
    priced = (summed["cost"]["input_tokens"] * 2.5 + summed["cost"]["output_tokens"] * 10 + summed["cost"]["actions"]["total"] * 50) / 1e6
    assert summed["cost"]["dollars"] == pytest.approx(priced, abs=1e-6) and summed["cost"]["dollars"] > 0
    code, out, err = await cli("cost", "--task-queue", task_queue)
    assert code == 0 and out.startswith("2 runs: ") and "activity attempts (4 retries)" in out, out
    assert "no price table" in out


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DA_PRICES": "{"}, "DA_PRICES is not a price table"),
        ({"DA_PRICES": '{"models": {"gpt-4o": {"input": -1, "output": 1}}}'}, "models.gpt-4o.input: Input should be greater than or equal to 0"),
        ({"DA_PRICES": '{"modles": {}}'}, "modles: Extra inputs are not permitted"),
        ({"DA_PRICES_FILE": "/nonexistent/prices.json"}, "DA_PRICES_FILE=/nonexistent/prices.json: cannot read it"),
    ],
)
def test_a_price_table_that_cannot_be_read_says_why(environ: dict[str, str], message: str) -> None:
    with pytest.raises(PricesError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_prices(environ)


def test_no_price_table_prices_nothing() -> None:
    assert load_prices({}) is None


def test_a_dated_snapshot_is_priced_as_its_model_unless_it_has_its_own_price() -> None:
    prices = PriceTable.model_validate({"models": {"gpt-4o": {"input": 2.5, "output": 10}, "gpt-3.5-turbo": {"input": 0.5, "output": 1.5}, "gpt-4o-2024-05-13": {"input": 5, "output": 15}}})
    used = [ModelTokens(model=m, turns=1, input_tokens=1_000_000, output_tokens=0) for m in ("gpt-4o-2024-08-06", "gpt-4o-2024-05-13", "gpt-3.5-turbo-0125", "gpt-4o-mini-2024-07-18")]
    cost = priced(RunCost(by_model=used), prices)
    assert cost.dollars == pytest.approx(2.5 + 5 + 0.5)
    assert cost.unpriced == ["model gpt-4o-mini-2024-07-18"]
