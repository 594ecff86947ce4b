"""Child processes that never outlive their parent: started to die with it, stopped with a bound
(SIGTERM, then SIGKILL), their ready line read with a deadline. The codec server, the local
stack (the dev server, the emulator, the worker), the tests and the benchmarks start children
with these."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from typing import Any


def die_with_parent() -> None:
    """``preexec_fn`` for child servers: the kernel sends SIGTERM to the child when the process
    that started it dies, even by SIGKILL, so no server outlives a killed test run (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def ready_url(process: subprocess.Popen[str], ready: re.Pattern[str], timeout: float) -> str | None:
    """The ``url`` group of the first line of the child's stdout that ``ready`` matches; None
    if the child ends its output or ``timeout`` passes first."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            return None
        match = ready.search(line)
        if match:
            return match.group("url")
    return None


def stop_child(process: subprocess.Popen[str] | None) -> int | None:
    """``stop_process``, then close the pipe its ready line came through."""
    if process is None:
        return None
    code = stop_process(process)
    if process.stdout is not None:
        process.stdout.close()
    return code
