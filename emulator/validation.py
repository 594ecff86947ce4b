"""Request validation with the `openai` package's own parameter types.

The SDK describes every request body as a ``TypedDict``; a pydantic ``TypeAdapter`` over it
checks types the way the SDK's authors meant them. What the adapter does not do, this module
adds: unknown top-level fields are rejected (pydantic ignores them), lazily validated
``Iterable`` fields are materialised so their errors surface now, and the limits OpenAI
enforced but the types do not carry (metadata size, ranges, list bounds) are checked.
Every failure becomes an OpenAI-shaped 400 naming the parameter and the value.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from durable_assistants.emulator.errors import APIError, bad_request

# pydantic validates `Iterable[...]` fields lazily and does not export the iterator's type.
ValidatorIterator = type(TypeAdapter(Iterable[int]).validate_python([]))

METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
        # JSON escapes can smuggle in lone surrogates, which no UTF-8 response can carry.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise bad_request(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise bad_request(
            f"Invalid body: expected a JSON object, but got {_json_type(body)} instead.",
            code="invalid_type",
        )
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@cache
def _adapter(params_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(params_type)


@cache
def _known_fields(params_type: Any) -> frozenset[str]:
    """Top-level keys of a TypedDict, or of every TypedDict in a Union of them."""
    members = typing.get_args(params_type) if typing.get_origin(params_type) is typing.Union else (params_type,)
    names: set[str] = set()
    for member in members:
        names.update(typing.get_type_hints(member).keys())
    return frozenset(names)


def validate_params(
    params_type: Any,
    data: Mapping[str, Any],
    *,
    path: Mapping[str, str] | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Validate ``data`` against an SDK params TypedDict; return plain dicts and lists.

    ``path`` holds URL parameters that some SDK TypedDicts list as fields (``thread_id``);
    they are checked with the body but may not be sent in it.
    """
    path = path or {}
    unknown = sorted(set(data) - (_known_fields(params_type) - set(path)))
    if unknown:
        raise bad_request(
            f"Unrecognized request argument supplied: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )
    try:
        validated = _adapter(params_type).validate_python({**data, **path}, strict=strict)
        result = _materialise(validated, ())
    except (ValidationError, _PathedError) as exc:
        raise _to_api_error(exc, ()) from None
    check_metadata(result.get("metadata"))
    return result


def validate_value(value_type: Any, value: Any, *, at: tuple[Any, ...]) -> Any:
    """Validate one value nested in a request (``at`` is its location, e.g. ``("input", 2)``)
    against an SDK type; errors name the parameter from the top of the body."""
    try:
        return _materialise(_adapter(value_type).validate_python(value, strict=True), ())
    except (ValidationError, _PathedError) as exc:
        raise _to_api_error(exc, at) from None


def wrong_type(param: str, expected: str, value: Any) -> APIError:
    return bad_request(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _materialise(value: Any, path: tuple[Any, ...]) -> Any:
    if isinstance(value, ValidatorIterator):
        items = []
        try:
            for item in value:
                items.append(item)
        except ValidationError as exc:
            raise _PathedError(exc, path) from None
        return [_materialise(item, (*path, i)) for i, item in enumerate(items)]
    if isinstance(value, dict):
        return {k: _materialise(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialise(v, (*path, i)) for i, v in enumerate(value)]
    return value


class _PathedError(Exception):
    def __init__(self, error: ValidationError, path: tuple[Any, ...]) -> None:
        self.error = error
        self.path = path


def _to_api_error(exc: ValidationError | _PathedError, prefix: tuple[Any, ...]) -> APIError:
    if isinstance(exc, _PathedError):
        return _to_api_error(exc.error, (*prefix, *exc.path))
    errors = exc.errors(include_url=False)
    # In a union, pydantic reports every branch. A branch whose `type` literal didn't match is
    # not what the client meant: drop all its errors and report from the branch that matched.
    mismatched = {_branch(e) for e in errors if e["type"] == "literal_error" and e["loc"][-1:] == ("type",)}
    specific = [e for e in errors if _branch(e) not in mismatched]
    chosen = (specific or errors)[0]
    loc = (*prefix, *chosen["loc"])
    param = _param_path(loc)
    value = chosen.get("input")
    if chosen["type"] == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if chosen["type"] == "literal_error" and not specific:
        expected = chosen.get("ctx", {}).get("expected", "")
        allowed = sorted({str(e.get("ctx", {}).get("expected", "")) for e in errors})
        return bad_request(
            f"Invalid value for '{param}': {value!r}. Supported values are: {', '.join(allowed) or expected}.",
            param=param,
            code="invalid_value",
        )
    code = "invalid_type" if chosen["type"].endswith("_type") or chosen["type"].endswith("_parsing") else "invalid_value"
    return bad_request(
        f"Invalid value for '{param}': {chosen['msg'].rstrip('.')}, got {_show(value)}.",
        param=param,
        code=code,
    )


def _branch(error: Any) -> tuple[Any, ...]:
    """The location up to and including the last union-branch label (the branch's identity)."""
    loc = error["loc"]
    labels = [i for i, part in enumerate(loc) if isinstance(part, str) and _is_type_label(part)]
    return tuple(loc[: labels[-1] + 1]) if labels else ()


def _param_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_type_label(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _is_type_label(part: str) -> bool:
    # pydantic names union branches in error locations ("FunctionToolParam", "str",
    # "generator[...]", "literal['auto']"); they are not request fields.
    return part[:1].isupper() or "[" in part or part in {"str", "int", "float", "bool", "dict", "list", "none"}


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: Any) -> str:
    return {list: "an array", dict: "an object", str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a value"
    )


def check_metadata(metadata: Any, param: str = "metadata") -> None:
    if metadata is None:
        return
    if len(metadata) > METADATA_MAX_PAIRS:
        raise bad_request(
            f"Invalid '{param}': too many properties. Expected an object with at most "
            f"{METADATA_MAX_PAIRS} properties, but got an object with {len(metadata)} properties instead.",
            param=param,
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > METADATA_MAX_KEY:
            raise bad_request(
                f"Invalid '{param}': key {key[:20]!r}... is too long. Expected a key with at most "
                f"{METADATA_MAX_KEY} characters, but got one with {len(key)} characters instead.",
                param=f"{param}.{key}",
                code="string_above_max_length",
            )
        if len(value) > METADATA_MAX_VALUE:
            raise bad_request(
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum length "
                f"{METADATA_MAX_VALUE}, but got a string with length {len(value)} instead.",
                param=f"{param}.{key}",
                code="string_above_max_length",
            )


def check_range(params: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = params.get(name)
    if value is not None and not (low <= value <= high):
        below = value < low
        raise bad_request(
            f"Invalid '{name}': {'decimal below minimum' if below else 'decimal above maximum'} value. "
            f"Expected a value {'>=' if below else '<='} {low if below else high}, but got {value} instead.",
            param=name,
            code="decimal_below_min_value" if below else "decimal_above_max_value",
        )


def check_positive(params: Mapping[str, Any], name: str, minimum: int = 1) -> None:
    value = params.get(name)
    if value is not None and value < minimum:
        raise bad_request(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
