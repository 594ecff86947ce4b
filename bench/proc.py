"""/proc readings of a process for the benchmarks (Linux): CPU time so far, RSS, and the RSS
high-water mark (``VmHWM``), which the benchmarks report and psutil does not give on Linux."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcReading:
    cpu_seconds: float  # user + system time of the process so far
    rss_kib: int  # VmRSS
    hwm_kib: int  # VmHWM, the RSS high-water mark


def read_proc(pid: int) -> ProcReading:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    memory: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0])
    return ProcReading(cpu, memory.get("VmRSS", 0), memory.get("VmHWM", 0))
