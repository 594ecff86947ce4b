"""What each `durable-assistants` command does, one function a command (``cmd_*``), with the
helpers they share: the Temporal connection, the request a command line makes, the filters of
``list``. The parser and the dispatch are ``durable_assistants.cli``; what runs print is
``render.py``. Errors are ``CliError``: one line and a non-zero exit.

Why one module of about 520 lines: one short function a command, each reading its own
options and sharing the connection and the request building above; split further, a command
would be looked for in more places than there are commands worth a module.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from durable_assistants.arguments import PROG
from durable_assistants.render import describe_cost, print_result, print_snapshot, render_progress, run_reason
from durable_assistants.workflows.models import LiveSnapshot, RunCost, RunRequest, RunResult


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


CONNECT_TIMEOUT = 10.0


async def connect(**overrides: Any) -> Client:
    from durable_assistants.worker import connect_temporal

    address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
    try:
        return await asyncio.wait_for(connect_temporal(**overrides), CONNECT_TIMEOUT)
    except TimeoutError:
        raise CliError(f"cannot connect to Temporal at {address}: no answer within {CONNECT_TIMEOUT:.0f} s") from None
    except Exception as exc:
        raise CliError(f"cannot connect to Temporal at {address}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def request_from(args: argparse.Namespace) -> RunRequest:
    data: dict[str, Any] = {}
    if args.request:
        data = _request_json(args.request)
    # `is not None`: an empty value given (`--thread ""`) is checked, not silently dropped.
    for option, field in (
        ("assistant", "assistant_id"), ("thread", "thread_id"),
        ("backend", "backend"), ("model", "model"), ("instructions", "instructions"),
        ("conversation", "conversation_id"), ("previous_response", "previous_response_id"), ("mode", "mode"),
        ("responses_state", "responses_state"),
    ):
        if getattr(args, option, None) is not None:
            data[field] = getattr(args, option)
    if args.message:
        data["messages"] = [*data.get("messages", []), *({"content": m} for m in args.message)]
    try:
        request = RunRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"])
        if not where:  # a check across fields: its message names them and their values
            raise CliError(f"invalid run request: {str(error['msg']).removeprefix('Value error, ')}") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise CliError(f"invalid run request: {where}: {message} (got {_shorten(error.get('input'))})") from None
    if request.assistant_id is None and request.model is None and request.prompt is None:
        raise CliError("give --assistant (an Assistants API assistant) or --model (an inline agent, for either API), or a --request that has one")
    return request


def _request_json(option: str) -> dict[str, Any]:
    """``--request``: a JSON object, inline or ``@file``."""
    text, source = option, "--request"
    if option.startswith("@"):
        path = option[1:]
        if not path:
            raise CliError("--request @: give a file name after @, e.g. --request @request.json")
        source = path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise CliError(f"cannot read {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise CliError(f"{source} is nested too deeply to be a run request") from None
    except ValueError as exc:
        raise CliError(f"{source} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}[type(data)]
        raise CliError(f"{source} must be a JSON object (a RunRequest), got {kind}: {_shorten(text.strip(), 60)}")
    return data


async def cmd_enqueue(args: argparse.Namespace) -> int:
    from durable_assistants.client import IdempotencyConflictError, QueueBusyError, QueueFullError, RunFailedError, check_request_id, enqueue_run, has_pollers

    request = request_from(args)
    waits = args.follow or args.wait
    if args.timeout is not None and not waits:
        raise CliError("--timeout goes with --wait or --follow")
    if args.request_id is not None:
        try:  # before connecting: a bad ID is the user's to fix, whatever the server says
            check_request_id(args.request_id)
        except ValueError as exc:
            raise CliError(f"invalid --request-id: {exc}") from None
    client = await connect()
    if not await has_pollers(client, args.task_queue):
        if waits:
            raise CliError(
                f"no worker is polling task queue {args.task_queue!r}, so the run would never start; nothing was enqueued "
                f"(start one: durable-assistants worker --task-queue {args.task_queue})"
            )
        if request.context_id is not None:
            # A run on a thread or conversation goes through its queue workflow, whose `enqueue`
            # update a worker must accept: without one, enqueueing would wait forever.
            raise CliError(
                f"no worker is polling task queue {args.task_queue!r}, and a run on {request.context_id} is enqueued "
                f"through that {'thread' if request.thread_id else 'conversation'}'s queue, which a worker must accept; "
                f"nothing was enqueued (start one: durable-assistants worker --task-queue {args.task_queue})"
            )
        print(f"{PROG}: warning: no worker is polling task queue {args.task_queue!r}; the run starts when one does", file=sys.stderr)
    try:
        handle = await enqueue_run(client, request, request_id=args.request_id, task_queue=args.task_queue)
    except (IdempotencyConflictError, QueueFullError, QueueBusyError, ValueError) as exc:
        raise CliError(str(exc).removeprefix("enqueue_run: ")) from None
    if not waits:
        print(json.dumps({"workflow_id": handle.workflow_id}) if args.json else handle.workflow_id)
        return 0

    async def follow() -> RunResult:
        if args.follow and not args.json:
            print(f"run {handle.workflow_id}", flush=True)
            await render_progress(handle)
        return await handle.result()

    try:
        result = await asyncio.wait_for(follow(), args.timeout)
    except TimeoutError:
        raise CliError(
            f"{handle.workflow_id} still running after {args.timeout:g} s; it goes on (durable-assistants status {handle.workflow_id})"
        ) from None
    except RunFailedError as exc:
        raise CliError(f"run failed: {exc.reason}") from None
    print_result(result, args.json)
    if result.status != "completed":
        print(f"{PROG}: run {result.status}: {run_reason(result)}", file=sys.stderr)
        return 1
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    from durable_assistants.client import RunFailedError, RunNotFoundError, get_run

    client = await connect()
    handle = get_run(client, args.workflow_id)
    try:
        status = await handle.status()
        if isinstance(status, LiveSnapshot):
            from durable_assistants.cost import full_cost, load_prices

            status.cost = await full_cost(client, args.workflow_id, status.cost, load_prices())
            print_snapshot(status, args.json)
            return 0
        if status == "queued":
            print(json.dumps({"workflow_status": "queued", "queue": handle.queue_id}) if args.json else f"queued: waiting for its turn in {handle.queue_id}")
            return 0
        if status in ("completed", "failed", "terminated", "timed_out", "canceled"):
            result = await handle.result()
            print_result(result, args.json)
            return 0
        print(json.dumps({"workflow_status": status}) if args.json else f"workflow {status}")
        return 0
    except RunNotFoundError as exc:
        raise CliError(str(exc)) from None
    except RunFailedError as exc:
        if args.json:
            print(json.dumps({"workflow_status": "failed", "reason": exc.reason}))
        raise CliError(f"run failed: {exc.reason}") from None


def timestamp(text: str) -> datetime.datetime:
    """An ISO 8601 date or time; without a zone, UTC."""
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r} (e.g. 2026-12-01 or 2026-12-01T08:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


async def cmd_cost(args: argparse.Namespace) -> int:
    from durable_assistants.client import get_run
    from durable_assistants.cost import add_up, load_prices

    prices = load_prices()  # a bad table fails before anything is read
    clauses = [visibility_query(args)]
    if args.task_queue:
        clauses.append(_clause("TaskQueue", args.task_queue))
    if args.since:
        clauses.append(f"StartTime >= '{args.since.isoformat()}'")
    if args.until:
        clauses.append(f"StartTime < '{args.until.isoformat()}'")
    client = await connect()
    try:
        found = [e async for e in client.list_workflows(" AND ".join(clauses), limit=args.limit)]
    except RPCError as exc:
        raise CliError(f"listing failed: {exc.message}") from None
    gate = asyncio.Semaphore(10)

    async def one(execution: Any) -> tuple[str, RunCost]:
        async with gate:
            return execution.id, await get_run(client, execution.id).cost(prices)

    per_run = await asyncio.gather(*(one(e) for e in found))
    total = add_up(cost for _, cost in per_run)
    if args.json:
        print(json.dumps({
            "runs": len(per_run), "cost": total.model_dump(mode="json"),
            "per_run": [{"workflow_id": wid, "cost": cost.model_dump(mode="json")} for wid, cost in per_run],
        }, indent=2))
        return 0
    print(f"{len(per_run)} run{'s' if len(per_run) != 1 else ''}: {describe_cost(total)}")
    for used in total.by_model:
        print(f"  {used.model or 'unknown model'}: {used.input_tokens:,} tokens in, {used.output_tokens:,} out, {used.turns} turns")
    if prices is None:
        print("  (no price table: set DA_PRICES or DA_PRICES_FILE for dollars; docs/cost.md)")
    return 0


def _decider(given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get("DA_USER"):
        return os.environ["DA_USER"]
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no login name (some containers): the decision is recorded without one
        return None


async def cmd_approvals(args: argparse.Namespace) -> int:
    from durable_assistants.client import awaiting_approval

    client = await connect()
    try:
        rows = await awaiting_approval(client, args.limit)
    except RPCError as exc:
        raise CliError(f"listing failed: {exc.message} (is the AwaitingApproval search attribute registered? durable-assistants setup-namespace)") from None
    if args.json:
        print(json.dumps([{"workflow_id": wid, **call.model_dump(exclude={"parameters"})} for wid, call in rows], indent=2))
        return 0
    now = time.time()
    for wid, call in rows:
        print(f"{wid}  {call.call_id}  {call.tool}({call.arguments})")
        print(f"    {call.reason}; waiting {now - call.requested_at:.0f}s, decide within {max(0.0, call.deadline - now):.0f}s")
    if not rows:
        print("no tool call waits for approval")
    return 0


async def cmd_decide(args: argparse.Namespace) -> int:
    from durable_assistants.client import ApprovalError, RunNotFoundError, get_run

    edited = None
    if getattr(args, "edit", None) is not None:
        try:
            edited = json.loads(args.edit)
        except ValueError as exc:
            raise CliError(f"--edit is not valid JSON ({exc}): {args.edit[:80]!r}") from None
        if not isinstance(edited, dict):
            raise CliError(f"--edit must be a JSON object (the tool's arguments), got {type(edited).__name__}: {args.edit[:80]!r}")
    if args.command == "reject" and not args.note.strip():
        raise CliError("--note must say why the call is rejected (the model reads it)")
    client = await connect()
    handle = get_run(client, args.workflow_id)
    by = _decider(args.by)
    try:
        if args.command == "reject":
            record = await handle.reject(args.call_id, args.note, by=by)
        else:
            record = await handle.approve(args.call_id, note=args.note, by=by, edited_arguments=edited)
    except (ApprovalError, RunNotFoundError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(record.model_dump_json(indent=2))
    else:
        print(f"{args.workflow_id} {args.call_id}: {record.decision}" + (f" by {record.by}" if record.by else ""))
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    from durable_assistants.client import RunFailedError, RunNotFoundError, get_run

    client = await connect()
    handle = get_run(client, args.workflow_id)
    try:
        description = await handle.describe()
        if description is None:
            raise CliError(f"{args.workflow_id} is still queued in {handle.queue_id}; it can be cancelled once it starts")
        if description.status != WorkflowExecutionStatus.RUNNING:
            print(f"{args.workflow_id}: already ended ({description.status.name.lower() if description.status else 'unknown'}); nothing to cancel")
            return 0
        if not await handle.cancel():
            print(f"{args.workflow_id}: cancel requested; no worker is polling task queue {description.task_queue!r}, so it takes effect when one does")
            return 0
        result = await asyncio.wait_for(handle.result(), args.timeout)
    except RunNotFoundError as exc:
        raise CliError(str(exc)) from None
    except RunFailedError as exc:
        raise CliError(f"run failed: {exc.reason}") from None
    except TimeoutError:
        print(f"{args.workflow_id}: cancel requested; still stopping after {args.timeout:g} s (durable-assistants status {args.workflow_id})")
        return 0
    print(f"{args.workflow_id}: {result.status}")
    return 0


def run_filter(args: argparse.Namespace) -> Any:
    from durable_assistants.listing import RunFilter

    return RunFilter(assistant=args.assistant, thread=args.thread, status=args.status, awaiting_approval=getattr(args, "awaiting_approval", False))


def visibility_query(args: argparse.Namespace) -> str:
    from durable_assistants import listing

    try:
        return listing.visibility_query(run_filter(args))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _clause(field: str, value: str) -> str:
    from durable_assistants import listing

    try:
        return listing.clause(field, value)
    except ValueError as exc:
        raise CliError(str(exc)) from None


async def cmd_list(args: argparse.Namespace) -> int:
    from durable_assistants.listing import list_runs

    visibility_query(args)  # a bad value fails before connecting
    client = await connect()
    try:
        rows = await list_runs(client, run_filter(args), args.limit)
    except RPCError as exc:
        raise CliError(f"listing failed: {exc.message} (are the search attributes registered?)") from None
    for row in rows:
        row.pop("assistant_id", None)  # the rows as before: the assistant is a filter here
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['workflow_id']}  {row['workflow_status']:<10} {row['run_status'] or '-':<16} {row['thread_id'] or '-'}")
        if not rows:
            print("no runs match")
    return 0


async def cmd_gateway(args: argparse.Namespace) -> int:
    from durable_assistants.gateway import GatewayConfigError, load_tokens, serve

    try:
        tokens = load_tokens()  # before connecting: the configuration is the user's to fix
    except GatewayConfigError as exc:
        raise CliError(str(exc)) from None
    client = await connect()
    print(f"gateway on http://{args.host}:{args.port} ({len(tokens)} token(s), task queue {args.task_queue})", flush=True)
    await serve(client, tokens, args.host, args.port, args.task_queue, args.max_body_bytes)
    return 0


async def cmd_sync_tools(args: argparse.Namespace) -> int:
    from openai import AsyncOpenAI, NotFoundError, OpenAIError

    from durable_assistants.tools import registry

    _load_tools(args.tools)
    wanted = {schema["function"]["name"]: schema for schema in registry.schemas()}
    model = AsyncOpenAI(max_retries=2, api_key=os.environ.get("OPENAI_API_KEY", "unset"))
    try:
        assistant = await model.beta.assistants.retrieve(args.assistant)
        tools = assistant.tools or []  # compatible servers send `"tools": null` for none
        current = {t.function.name: t.model_dump(exclude_unset=True) for t in tools if t.type == "function"}
        others = [t.model_dump(exclude_unset=True) for t in tools if t.type != "function"]
        added = sorted(set(wanted) - set(current))
        removed = sorted(set(current) - set(wanted))
        changed = sorted(n for n in set(wanted) & set(current) if _normal(wanted[n]) != _normal(current[n]))
        for label, names in (("missing on the assistant", added), ("not in the registry", removed), ("different", changed)):
            if names:
                print(f"{label}: {', '.join(names)}")
        if not (added or removed or changed):
            print(f"{args.assistant}: tools match the registry ({len(wanted)} function tools)")
            return 0
        if args.check:
            return 1
        await model.beta.assistants.update(args.assistant, tools=[*others, *wanted.values()])  # type: ignore[list-item]
        print(f"{args.assistant}: updated to the registry's {len(wanted)} function tools")
        return 0
    except NotFoundError:
        raise CliError(f"no assistant {args.assistant!r} at {model.base_url}") from None
    except OpenAIError as exc:
        raise CliError(f"model API at {model.base_url}: {str(exc).splitlines()[0]}") from None
    finally:
        await model.close()


async def cmd_assistant(args: argparse.Namespace) -> int:
    """``assistant create``: an assistant whose function tools are the registry's."""
    from openai import AsyncOpenAI, OpenAIError

    from durable_assistants.tools import registry

    _load_tools(args.tools)
    model = AsyncOpenAI(max_retries=2, api_key=os.environ.get("OPENAI_API_KEY", "unset"))
    try:
        assistant = await model.beta.assistants.create(
            model=args.model, instructions=args.instructions, name=args.name, tools=registry.schemas()  # type: ignore[arg-type]
        )
    except OpenAIError as exc:
        raise CliError(f"model API at {model.base_url}: {_first_line(exc)}") from None
    finally:
        await model.close()
    if args.json:
        print(assistant.model_dump_json(indent=2))
    else:
        print(assistant.id)
        print(f"{PROG}: created {assistant.id} ({args.model}) with {len(registry.schemas())} tools: {', '.join(registry.names())}", file=sys.stderr)
    return 0


