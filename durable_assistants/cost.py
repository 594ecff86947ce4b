"""What a run cost: the Temporal actions read from its event history, and prices.

The workflow itself counts tokens (``RunResult.cost``: by turn and by model). Temporal actions
are read here, by the client, from the run's history (every run of it, across
continue-as-new), the way Temporal Cloud bills them: workflow starts, activity attempts,
signals, accepted updates, timers, child workflows and search-attribute upserts. Heartbeats
and queries are billed too but leave no event in a history, so they are not counted.

Prices come from configuration, never from code: ``DA_PRICES`` (JSON) or ``DA_PRICES_FILE``
(a path to the same JSON)::

    {"models": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}, "actions": 50}

(dollars per million tokens by model, and per million actions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import pydantic
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from durable_assistants.settings import json_setting
from durable_assistants.workflows.models import ActionCount, ModelPrice, ModelTokens, PriceTable, RunCost

PRICES_VARIABLE = "DA_PRICES"
PRICES_FILE_VARIABLE = "DA_PRICES_FILE"

# History events that are one action each (activity starts count their attempts instead).
_ONE_EACH = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "workflows_started",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
    EventType.EVENT_TYPE_TIMER_STARTED: "timers",
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "child_workflows",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "search_attribute_upserts",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "continued_as_new",
    EventType.EVENT_TYPE_MARKER_RECORDED: "markers",
}


class PricesError(ValueError):
    """The price table in the environment cannot be read; the message says where and why."""


def count_actions(events: Iterable[Any]) -> ActionCount:
    """The actions in one or more runs' history events."""
    counts = dict.fromkeys([*_ONE_EACH.values(), "activities_started", "activity_retries"], 0)
    for event in events:
        name = _ONE_EACH.get(event.event_type)
        if name is not None:
            counts[name] += 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            # Written once, when the activity closes, with the number of its last attempt.
            attempts = max(event.activity_task_started_event_attributes.attempt, 1)
            counts["activities_started"] += attempts
            counts["activity_retries"] += attempts - 1
    return ActionCount(**counts)


async def history_events(client: Client, workflow_id: str) -> list[Any]:
    """Every event of the workflow's runs, oldest run first: its latest run, and each run it
    continued from (``continued_execution_run_id`` of each run's start)."""
    runs: list[list[Any]] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.append(list(history.events))
        started = history.events[0].workflow_execution_started_event_attributes if history.events else None
        run_id = started.continued_execution_run_id if started is not None else ""
        if not run_id:
            break
    return [event for events in reversed(runs) for event in events]


async def run_actions(client: Client, workflow_id: str) -> ActionCount:
    return count_actions(await history_events(client, workflow_id))


def load_prices(environ: dict[str, str] | None = None) -> PriceTable | None:
    """The price table of ``DA_PRICES`` or ``DA_PRICES_FILE``; None when neither is set."""
    text, where = json_setting(environ, PRICES_VARIABLE, PRICES_FILE_VARIABLE, PricesError)
    if text is None:
        return None
    try:
        return PriceTable.model_validate(json.loads(text))
    except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)[:3]
        ) if isinstance(exc, pydantic.ValidationError) else str(exc)
        raise PricesError(f"{where} is not a price table ({detail}); see docs/cost.md") from None


# A dated snapshot name: `gpt-4o-2024-08-06`, `gpt-3.5-turbo-0125`.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


def price_of(prices: PriceTable, model: str) -> ModelPrice | None:
    """The price of ``model``: its own entry, else its base model's for a dated snapshot (the
    Responses API answers ``gpt-4o-2024-08-06`` to a request for ``gpt-4o``); None if neither."""
    found = prices.models.get(model)
    if found is None and _SNAPSHOT.search(model):
        found = prices.models.get(_SNAPSHOT.sub("", model))
    return found


def priced(cost: RunCost, prices: PriceTable | None) -> RunCost:
    """``cost`` with ``dollars`` (and what had no price) under ``prices``; unchanged without."""
    if prices is None:
        return cost
    dollars, unpriced = 0.0, []
    for used in cost.by_model:
        price = price_of(prices, used.model or "")
        if price is None:
            unpriced.append(f"model {used.model or 'unknown'}")
            continue
        dollars += (used.input_tokens * price.input + used.output_tokens * price.output) / 1_000_000
    if cost.actions is not None:
        if prices.actions is None:
            unpriced.append("actions")
        else:
            dollars += cost.actions.total * prices.actions / 1_000_000
    return cost.model_copy(update={"dollars": round(dollars, 6), "unpriced": unpriced})


async def full_cost(client: Client, workflow_id: str, tokens: RunCost | None, prices: PriceTable | None) -> RunCost:
    """The run's tokens (as the workflow counted them), its actions from the history, priced."""
    cost = (tokens or RunCost()).model_copy(update={"actions": await run_actions(client, workflow_id)})
    return priced(cost, prices)


def add_up(costs: Iterable[RunCost]) -> RunCost:
    """Several runs' costs as one (dollars summed only if every run was priced)."""
    costs = list(costs)
    by_model: dict[str, ModelTokens] = {}
    for used in (m for cost in costs for m in cost.by_model):
        known = by_model.get(used.model or "")
        by_model[used.model or ""] = used if known is None else known.plus(used)
    counted = [cost.actions for cost in costs if cost.actions is not None]
    actions = ActionCount(**{
        name: sum(getattr(a, name) for a in counted) for name in ActionCount.model_fields if name not in ("total", "heartbeats", "queries")
    })
    dollars = None if any(cost.dollars is None for cost in costs) else round(sum(cost.dollars or 0.0 for cost in costs), 6)
    return RunCost(
        input_tokens=sum(cost.input_tokens for cost in costs), output_tokens=sum(cost.output_tokens for cost in costs),
        by_model=list(by_model.values()), actions=actions, dollars=dollars,
        unpriced=sorted({item for cost in costs for item in cost.unpriced}),
    )
