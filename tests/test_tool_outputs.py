"""What a tool may return, and what the model gets when JSON can't carry it; what a tool may
take, and the error when the model can't be told about it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import json
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from durable_assistants.activities.tools import OutputNotJson, render_output
from durable_assistants.tools import ToolRegistry
from tests.apis import ResponsesApi
from tests.test_worker_startup import spawn, start_run, wait_for_log, worker_log  # noqa: F401  (fixtures)

HINT = "return str, numbers, bool, None, lists, dicts with str keys, or a pydantic model"


class Colour(enum.Enum):
    RED = "red"


class Point(BaseModel):
    x: int
    label: bytes  # pydantic's own serializer turns it into text


@dataclasses.dataclass
class Reading:
    at: datetime.date
    values: Any


class Opaque:
    pass


def test_the_usual_values_render_as_json() -> None:
    value = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 1, 2),
        "id": uuid.UUID(int=1),
        "amount": decimal.Decimal("1.50"),
        "colour": Colour.RED,
        "pair": (1, 2.5),
        "flags": [True, None],
        "point": Point(x=1, label=b"hi"),
        "reading": Reading(at=datetime.date(2026, 1, 2), values=[1]),
    }
    text, truncated = render_output(value, 10_000)
    assert not truncated
    assert json.loads(text) == {
        "when": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "id": "00000000-0000-0000-0000-000000000001",
        "amount": "1.50",
        "colour": "red",
        "pair": [1, 2.5],
        "flags": [True, None],
        "point": {"x": 1, "label": "hi"},
        "reading": {"at": "2026-01-02", "values": [1]},
    }
    assert render_output("already text", 100) == ("already text", False)
    assert render_output(None, 100) == ("null", False)


def _socket() -> socket.socket:
    sock = socket.socket()
    sock.close()  # its type is what matters
    return sock


def _cycle() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


@pytest.mark.parametrize(
    ("make", "what", "where"),
    [
        (lambda: b"\x00", "bytes", "$"),
        (lambda: {"name": "blob", "data": b"\x00"}, "bytes", "$.data"),
        (lambda: {1, 2}, "set", "$"),
        (lambda: [1, {"conn": _socket()}], "socket.socket", "$[1].conn"),
        (lambda: {"an odd key": Opaque()}, f"{__name__}.Opaque", '$["an odd key"]'),
        (lambda: Reading(at=datetime.date(2026, 1, 1), values={1}), "set", "$.values"),
        (lambda: {"n": float("nan")}, "float nan", "$.n"),
        (lambda: {1: "one"}, "a dict key of type int (1)", "$"),
        (lambda: _cycle(), "a structure nested too deeply (or containing itself)", "$"),
    ],
)
def test_a_value_json_cannot_carry_is_named_with_its_type_and_place(make: Callable[[], Any], what: str, where: str) -> None:
    with pytest.raises(OutputNotJson) as caught:
        render_output(make(), 10_000, "get_blob")
    assert str(caught.value) == f"get_blob returned {what}, which JSON cannot carry (at {where}); {HINT}"


def test_a_parameter_type_with_no_json_schema_is_refused_where_the_tool_is_defined() -> None:
    registry = ToolRegistry()
    with pytest.raises(TypeError) as caught:

        @registry.tool
        def peek(conn: socket.socket) -> str: ...

    assert str(caught.value).startswith(
        "tool 'peek': parameter 'conn' has type socket.socket, which has no JSON schema (pydantic cannot validate"
    )
    with pytest.raises(TypeError, match=rf"^tool 'poke': parameter 'thing' has type {re.escape(__name__)}\.Opaque, which has no JSON schema"):

        @registry.tool
        def poke(count: int, thing: Opaque) -> str: ...

    with pytest.raises(TypeError, match=r"^tool 'call_back': parameter 'then' has type collections\.abc\.Callable\[\[int\], int\]"):

        @registry.tool
        def call_back(then: Callable[[int], int]) -> str: ...

    assert len(registry) == 0


# ------------------------------------------------------------------ through a real worker


async def test_a_tool_output_json_cannot_carry_fails_once_and_the_model_is_told(
    spawn: Any, worker_log: Path, temporal_client: Client, task_queue: str, client: OpenAI  # noqa: F811
) -> None:
    worker = spawn()
    await wait_for_log(worker, worker_log, "worker started")
    handle = await start_run(temporal_client, task_queue, "get_blob", {"size": 4})
    result = await asyncio.wait_for(handle.result(), 60)

    assert result.status == "completed", worker_log.read_text()
    [record] = result.tool_calls
    expected = f"get_blob returned bytes, which JSON cannot carry (at $.data); {HINT}"
    assert record.name == "get_blob" and record.attempts == 1 and record.error == expected
    assert ResponsesApi(client).tool_outputs_seen(result) == [f"Error: tool get_blob failed: {expected}"]

    # Temporal ran it once: the failure is non-retryable (get_blob allows 3 attempts).
    events = (await handle.fetch_history()).events
    failed = [e.activity_task_failed_event_attributes for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    assert len(failed) == 1
    info = failed[0].failure.application_failure_info
    assert info.type == "ToolOutputNotJson" and info.non_retryable
    [started] = [e for e in events if e.event_id == failed[0].started_event_id]
    assert started.activity_task_started_event_attributes.attempt == 1
