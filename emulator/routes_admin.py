"""The admin API under ``/_emulator``: health, counters, reset, configuration, faults,
scenarios and stored prompts. Not part of OpenAI's API: what tests and benchmarks steer the
emulator with."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from durable_assistants.emulator.config import EmulatorConfig
from durable_assistants.emulator.errors import APIError, bad_request, not_found
from durable_assistants.emulator.faults import FaultRule
from durable_assistants.emulator.http import (
    json_response,
)
from durable_assistants.emulator.script import SCENARIO_NAME, ScriptError, parse_script
from durable_assistants.emulator.validation import parse_json_body

if TYPE_CHECKING:
    from durable_assistants.emulator.app import Emulator

log = logging.getLogger("emulator")

# ---------------------------------------------------------------------------- admin


async def admin_health(request: Request, emu: Emulator) -> Response:
    engine = emu.engine
    active = sum(1 for t in engine.threads.values() if t.active_run is not None)
    responses = emu.responses
    active_responses = sum(1 for r in responses.responses.values() if r.response.status in ("queued", "in_progress"))
    return json_response(
        {
            "status": "ok",
            "threads": len(engine.threads),
            "runs": len(engine.runs),
            "active_runs": active,
            "conversations": len(responses.conversations),
            "responses": len(responses.responses),
            "active_responses": active_responses,
        }
    )


async def admin_stats(request: Request, emu: Emulator) -> Response:
    return json_response(emu.stats.snapshot())


async def admin_reset(request: Request, emu: Emulator) -> Response:
    await emu.reset()
    return json_response({"reset": True})


async def admin_get_config(request: Request, emu: Emulator) -> Response:
    return json_response(emu.config.model_dump(exclude={"api_key"}))


async def admin_patch_config(request: Request, emu: Emulator) -> Response:
    changes = parse_json_body(await request.body())
    if "api_key" in changes:
        raise bad_request("The API key is set when the server starts (--api-key); it can't be changed live.", param="api_key")
    if isinstance(changes, dict) and isinstance(changes.get("compat"), dict):
        # Switches not named keep their value: a PATCH changes only what it names.
        changes = {**changes, "compat": {**emu.config.compat.model_dump(), **changes["compat"]}}
    try:
        merged = EmulatorConfig.model_validate({**emu.config.model_dump(), **changes})
    except ValidationError as exc:
        raise _admin_error(exc) from None
    for key in changes:
        setattr(emu.config, key, getattr(merged, key))
    return json_response(emu.config.model_dump(exclude={"api_key"}))


async def admin_list_faults(request: Request, emu: Emulator) -> Response:
    return json_response({"data": [r.model_dump() for r in emu.faults.rules]})


async def admin_add_fault(request: Request, emu: Emulator) -> Response:
    try:
        rule = FaultRule.model_validate(parse_json_body(await request.body()))
    except ValidationError as exc:
        raise _admin_error(exc) from None
    if rule.operation != "*" and rule.operation not in emu.operations:
        raise bad_request(
            f"Unknown operation {rule.operation!r}; use '*' or one of: {', '.join(sorted(emu.operations))}.",
            param="operation",
        )
    return json_response(emu.faults.add(rule).model_dump())


async def admin_clear_faults(request: Request, emu: Emulator) -> Response:
    emu.faults.clear()
    return json_response({"deleted": True})


async def admin_delete_fault(request: Request, emu: Emulator) -> Response:
    fault_id = request.path_params["fault_id"]
    if not emu.faults.remove(fault_id):
        raise not_found("fault", fault_id)
    return json_response({"id": fault_id, "deleted": True})


async def admin_list_scenarios(request: Request, emu: Emulator) -> Response:
    return json_response({name: s.model_dump(exclude_defaults=True) for name, s in emu.engine.scenarios.items()})


async def admin_put_scenario(request: Request, emu: Emulator) -> Response:
    name = request.path_params["name"]
    if not SCENARIO_NAME.match(name):
        raise bad_request(f"Invalid scenario name {name!r}: use 1-64 letters, digits, '_', '-' or '.'.", param="name")
    try:
        script = parse_script(parse_json_body(await request.body()), source=f"scenario {name!r}")
    except ScriptError as exc:
        raise bad_request(str(exc), code="invalid_emulator_script") from None
    emu.engine.scenarios[name] = script
    return json_response({"name": name, "script": script.model_dump(exclude_defaults=True)})


async def admin_delete_scenario(request: Request, emu: Emulator) -> Response:
    name = request.path_params["name"]
    if emu.engine.scenarios.pop(name, None) is None:
        raise not_found("scenario", name)
    return json_response({"name": name, "deleted": True})


async def admin_list_prompts(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.list_prompts())


async def admin_put_prompt(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.put_prompt(request.path_params["prompt_id"], parse_json_body(await request.body())))


async def admin_delete_prompt(request: Request, emu: Emulator) -> Response:
    return json_response(emu.responses.delete_prompt(request.path_params["prompt_id"]))


def _admin_error(exc: ValidationError) -> APIError:
    error = exc.errors(include_url=False)[0]
    name = ".".join(str(p) for p in error["loc"]) or "body"
    return bad_request(f"Invalid '{name}': {error['msg']}, got {error.get('input')!r}.", param=name)


