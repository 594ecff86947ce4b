"""Screenshots of the Temporal UI for docs/ui.md, taken with a real headless Chromium.

Starts the local stack (a Temporal dev server with its UI, the emulator, in-process workers),
creates an assistant, and puts runs in each state an operator meets: completed (two rounds,
parallel tools), failed (a tool whose policy is fail_run), cancelled (cancelled during a slow
tool), running (a long tool reporting progress) and queued (three runs on one thread, two of
them waiting). Then it saves the workflow list, each run's page and the thread queue's page
as PNG files under docs/ui/, and stops everything it started.

    apt-get install chromium chromium-driver                  # Debian's Chromium and its chromedriver
    .venv/bin/python devstack/ui_screenshots.py               # writes docs/ui/*.png
    .venv/bin/python devstack/ui_screenshots.py --out /tmp/shots

Chromium is driven through chromedriver's WebDriver HTTP API with httpx, which the project
already has: no browser-automation package, nothing downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.chdir(REPO)  # as the demo runs it

import httpx  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

import durable_assistants.tools.examples  # noqa: E402,F401  (registers the example tools)
from durable_assistants import enqueue_run, worker  # noqa: E402
from durable_assistants.client import RunHandle  # noqa: E402
from durable_assistants.devstack.temporal import TemporalDevServer, free_port  # noqa: E402
from durable_assistants.emulator.server import EmulatorProcess  # noqa: E402
from durable_assistants.processes import die_with_parent, stop_process  # noqa: E402
from durable_assistants.tools import registry, tool  # noqa: E402
from durable_assistants.workflows.models import MessageInput, RunRequest  # noqa: E402
from durable_assistants.workflows.thread_queue import queue_workflow_id  # noqa: E402

WINDOW = (1400, 900)


@tool(max_attempts=2, initial_retry=timedelta(milliseconds=200), on_failure="fail_run")
def reserve_inventory(sku: str, quantity: int) -> str:
    """Reserve stock for an order; the run can't go on without it (here the stock service is down)."""
    raise RuntimeError(f"stock service unavailable: could not reserve {quantity} x {sku}")


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# What the emulator's scripted model does in each run (docs/emulator.md): stored scenarios,
# named in the run's metadata, so the user messages (and the workflows' summaries) stay plain.
SCENARIOS: dict[str, list[list[dict[str, Any]]]] = {
    "ui-completed": [
        [call("get_weather", city="Lisbon"), call("get_weather", city="Oslo"), call("city_population", city="Lisbon")],
        [call("convert_temperature", value=24, to="fahrenheit"), call("convert_temperature", value=7, to="fahrenheit")],
    ],
    "ui-failed": [[call("get_weather", city="Porto"), call("reserve_inventory", sku="MUG-BLUE", quantity=3)]],
    "ui-cancelled": [[call("compile_report", topic="Oslo", sections=60)]],
    "ui-running": [[call("get_weather", city="Lisbon"), call("compile_report", topic="Lisbon", sections=300)]],
    "ui-thread-1": [[call("compile_report", topic="Porto", sections=300)]],
    "ui-thread-2": [[call("get_weather", city="Porto")]],
    "ui-thread-3": [[call("city_population", city="Porto")]],
}
QUESTIONS = {
    "ui-completed": "Compare the weather in Lisbon and Oslo, in Fahrenheit.",
    "ui-failed": "Order 3 blue mugs and tell me the weather in Porto.",
    "ui-cancelled": "Compile a long report on Oslo.",
    "ui-running": "Compile a long report on Lisbon.",
    "ui-thread-1": "Compile a long report on Porto.",
    "ui-thread-2": "And the weather in Porto?",
    "ui-thread-3": "How many people live in Porto?",
}


def request(agent: str, name: str, thread_id: str | None = None) -> RunRequest:
    return RunRequest(
        assistant_id=agent, thread_id=thread_id, messages=[MessageInput(content=QUESTIONS[name])],
        metadata={"emulator_scenario": name},
    )


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def heartbeats(client: Client, workflow_id: str, at_least: int) -> bool:
    """The workflow has a pending tool call whose progress (compile_report's) is past ``at_least`` sections."""
    description = await client.get_workflow_handle(workflow_id).describe()
    for activity in description.raw_description.pending_activities:
        if activity.heartbeat_details.payloads:
            details = json.loads(activity.heartbeat_details.payloads[0].data)  # {"tool", "call_id", "progress"}
            progress = details.get("progress") if isinstance(details, dict) else None
            if isinstance(progress, dict) and progress.get("section", 0) >= at_least:
                return True
    return False


