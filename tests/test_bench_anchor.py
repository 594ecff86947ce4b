"""`make bench-anchor` (bench/anchor.py) in its smallest configuration: it runs end to end and
prints a line for every figure and the per-run counters. No figure is checked against a
goal or a time: benchmarks print figures, tests never assert a timing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server  # it starts a dev server, the emulator, and workers in a child

ROOT = Path(__file__).resolve().parent.parent


def test_smallest_configuration_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, "bench/anchor.py", "--repeats", "1", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    out = done.stdout
    lines = out.splitlines()
    # The header names the machine, the date and the command.
    assert re.search(r"^anchor benchmark: \d{4}-\d\d-\d\d \d\d:\d\d UTC; \d+ CPUs, .*Python 3", out, re.M), out
    assert any(line.startswith("command: ") and "bench/anchor.py --repeats 1 --quick" in line for line in lines), out
    number = r"\d+\.\d\d"
    for figure in ("1", "2", "3a", "3b", "4"):
        row = re.compile(rf"^{figure} +\S.* (<=|>=) [\d.]+ +{number} +{number} +{number}  (yes|no) ", re.M)
        assert row.search(out), f"no line for figure {figure}:\n{out}"
    # Figure 4 says where the throughput goes: CPU per run of each process, for both sides.
    assert re.search(r"^4 .*; CPU ms a run, durable \d+/\d+/\d+, bare \d+/\d+/\d+ \(workers/server/emulator\)$", out, re.M), out
    assert re.search(r"^setup: .*tool get_weather_inline \(instant, sync, inline\)", out, re.M), out
    assert re.search(r"^5 +1,000 concurrent runs on one worker process +not run \(--thousand\)", out, re.M), out
    assert re.search(r"^one 3x4 run, stream, 300 ms turns: \d+ activities, \d+ workflow tasks, \d+ signal\(s\), "
                     r"\d+ history events, \d+ activity heartbeats", out, re.M), out
    assert re.search(r"^one 3x4 run, poll, 300 ms turns: \d+ activities, ", out, re.M), out
    assert re.search(r"^one round of 4 tools, stream .*: [\d.]+ activities, [\d.]+ workflow tasks", out, re.M), out
