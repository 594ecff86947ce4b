"""The worker's health endpoints (``DA_HEALTH_ADDRESS``, host:port) for Kubernetes probes and
Docker's HEALTHCHECK, and ``durable-assistants healthcheck``, the probe a slim image runs.

- ``GET /livez``: 200 while the worker's event loop answers (a tick it sets every second is
  younger than ``STALE_SECONDS``); 503 when the loop is blocked (a sync call in an async tool,
  say), so the orchestrator restarts a process that can no longer do its work.
- ``GET /readyz``: 200 once every Temporal worker of the process polls, until it starts to
  shut down; 503 before and after (and when a worker stopped by itself).

The server is the standard library's, on a thread of its own: it must answer while the event
loop it watches is stuck, and it serves two fixed answers, nothing that needs a framework.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from durable_assistants.arguments import Parser  # usage errors in one line, as every command's

STALE_SECONDS = 30.0
TICK_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 5.0


def parse_address(text: str, variable: str = "DA_HEALTH_ADDRESS") -> tuple[str, int]:
    """``host:port`` (``:port`` or ``port`` alone: all interfaces); ``ValueError`` naming the value."""
    host, _, port = text.strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number < 65536:  # 0: any free port
        raise ValueError(f"{variable}={text!r} is not host:port (for example 0.0.0.0:8080)")
    return host.strip("[]") or "0.0.0.0", number


class Health:
    """What the endpoints report; the worker sets ``ready`` and runs ``tick`` on its loop."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"
        self.last_tick = time.monotonic()

    async def tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(TICK_SECONDS)

    def set_ready(self, ready: bool, reason: str) -> None:
        self.ready, self.reason = ready, reason

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/livez":
            age = time.monotonic() - self.last_tick
            alive = age < STALE_SECONDS
            return (200 if alive else 503), {"alive": alive, "event_loop_seconds_since_tick": round(age, 1)}
        if path == "/readyz":
            return (200 if self.ready else 503), {"ready": self.ready, "reason": self.reason}
        return 404, {"error": f"no such endpoint {path!r}; try /livez or /readyz"}


@contextlib.contextmanager
def serving(health: Health, address: str) -> Iterator[tuple[str, int]]:
    """Serve ``health`` on ``address`` on a daemon thread; yields the bound (host, port)."""
    host, port = parse_address(address)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            status, body = health.answer(self.path.split("?", 1)[0])
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not logged
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
    thread.start()
    try:
        yield str(server.server_address[0]), int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def probe(url: str | None = None, environ: dict[str, str] | None = None) -> tuple[bool, str]:
    """GET ``url`` (default: /readyz on DA_HEALTH_ADDRESS's port, on 127.0.0.1); (ok, one line)."""
    env = os.environ if environ is None else environ
    if url is None:
        address = env.get("DA_HEALTH_ADDRESS")
        if not address:
            return False, "no URL given and DA_HEALTH_ADDRESS is not set"
        _, port = parse_address(address)
        url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:  # noqa: S310 (a local URL)
            return True, f"{url}: {response.status} {response.read().decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {exc.read().decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"


def build_parser(prog: str = "durable-assistants healthcheck") -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="Exit 0 if the worker is ready (GET /readyz answers 200), 1 if not.")
    parser.add_argument("url", nargs="?", help="default: http://127.0.0.1:<port of DA_HEALTH_ADDRESS>/readyz")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``durable-assistants healthcheck [URL]``: exit 0 if the worker is ready, 1 if not."""
    args = build_parser().parse_args(argv)
    try:
        ok, line = probe(args.url)
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 2
    print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