async def visible(client: Client, query: str, count: int) -> bool:
    """The server's visibility lists at least ``count`` workflows for ``query`` (it lags ~1 s)."""
    return len([w async for w in client.list_workflows(query)]) >= count


async def put_runs_in_states(client: Client, model: AsyncOpenAI, admin_url: str) -> dict[str, str]:
    """Runs in each state; returns the workflow IDs (and the waiting run's queue's thread)."""
    async with httpx.AsyncClient(base_url=admin_url, timeout=10) as admin:
        for name, rounds in SCENARIOS.items():
            (await admin.put(f"/scenarios/{name}", json={"rounds": rounds, "reply": "Done:\n{outputs}"})).raise_for_status()
    assistant = await model.beta.assistants.create(
        model="gpt-4o-mini", name="ui-screenshots", instructions="Use the tools, then answer briefly.",
        tools=registry.schemas(),  # type: ignore[arg-type]
    )
    agent = assistant.id
    print(f"assistant {agent}", flush=True)

    completed = await enqueue_run(client, request(agent, "ui-completed"), request_id="ui-completed")
    failed = await enqueue_run(client, request(agent, "ui-failed"), request_id="ui-failed")
    cancelled = await enqueue_run(client, request(agent, "ui-cancelled"), request_id="ui-cancelled")
    running = await enqueue_run(client, request(agent, "ui-running"), request_id="ui-running")
    # Three runs on one thread: the first is slow, so the other two wait in the thread's queue.
    thread = await model.beta.threads.create()
    queued: list[RunHandle] = []
    for name in ("ui-thread-1", "ui-thread-2", "ui-thread-3"):
        queued.append(await enqueue_run(client, request(agent, name, thread.id), request_id=name))
        if len(queued) == 1:
            await queued[0].started()

    for handle in (completed, failed):
        print(f"{handle.workflow_id}: {(await handle.result()).status}", flush=True)
    await wait_for("the cancelled run's tool to report progress", lambda: heartbeats(client, cancelled.workflow_id, 1))
    await cancelled.cancel()
    print(f"{cancelled.workflow_id}: {(await cancelled.result()).status}", flush=True)
    await wait_for("the running run's tool to report progress", lambda: heartbeats(client, running.workflow_id, 2))
    print(f"{running.workflow_id}: running; {queued[0].workflow_id}: running, 2 waiting on {thread.id}", flush=True)
    return {
        "completed": completed.workflow_id, "failed": failed.workflow_id, "cancelled": cancelled.workflow_id,
        "running": running.workflow_id, "waiting": queued[1].workflow_id, "queue": queue_workflow_id(thread.id),
    }


