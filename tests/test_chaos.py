"""The chaos run, small: `bench/chaos.py` with 20 runs, 3 SIGKILLs of the worker, 1 restart
of the dev server and 20 % API faults, as a subprocess (it starts its own dev server, emulator
and worker). Every check of its summary must hold. `make chaos` runs the full size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.server, pytest.mark.slow]

SMALL = ["--runs", "20", "--kills", "3", "--restarts", "1", "--fault-rate", "0.2", "--interval", "0.5", "--run-timeout", "150", "--seed", "1"]


def test_small_chaos_run_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    # Its state directory goes under tmp_path (tempfile honours TMPDIR).
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "bench/chaos.py", *SMALL, "--json-out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420,
    )
    assert out.exists(), f"no summary (exit {done.returncode}):\n{done.stderr[-4000:]}"
    summary = json.loads(out.read_text())
    failed = {name: c for name, c in summary["checks"].items() if not c["ok"]}
    assert not failed, json.dumps({"failed": failed, "evidence": summary["evidence"]}, indent=2)[:20000]
    assert done.returncode == 0, done.stderr[-4000:]
    # The chaos happened as asked.
    assert summary["chaos"]["worker_kills"] == 3 and summary["chaos"]["server_restarts"] == 1
    assert summary["chaos"]["faults_fired"] > 0
    assert summary["runs"]["outcomes"] == {"completed": 20}
    assert set(summary["runs"]["by_kind"]) == {
        "assistants/new-thread", "assistants/shared-thread", "responses/chain", "responses/conversation"
    }
    for name in ("no run stuck", "one API run per request", "no duplicate user message", "one accepted submit per round", "no lost tool output"):
        assert summary["checks"][name]["bad"] == 0
    # Its state directory is gone.
    assert not list(tmp_path.glob("da-chaos-*"))
