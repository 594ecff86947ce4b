"""Counters that let a test prove exactly-once behaviour.

``threads`` holds counters per thread and per conversation, ``runs`` per run and per
response; ``totals`` adds them up. A response on a conversation counts ``responses_created``
in both places, so the conversation's copy stays out of the totals: the total is the number
of responses.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

# Per-thread (per-conversation) counters that repeat a per-run (per-response) counter.
_NOT_TOTALLED_PER_THREAD = frozenset({"responses_created"})


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.faults_fired: Counter[str] = Counter()
        self.threads: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.runs: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def request(self, operation: str) -> None:
        self.requests[operation] += 1

    def response(self, operation: str, outcome: str) -> None:
        """``outcome`` is the HTTP status, or ``dropped`` for a connection broken on purpose."""
        self.responses[f"{operation} {outcome}"] += 1

    def thread(self, thread_id: str, counter: str, n: int = 1) -> None:
        self.threads[thread_id][counter] += n

    def run(self, run_id: str, counter: str, n: int = 1) -> None:
        self.runs[run_id][counter] += n

    def snapshot(self) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for counters in self.threads.values():
            totals.update({k: v for k, v in counters.items() if k not in _NOT_TOTALLED_PER_THREAD})
        for counters in self.runs.values():
            totals.update(counters)
        return {
            "requests": dict(self.requests),
            "responses": dict(self.responses),
            "faults_fired": dict(self.faults_fired),
            "totals": dict(totals),
            "threads": {k: dict(v) for k, v in self.threads.items()},
            "runs": {k: dict(v) for k, v in self.runs.items()},
        }