class Browser:
    """Headless Chromium driven through chromedriver's WebDriver HTTP API (httpx; no other
    package). The UI is a JavaScript app that keeps polling, so each page is taken once the
    text that matters is on it, plus a moment for rendering."""

    def __init__(self, chromium: str, chromedriver: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [chromedriver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.profile = tempfile.mkdtemp(prefix="ui-screenshots-chromium-")
        self.session = ""
        try:
            self._start(chromium)
        except BaseException:
            self.close()
            raise

    def _start(self, chromium: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.2)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                f"--user-data-dir={self.profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]
        # The window size includes the (headless) browser's frame: set the page's viewport itself.
        metrics = {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False}
        self._call("POST", f"/session/{self.session}/goog/cdp/execute", {"cmd": "Emulation.setDeviceMetricsOverride", "params": metrics})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, path, json=body)
        value = response.json().get("value")
        if response.status_code != 200:
            raise RuntimeError(f"WebDriver {method} {path}: {value}")
        return value

    def shoot(self, url: str, path: Path, wait_for_text: str, settle: float = 1.5, timeout: float = 30.0) -> None:
        base = f"/session/{self.session}"
        self._call("POST", f"{base}/url", {"url": url})
        deadline = time.monotonic() + timeout
        while wait_for_text not in self._call("POST", f"{base}/execute/sync", {"script": "return document.body.innerText", "args": []}):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not show {wait_for_text!r} within {timeout:.0f} s")
            time.sleep(0.3)
        time.sleep(settle)  # the timeline, the JSON views and the details render after the data arrives
        path.write_bytes(base64.b64decode(self._call("GET", f"{base}/screenshot")))
        print(f"  {path.relative_to(REPO) if path.is_relative_to(REPO) else path}  <-  {url}", flush=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.session:
                self._call("DELETE", f"/session/{self.session}")  # quits Chromium
        self.http.close()
        stop_process(self.process, timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


async def run_page(client: Client, ui: str, workflow_id: str, tab: str = "") -> str:
    """A workflow's page in the UI: /namespaces/default/workflows/<id>/<run id>/<tab>
    (the UI redirects /workflows/<id> to its latest run's timeline)."""
    url = f"{ui}/namespaces/default/workflows/{quote(workflow_id, safe='')}"
    if tab:
        url += f"/{(await client.get_workflow_handle(workflow_id).describe()).run_id}/{tab}"
    return url


async def main(args: argparse.Namespace) -> int:
    # Errors only: the failed run's tool failures, and the progress of the tools stopped at
    # the end, are expected warnings here.
    worker.configure_logging("console", "error")
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    chromium = args.chromium or shutil.which("chromium")
    chromedriver = args.chromedriver or shutil.which("chromedriver")
    if not chromium or not chromedriver:
        print("ui_screenshots: needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        log = Path(tempfile.gettempdir()) / "ui-screenshots-temporal.log"
        server = stack.enter_context(TemporalDevServer(ui=True, log_file=log))
        emulator = stack.enter_context(EmulatorProcess())
        print(f"Temporal {server.address}, UI {server.ui_url}, emulator {emulator.base_url}", flush=True)
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-local")
        workers = worker.build_workers(client, model, registry, graceful_shutdown_timeout=timedelta(seconds=2))
        async with worker.WorkerGroup(workers):
            runs = await put_runs_in_states(client, model, emulator.admin_url)
            # Six workflows: four runs, the thread's queue and its first run (the waiting two have none yet).
            await wait_for("the list to show every workflow", lambda: visible(client, "", 6), timeout=30)
            await asyncio.sleep(2)  # the last search-attribute updates
            ui = str(server.ui_url)
            waiting = f'QueuedRuns = "{runs["waiting"]}"'
            shots = [  # (file, page, text to wait for[, seconds to let it render])
                ("list", f"{ui}/namespaces/default/workflows", runs["completed"]),
                ("run-completed", await run_page(client, ui, runs["completed"]), "final_text"),
                ("run-failed", await run_page(client, ui, runs["failed"]), "run failed"),
                ("run-cancelled", await run_page(client, ui, runs["cancelled"]), "CanceledEventAttributes"),
                ("run-running", await run_page(client, ui, runs["running"], "pending-activities"), "Heartbeat Details"),
                ("run-queued", f"{ui}/namespaces/default/workflows?query={quote(waiting)}", "ThreadQueue"),
                # The details are markdown the UI renders in a frame of its own: not in the page's text.
                ("queue", await run_page(client, ui, runs["queue"], "user-metadata"), "Current Details", 3.0),
            ]
            browser = Browser(chromium, chromedriver)
            try:
                for name, url, text, *settle in shots:
                    # In a thread: the workers keep serving (and heartbeating) meanwhile.
                    await asyncio.to_thread(browser.shoot, str(url), out / f"{name}.png", str(text), *(float(s) for s in settle))
            finally:
                browser.close()
            # End what still runs, so the workers have nothing left to finish.
            async for found in client.list_workflows("ExecutionStatus = 'Running'"):
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle(found.id).terminate("ui_screenshots done")
        await model.close()
    print("stopped; nothing left running", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "ui"), help="where the PNG files go (default: docs/ui)")
    parser.add_argument("--chromium", help="the Chromium binary (default: chromium on PATH)")
    parser.add_argument("--chromedriver", help="its WebDriver (default: chromedriver on PATH)")
    code = asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK's runtime threads can abort a finalizing interpreter (sdk-python#300).
    os._exit(code)
