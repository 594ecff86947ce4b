"""`durable-assistants setup-namespace` and `doctor`, run as a user runs them, against dev
servers started without the search attributes (as a production namespace starts)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from durable_assistants.devstack.temporal import TemporalDevServer
from durable_assistants.processes import die_with_parent, stop_process
from tests.test_worker_startup import one_error_line, run_cli

REPO = Path(__file__).parent.parent


def env(server: TemporalDevServer, emulator: Any, **extra: str) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_NAMESPACE": "default",
        "OPENAI_BASE_URL": emulator.base_url,
        "OPENAI_API_KEY": "sk-test",
        "DA_TOOL_MODULES": "durable_assistants.tools.examples",
        **extra,
    }


def lines_by_check(stdout: str) -> dict[str, str]:
    """doctor's lines ("ok    temporal: connected ...") by check name."""
    found = {}
    for line in stdout.splitlines():
        status, rest = line[:4].strip(), line[6:]
        name, _, detail = rest.partition(": ")
        found[name] = f"{status} {detail}"
    return found


def test_setup_namespace_then_doctor_on_a_bare_namespace(emulator: Any, tmp_path: Path) -> None:
    with TemporalDevServer(search_attributes={}) as server:
        settings = env(server, emulator)
        # Nothing registered, nothing polling: doctor says what to do about each, and fails.
        done = run_cli("doctor", env=settings)
        assert done.returncode == 1, done.stderr
        found = lines_by_check(done.stdout)
        assert found["temporal"] == f"ok connected to {server.address}, namespace default"
        assert found["search attributes"].startswith("FAIL missing ApiRunId, AssistantId, AwaitingApproval, QueuedRuns, RunStatus, ThreadId, ToolNames")
        assert "durable-assistants setup-namespace" in found["search attributes"]
        assert found["pollers durable-assistants"].startswith("FAIL no worker polls workflow tasks on 'durable-assistants'")
        assert found["model API"].startswith("ok ") and found["codec"].startswith("ok off")

        done = run_cli("setup-namespace", env=settings)
        assert (done.returncode, done.stdout.strip()) == (
            0, "registered in namespace default: ApiRunId, AssistantId, AwaitingApproval, QueuedRuns, RunStatus, ThreadId, ToolNames"
        ), done.stderr
        done = run_cli("setup-namespace", env=settings)
        assert (done.returncode, done.stdout.strip()) == (0, "namespace default has every search attribute already")

        # A worker polls now, with an encryption key: every check passes.
        key = base64.b64encode(os.urandom(32)).decode()
        with (tmp_path / "worker.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "worker.py"], cwd=REPO, env={**os.environ, **settings, "DA_CODEC_KEYS": f"k1:{key}"},
                stdout=out, stderr=out, preexec_fn=die_with_parent,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                done = run_cli("doctor", env={**settings, "DA_CODEC_KEYS": f"k1:{key}"})
                if done.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "worker.log").read_text()
            found = lines_by_check(done.stdout)
            assert all(line.startswith("ok ") for line in found.values()), done.stdout
            assert found["codec"] == "ok payloads are encrypted (a test payload round-tripped)"
            assert found["pollers durable-assistants"].startswith("ok polled by 1 workflow, 1 activity")
        finally:
            assert stop_process(process) == 0

        # A key that is not 32 bytes: the codec check names the problem; the others still run.
        done = run_cli("doctor", env={**settings, "DA_CODEC_KEYS": "k1:c2hvcnQ="})
        assert done.returncode == 1 and "Traceback" not in done.stderr
        found = lines_by_check(done.stdout)
        assert found["codec"].startswith("FAIL") and "k1" in found["codec"], found
        assert found["temporal"].startswith("ok ")


def test_setup_namespace_refuses_an_attribute_of_another_type(emulator: Any) -> None:
    with TemporalDevServer(search_attributes={"RunStatus": "Text"}) as server:
        done = run_cli("setup-namespace", env=env(server, emulator))
        assert done.returncode == 1
        assert one_error_line(done) == (
            "durable-assistants: error: namespace 'default' has search attributes of another type: RunStatus is TEXT, not Keyword"
        )


def test_doctor_without_temporal_says_so_and_still_checks_the_rest(emulator: Any) -> None:
    done = run_cli("doctor", env={"TEMPORAL_ADDRESS": "127.0.0.1:1", "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-test"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    found = lines_by_check(done.stdout)
    assert found["temporal"].startswith("FAIL cannot connect to Temporal at 127.0.0.1:1")
    assert found["search attributes"] == "FAIL not checked: no Temporal connection"
    assert found["model API"].startswith("ok ")
