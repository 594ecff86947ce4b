"""Operating a worker: its Prometheus metrics (the SDK's and the project's own, one endpoint),
its health endpoints and `durable-assistants healthcheck`, and OpenTelemetry traces of a run.
Against a real dev server, the emulator, and a worker process where the test is about one."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

from durable_assistants import enqueue_run, worker
from durable_assistants.devstack.temporal import TemporalDevServer, free_port
from durable_assistants.health import Health, serving
from durable_assistants.processes import die_with_parent, stop_process
from durable_assistants.tools import registry
from durable_assistants.workflows.models import RunRequest
from tests.conftest import script
from tests.test_worker_runs import TOOLS, message
from tests.test_worker_startup import run_cli

REPO = Path(__file__).parent.parent


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


async def until(probe: Any, what: str, limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a Prometheus text exposition, by sample name, parsed by the reference parser."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(value for got, value in found.get(name, []) if all(got.get(k) == v for k, v in labels.items()))


async def test_a_worker_serves_its_metrics_and_health_and_healthcheck_reads_them(
    temporal_server: TemporalDevServer, temporal_client: Client, emulator: Any, client: OpenAI, admin: httpx.Client, task_queue: str, tmp_path: Path
) -> None:
    metrics_port, health_port = free_port(), free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "OPENAI_BASE_URL": emulator.base_url,
        "OPENAI_API_KEY": "sk-test",
        "DA_TOOL_MODULES": "tests.worker_tools,durable_assistants.tools.examples",
        "DA_LOG_FORMAT": "json",
        "DA_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        "DA_HEALTH_ADDRESS": f"127.0.0.1:{health_port}",
    }
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "worker.py", "--task-queue", task_queue], cwd=REPO, env=env, stdout=out, stderr=out, preexec_fn=die_with_parent
        )
    try:
        await until(lambda: get(f"http://127.0.0.1:{health_port}/readyz")[0] == 200, "the worker to be ready")
        status, body = get(f"http://127.0.0.1:{health_port}/livez")
        assert status == 200 and json.loads(body)["alive"] is True
        probe = run_cli("healthcheck", env={"DA_HEALTH_ADDRESS": f"127.0.0.1:{health_port}"})
        assert probe.returncode == 0 and "/readyz: 200" in probe.stdout, probe.stderr

        # One run with a tool round and a model API error the activity recovers from.
        admin.post("/faults", json={"operation": "runs.retrieve", "nth": 1, "status": 503}).raise_for_status()
        assistant_id = client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]
        request = RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=[[{"name": "structured", "arguments": {"n": 2}}]], reply="ok"))])
        handle = await enqueue_run(temporal_client, request, task_queue=task_queue)
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.status == "completed", log.read_text()

        def scraped() -> dict[str, Any] | None:
            status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
            found = samples(text) if status == 200 else {}
            return found if total(found, "durable_assistants_runs_ended_total", status="completed") >= 1 else None

        found = await until(scraped, "the run's end in the metrics")
        assert total(found, "durable_assistants_runs_started_total", api="assistants") == 1
        assert total(found, "durable_assistants_runs_ended_total", api="assistants", status="completed") == 1
        assert total(found, "durable_assistants_run_rounds_count", status="completed") == 1
        assert total(found, "durable_assistants_run_rounds_sum", status="completed") == 1
        assert total(found, "durable_assistants_tool_calls_total", tool="structured", outcome="ok") == 1
        assert total(found, "durable_assistants_tool_call_duration_count", tool="structured", outcome="ok") == 1
        assert total(found, "durable_assistants_model_api_errors_total", status_code="503", retryable="true") == 1
        usage = result.usage
        assert usage is not None and usage.prompt_tokens > 0
        assert total(found, "durable_assistants_tokens_total", api="assistants", kind="prompt") == usage.prompt_tokens
        assert total(found, "durable_assistants_tokens_total", api="assistants", kind="completion") == usage.completion_tokens
        # The SDK's own metrics share the endpoint (the activity's labels come from the SDK).
        assert total(found, "temporal_activity_execution_latency_count", activity_type="structured") >= 1
        assert any(labels.get("task_queue") == task_queue for labels, _ in found["durable_assistants_tool_calls_total"])

        # The example dashboard and alert rules use only metrics a worker exports.
        used = set()
        for doc in (REPO / "docs" / "monitoring").iterdir():
            used |= set(re.findall(r"\b(?:durable_assistants|temporal)_[a-z_]+", doc.read_text()))
        assert used and not sorted(used - set(found)), sorted(used - set(found))

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        failed = run_cli("healthcheck", f"http://127.0.0.1:{health_port}/readyz")
        assert failed.returncode == 1 and "Traceback" not in failed.stderr and failed.stderr.strip(), failed.stderr
    finally:
        stop_process(process)


def test_liveness_fails_when_the_event_loop_stops_ticking_and_readiness_follows_the_workers() -> None:
    health = Health()
    with serving(health, "127.0.0.1:0") as (host, port):
        assert get(f"http://{host}:{port}/livez")[0] == 200
        status, body = get(f"http://{host}:{port}/readyz")
        assert status == 503 and json.loads(body) == {"ready": False, "reason": "starting"}
        health.set_ready(True, "polling q")
        assert get(f"http://{host}:{port}/readyz")[0] == 200
        health.last_tick -= 60  # the loop has not ticked for a minute (a blocked event loop)
        status, body = get(f"http://{host}:{port}/livez")
        assert status == 503 and json.loads(body)["alive"] is False
        assert get(f"http://{host}:{port}/nope")[0] == 404


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DA_METRICS_ADDRESS", "localhost", "worker: DA_METRICS_ADDRESS='localhost' is not host:port (for example 0.0.0.0:8080)"),
        ("DA_HEALTH_ADDRESS", "0.0.0.0:99999", "worker: DA_HEALTH_ADDRESS='0.0.0.0:99999' is not host:port (for example 0.0.0.0:8080)"),
        ("DA_TRACING", "jaeger", "worker: DA_TRACING='jaeger' is not one of off, otel"),
    ],
)
def test_bad_observability_settings_stop_the_worker_in_one_line(variable: str, value: str, expected: str) -> None:
    done = run_cli("worker", env={variable: value, "TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [expected]


async def test_one_trace_covers_enqueue_the_workflow_every_model_step_and_tool(
    temporal_server: TemporalDevServer, emulator: Any, client: OpenAI, task_queue: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = await Client.connect(
        temporal_server.address, data_converter=pydantic_data_converter, interceptors=[TracingInterceptor(provider.get_tracer("test"))]
    )
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    assistant_id = client.beta.assistants.create(model="gpt-4o", tools=TOOLS).id  # type: ignore[arg-type]
    rounds = [[{"name": "structured", "arguments": {"n": 1}}], [{"name": "structured", "arguments": {"n": 2}}]]
    request = RunRequest(assistant_id=assistant_id, messages=[message(script(rounds=rounds, reply="done"))])
    async with worker.WorkerGroup(worker.build_workers(traced, model, registry, task_queue)):
        handle = await enqueue_run(traced, request, task_queue=task_queue)
        result = await asyncio.wait_for(handle.result(), 60)
    await model.close()
    assert result.status == "completed" and result.rounds == 2

    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert len({s.context.trace_id for s in spans}) == 1, names  # one trace, from enqueue on
    roots = [s for s in spans if s.parent is None]
    assert [s.name for s in roots] == ["StartWorkflow:AssistantRun"]
    for name in ("RunWorkflow:AssistantRun", "RunActivity:create_thread", "RunActivity:start_run"):
        assert name in names
    assert names.count("RunActivity:structured") == 2 and names.count("RunActivity:submit_tool_outputs") == 2
    by_id = {s.context.span_id: s for s in spans}

    def ancestors(span: Any) -> list[str]:
        chain = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            chain.append(span.name)
        return chain

    tools = [s for s in spans if s.name == "RunActivity:structured"]
    call_ids = sorted(c.call_id for c in result.tool_calls)
    assert sorted(s.attributes["durable_assistants.call_id"] for s in tools) == call_ids
    for span in tools:
        assert span.attributes["durable_assistants.run_id"] == result.run_id
        assert span.attributes["durable_assistants.thread_id"] == result.thread_id
        # The SDK's tree: the workflow and its activity starts hang off the enqueue's span.
        assert ancestors(span) == ["StartActivity:structured", "StartWorkflow:AssistantRun"]
    assert ancestors(next(s for s in spans if s.name == "RunWorkflow:AssistantRun")) == ["StartWorkflow:AssistantRun"]
    start = next(s for s in spans if s.name == "RunActivity:start_run")
    assert start.attributes["durable_assistants.run_id"] == result.run_id
