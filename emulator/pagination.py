"""Cursor pagination as OpenAI lists did it: ``limit`` 1-100, ``order``, ``after``, ``before``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from durable_assistants.emulator.errors import bad_request

T = TypeVar("T")


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


def page(
    items: Sequence[T],
    query: ListQuery,
    *,
    id_of: Callable[[T], str],
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """``items`` come in creation order, oldest first."""
    ordered = list(items) if query.order == "asc" else list(reversed(items))
    index = {id_of(item): i for i, item in enumerate(ordered)}
    start, stop = 0, len(ordered)
    if query.after is not None:
        start = _cursor(index, query.after, "after") + 1
    if query.before is not None:
        stop = _cursor(index, query.before, "before")
    if query.before is not None and query.after is None:
        # `before` pages walk backwards: the `limit` items right before the cursor.
        chosen = ordered[max(start, stop - query.limit) : stop]
        has_more = stop - query.limit > start
    else:
        chosen = ordered[start : min(stop, start + query.limit)]
        has_more = start + query.limit < stop
    data = [render(item) for item in chosen]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _cursor(index: dict[str, int], cursor: str, name: str) -> int:
    try:
        return index[cursor]
    except KeyError:
        raise bad_request(
            f"Invalid '{name}': no object with id '{cursor}' in this list.", param=name, code="invalid_value"
        ) from None
