"""The cross-language contract: committed JSON Schemas match the models, and a run can be
enqueued and read back with nothing but the `temporal` CLI and JSON."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import jsonschema
import pytest
from openai import OpenAI

from durable_assistants.devstack.temporal import TemporalDevServer, temporal_binary
from durable_assistants.schemas import SCHEMA_DIR, SCHEMAS, render
from tests.conftest import script
from tests.test_worker_runs import TOOLS


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schemas_match_the_models(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.exists(), f"{path} is missing; run `python -m durable_assistants.schemas`"
    assert path.read_text() == render(SCHEMAS[name]), f"{path.name} drifted from the model; run `python -m durable_assistants.schemas`"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())




@pytest.mark.parametrize("backend", ["assistants", "responses"])
async def test_a_run_enqueued_with_the_temporal_cli_and_plain_json(
    backend: str, temporal_server: TemporalDevServer, task_queue: str, workers: None, client: OpenAI
) -> None:
    if backend == "assistants":
        agent: dict[str, Any] = {"assistant_id": client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id}  # type: ignore[arg-type]
    else:
        agent = {"backend": "responses", "model": "gpt-4o", "instructions": "Be brief."}
    run_input = {
        **agent,
        "messages": [{"content": "Weather?\n" + script(rounds=[[{"name": "get_weather", "arguments": {"city": "Lima"}}]])}],
        "mode": "stream",
    }
    jsonschema.validate(run_input, schema("run-request"))
    workflow_id = f"assistant-run/cli-{uuid.uuid4().hex[:8]}"
    command = [
        temporal_binary(), "workflow", "execute",
        "--address", temporal_server.address,
        "--type", "AssistantRun",
        "--task-queue", task_queue,
        "--workflow-id", workflow_id,
        "--input", json.dumps(run_input),
        "--output", "json",
    ]
    # Not subprocess.run: the in-process workers share this event loop and must keep running.
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout)["result"]
    # The CLI re-renders the result payload (keys sorted) and prints an empty array as null;
    # the payload itself holds [] (pydantic JSON). Read it as the payload says.
    result = _empty_arrays(result, schema("run-result"), schema("run-result"))
    jsonschema.validate(result, schema("run-result"))
    assert result["backend"] == backend and len(result["response_ids"]) == (0 if backend == "assistants" else 2)
    assert result["status"] == "completed" and result["tool_calls"][0]["name"] == "get_weather"
    assert '"city": "Lima"' in result["final_text"]


def _empty_arrays(value: Any, node: dict[str, Any], root: dict[str, Any]) -> Any:
    """``value`` with each null the schema says is an array read as [] (nested objects too)."""
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    for option in node.get("anyOf", []):
        if value is not None and option.get("type") != "null":
            return _empty_arrays(value, option, root)
    if isinstance(value, dict) and "properties" in node:
        out = {}
        for key, item in value.items():
            prop = node["properties"].get(key, {})
            out[key] = [] if item is None and prop.get("type") == "array" else _empty_arrays(item, prop, root)
        return out
    if isinstance(value, list) and "items" in node:
        return [_empty_arrays(item, node["items"], root) for item in value]
    return value