async def cmd_setup_namespace(args: argparse.Namespace) -> int:
    from durable_assistants.operate import SetupError, setup_namespace

    client = await connect()
    try:
        added = await setup_namespace(client)
    except SetupError as exc:
        raise CliError(str(exc)) from None
    if added:
        print(f"registered in namespace {client.namespace}: {', '.join(added)}")
    else:
        print(f"namespace {client.namespace} has every search attribute already")
    if args.nexus_endpoint:
        from durable_assistants.operate import setup_nexus_endpoint

        try:
            print(await setup_nexus_endpoint(client, args.nexus_endpoint, args.task_queue))
        except SetupError as exc:
            raise CliError(str(exc)) from None
    return 0


async def cmd_doctor(args: argparse.Namespace) -> int:
    from durable_assistants import codec, worker
    from durable_assistants.operate import doctor, temporal_target

    _load_tools(args.tools)
    from durable_assistants.tools import registry

    tool_queues = sorted({t.policy.task_queue for t in registry if t.policy.task_queue and t.policy.task_queue != args.task_queue})

    async def check_model() -> str:
        settings = worker.WorkerSettings.from_env(backend=args.backend)
        model = worker.openai_client(settings)
        try:
            await worker.check_model_api(model, args.backend, retry_seconds=0)
        except worker.ModelApiUnavailable as exc:
            raise RuntimeError(str(exc)) from None
        finally:
            await model.close()
        return f"{model.base_url} answers the {args.backend} API with this key"

    from temporalio.contrib.pydantic import pydantic_data_converter

    # The codec has a check of its own: a bad key must not hide what the connection is like.
    checks = await doctor(
        lambda: connect(data_converter=pydantic_data_converter), temporal_target(), args.task_queue, tool_queues, check_model, codec.data_converter
    )
    for check in checks:
        print(check.line())
    return 0 if all(c.ok for c in checks) else 1


def _load_tools(modules: str) -> None:
    from durable_assistants.worker import ToolLoadError, load_tools

    try:
        load_tools([m.strip() for m in modules.split(",") if m.strip()])
    except ToolLoadError as exc:  # its message names the module and what went wrong
        raise CliError(str(exc)) from None
    except ImportError as exc:
        raise CliError(f"cannot import tool module: {exc}") from None


def _normal(tool: dict[str, Any]) -> str:
    function = tool.get("function", {})
    return json.dumps({k: function.get(k) for k in ("name", "description", "parameters", "strict")}, sort_keys=True)
