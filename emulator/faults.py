"""Fault injection: make a chosen endpoint fail, slow down or drop its connection.

A rule names an operation (``runs.create``, ``runs.submit_tool_outputs``, ... or ``*``; the
README lists them) and fires on the Nth matching call, at a rate, or on every call, up to
``times`` times. ``when: "after"`` lets the request take effect first and then spoils its
response: the case a client can't tell apart from a failure, which idempotency must survive.
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = ""
    operation: str = Field("*", description="Operation name, e.g. `runs.create`, or `*` for every API call.")
    action: Literal["error", "delay", "drop", "cut"] = Field(
        "error",
        description="error: an HTTP error; delay: hold the request; drop: break the connection; "
        "cut: let a stream begin, then break its connection after `after_events` events (other responses are dropped).",
    )
    status: int = Field(500, ge=400, le=599, description="HTTP status of an `error` fault.")
    retry_after_ms: int | None = Field(None, ge=0, description="Sent as `retry-after-ms` (and `retry-after`).")
    delay_seconds: float = Field(0.0, ge=0, le=600, description="How long a `delay` fault holds the request.")
    after_events: int = Field(1, ge=0, description="How many events a `cut` stream delivers before it breaks.")
    when: Literal["before", "after"] = "before"
    nth: int | None = Field(None, ge=1, description="Fire on the Nth matching call after the rule was added.")
    rate: float | None = Field(None, ge=0, le=1, description="Probability of firing on each matching call.")
    times: int | None = Field(None, ge=1, description="Fire at most this often (default: once with `nth`).")
    seen: int = 0
    fired: int = 0

    @model_validator(mode="after")
    def _one_trigger(self) -> FaultRule:
        if self.nth is not None and self.rate is not None:
            raise ValueError("give either 'nth' or 'rate', not both")
        if self.nth is not None and self.times is None:
            self.times = 1
        return self

    def matches(self, operation: str) -> bool:
        return self.operation in ("*", operation)


class FaultInjector:
    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._next_id = 0
        self.rules: list[FaultRule] = []
        self._cleared = asyncio.Event()  # set (and replaced) by clear(): releases held requests

    def add(self, rule: FaultRule) -> FaultRule:
        self._next_id += 1
        rule = rule.model_copy(update={"id": f"fault_{self._next_id}", "seen": 0, "fired": 0})
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        """No rules; and requests a `delay` still holds are let go as dropped connections: a
        request from before a reset must not act on the state after it."""
        self.rules.clear()
        self._cleared.set()
        self._cleared = asyncio.Event()

    async def hold(self, seconds: float) -> bool:
        """Hold a request for ``seconds``; False if the faults were cleared meanwhile."""
        cleared = self._cleared
        try:
            await asyncio.wait_for(cleared.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def pick(self, operation: str) -> FaultRule | None:
        """The rule that fires for this call, if any. Every matching rule counts the call."""
        chosen = None
        for rule in self.rules:
            if not rule.matches(operation):
                continue
            rule.seen += 1
            if chosen is not None or (rule.times is not None and rule.fired >= rule.times):
                continue
            if rule.nth is not None:
                fires = rule.seen == rule.nth
            elif rule.rate is not None:
                fires = self._random.random() < rule.rate
            else:
                fires = True
            if fires:
                rule.fired += 1
                chosen = rule
        return chosen
