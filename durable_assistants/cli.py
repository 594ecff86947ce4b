"""`durable-assistants`: run the worker or the local stack, enqueue and follow runs, operate them.

    durable-assistants dev                     # Temporal dev server + emulator + worker, until Ctrl-C
    durable-assistants worker [--queue Q]
    durable-assistants emulator [--port 8787]
    durable-assistants enqueue --assistant asst_... --message "Hi" --follow
    durable-assistants status assistant-run/<id>
    durable-assistants cancel assistant-run/<id>
    durable-assistants list --thread thread_... --status requires_action
    durable-assistants sync-tools --assistant asst_... [--check]

Temporal comes from its standard environment configuration (TEMPORAL_ADDRESS, ...), the
model API from OPENAI_BASE_URL / OPENAI_API_KEY. Errors are one line and a non-zero exit.

"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from temporalio.service import RPCError

from durable_assistants.arguments import PROG, Parser, positive_int, positive_seconds
from durable_assistants.commands import (
    CliError,
    _first_line,
    cmd_approvals,
    cmd_assistant,
    cmd_cancel,
    cmd_cost,
    cmd_decide,
    cmd_doctor,
    cmd_enqueue,
    cmd_gateway,
    cmd_list,
    cmd_setup_namespace,
    cmd_status,
    cmd_sync_tools,
    timestamp,
)
from durable_assistants.cost import PricesError
from durable_assistants.workflows.models import DEFAULT_TASK_QUEUE

RUN_STATUS_HELP = (
    "the run's RunStatus: starting, in_progress, running_tools (its tools run), requires_action (outputs wait "
    "to be submitted), completed, incomplete, failed, cancelled, expired"
)


def run_filters(parser: argparse.ArgumentParser, *, assistant: str, status: str) -> None:
    """The visibility filters `list` and `cost` share (read by ``visibility_query``)."""
    parser.add_argument("--assistant", help=assistant)
    parser.add_argument("--thread", help="a thread (Assistants) or conversation (Responses) ID")
    parser.add_argument("--conversation", dest="thread", help="the same as --thread")
    parser.add_argument("--status", help=status)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Durable assistant runs on Temporal.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("worker", help="run the Temporal worker (options: see `worker --help`)", add_help=False)

    dev = commands.add_parser("dev", help="run the local stack: Temporal dev server, emulator, worker")
    dev.add_argument("--demo", action="store_true", help="also enqueue the demo run")
    dev.add_argument("--once", action="store_true", help="with --demo: exit after the run")

    commands.add_parser("emulator", help="run the Assistants API emulator (options: see `emulator --help`)", add_help=False)
    commands.add_parser("codec-server", help="decrypt payloads for the Temporal UI and CLI (options: see `codec-server --help`)", add_help=False)

    commands.add_parser("healthcheck", help="exit 0 if the worker on DA_HEALTH_ADDRESS is ready (options: see `healthcheck --help`)", add_help=False)

    enqueue = commands.add_parser("enqueue", help="enqueue a run")
    enqueue.add_argument("--assistant", help="assistant ID")
    enqueue.add_argument("--thread", help="run on this thread (runs on one thread are queued); default: a new thread")
    enqueue.add_argument("--backend", choices=["assistants", "responses"], help="the model API (default: implied by the options, else the worker's)")
    enqueue.add_argument("--model", help="the model: with --instructions an inline agent that runs on either API (with --assistant: overrides the assistant's)")
    enqueue.add_argument("--instructions", help="Responses: the instructions (Assistants: overrides the assistant's)")
    enqueue.add_argument("--conversation", help="Responses: continue this conversation (runs on one are queued)")
    enqueue.add_argument("--previous-response", help="Responses: continue from this response")
    enqueue.add_argument(
        "--responses-state", choices=["conversation", "chain", "stateless"],
        help="Responses, continuing nothing: a new conversation, a chain, or stateless (default: the worker's)",
    )
    enqueue.add_argument("--message", "-m", action="append", default=[], help="a user message to add (repeatable)")
    enqueue.add_argument("--request", help="a RunRequest as JSON, or @file.json (flags above override it)")
    enqueue.add_argument("--mode", choices=["poll", "stream"], help="poll the run or read its stream")
    enqueue.add_argument("--request-id", help="idempotency key: the same ID enqueued again is the same run")
    enqueue.add_argument("--task-queue", default=os.environ.get("DA_TASK_QUEUE", DEFAULT_TASK_QUEUE))
    enqueue.add_argument("--follow", action="store_true", help="render progress until the run ends")
    enqueue.add_argument("--wait", action="store_true", help="wait for the result")
    enqueue.add_argument("--json", action="store_true", help="print JSON (the result, or the run's workflow ID)")
    enqueue.add_argument("--timeout", type=positive_seconds, help="with --wait/--follow: stop waiting after this many seconds (the run goes on)")

    status = commands.add_parser("status", help="show a run's live status or result")
    status.add_argument("workflow_id")
    status.add_argument("--json", action="store_true")

    cancel = commands.add_parser("cancel", help="cancel a run (its tools and the API run)")
    cancel.add_argument("workflow_id")
    cancel.add_argument("--timeout", type=positive_seconds, default=30.0, help="how long to wait for the run to stop (default 30)")

    listing = commands.add_parser(
        "list",
        help="list runs through Temporal visibility, queued ones first",
        description="List runs through Temporal visibility. Runs waiting in a thread's queue come first, in queue "
        "order, with status `queued` (from the queues' QueuedRuns search attribute: the first 100 or so of each "
        "queue); then the runs that started, newest first.",
    )
    run_filters(
        listing,
        assistant="an assistant ID (queued runs are not listed: their queue does not say)",
        status=f"{RUN_STATUS_HELP}; `queued`: only the runs waiting in a queue",
    )
    listing.add_argument(
        "--awaiting-approval", action="store_true", help="only runs with a tool call waiting for a decision (AwaitingApproval)"
    )
    listing.add_argument("--limit", type=positive_int, default=20, help="at most this many runs, queued ones included (default 20)")
    listing.add_argument("--json", action="store_true")

    cost = commands.add_parser(
        "cost",
        help="sum what runs cost (tokens by model, Temporal actions from their histories, dollars with DA_PRICES)",
        description="Sum the cost of the runs a visibility query finds: tokens by model (as each run counted them), the "
        "Temporal actions read from each run's history, and dollars when a price table is set (DA_PRICES or "
        "DA_PRICES_FILE; docs/cost.md). Reads one history per run: narrow the query for many runs.",
    )
    run_filters(cost, assistant="an assistant ID", status=RUN_STATUS_HELP)
    cost.add_argument("--task-queue", help="runs of this task queue")
    cost.add_argument("--since", type=timestamp, help="runs started at or after this time (ISO 8601, e.g. 2026-12-01 or 2026-12-01T08:00:00Z)")
    cost.add_argument("--until", type=timestamp, help="runs started before this time (ISO 8601)")
    cost.add_argument("--limit", type=positive_int, default=100, help="at most this many runs, newest first (default 100)")
    cost.add_argument("--json", action="store_true", help="the sum and each run's cost as JSON")

    approvals = commands.add_parser("approvals", help="list the tool calls waiting for a decision, across runs")
    approvals.add_argument("--limit", type=positive_int, default=100, help="at most this many calls (default 100)")
    approvals.add_argument("--json", action="store_true")
    approve = commands.add_parser("approve", help="approve a tool call that waits for a decision (it runs)")
    approve.add_argument("workflow_id")
    approve.add_argument("call_id")
    approve.add_argument("--note", help="why (kept in the run's tool log)")
    approve.add_argument("--edit", metavar="JSON", help="run the tool with these arguments instead (a JSON object; both are recorded)")
    approve.add_argument("--by", help="who decides (default: DA_USER, else the login name)")
    approve.add_argument("--json", action="store_true")
    reject = commands.add_parser("reject", help="reject a tool call that waits for a decision (the model is told why)")
    reject.add_argument("workflow_id")
    reject.add_argument("call_id")
    reject.add_argument("--note", required=True, help="why: the model reads it")
    reject.add_argument("--by", help="who decides (default: DA_USER, else the login name)")
    reject.add_argument("--json", action="store_true")

    sync = commands.add_parser("sync-tools", help="make an assistant's function tools match the registry")
    sync.add_argument("--assistant", required=True, help="assistant ID")
    sync.add_argument("--tools", default=os.environ.get("DA_TOOL_MODULES", "durable_assistants.tools.examples"), help="modules that register tools")
    sync.add_argument("--check", action="store_true", help="only report drift; exit 1 if there is any")

    setup = commands.add_parser(
        "setup-namespace",
        help="register the search attributes in the namespace of TEMPORAL_ADDRESS/TEMPORAL_NAMESPACE (idempotent)",
    )
    setup.add_argument(
        "--nexus-endpoint", metavar="NAME",
        help="also create this Nexus endpoint, routed to --task-queue in this namespace, for callers in other namespaces (docs/nexus.md)",
    )
    setup.add_argument("--task-queue", default=os.environ.get("DA_TASK_QUEUE") or DEFAULT_TASK_QUEUE, help="the run workflow's task queue")
    doctor = commands.add_parser("doctor", help="check Temporal, the search attributes, the pollers, the model API and the codec key")
    doctor.add_argument("--task-queue", default=os.environ.get("DA_TASK_QUEUE") or DEFAULT_TASK_QUEUE, help="the run workflow's task queue")
    doctor.add_argument(
        "--tools", default=os.environ.get("DA_TOOL_MODULES", "durable_assistants.tools.examples"),
        help="modules that register tools (their task queues are checked too)",
    )
    doctor.add_argument("--backend", choices=["assistants", "responses"], default=os.environ.get("DA_BACKEND") or "assistants", help="the model API to check")

    gateway = commands.add_parser("gateway", help="serve the HTTP gateway: enqueue and follow runs over HTTP (docs/gateway.md)")
    gateway.add_argument("--host", default=os.environ.get("DA_GATEWAY_HOST", "127.0.0.1"), help="interface to listen on (default: %(default)s)")
    gateway.add_argument("--port", type=positive_int, default=int(os.environ.get("DA_GATEWAY_PORT", "8080")), help="port (default: %(default)s)")
    gateway.add_argument("--task-queue", default=os.environ.get("DA_TASK_QUEUE") or DEFAULT_TASK_QUEUE, help="the run workflow's task queue")
    gateway.add_argument("--max-body-bytes", type=positive_int, default=1024 * 1024, help="larger request bodies get 413 (default: %(default)s)")
    token = commands.add_parser("gateway-token", help="make a gateway token: print it once, and its entry for DA_GATEWAY_TOKENS")
    token.add_argument("name", help="who holds it")
    token.add_argument("--assistant", action="append", required=True, help="an assistant it may use (repeatable); '*' for any")

    assistant = commands.add_parser("assistant", help="manage assistants on the model API (Assistants protocol)")
    assistant_commands = assistant.add_subparsers(dest="assistant_command", required=True, metavar="ACTION")
    create = assistant_commands.add_parser("create", help="create an assistant whose tools are the registry's; print its ID")
    create.add_argument("--model", required=True, help="the model, e.g. gpt-4o-mini")
    create.add_argument("--instructions", help="the system instructions")
    create.add_argument("--name", help="a name for it")
    create.add_argument(
        "--tools", default=os.environ.get("DA_TOOL_MODULES", "durable_assistants.tools.examples"),
        help="modules that register its tools (comma-separated; default: $DA_TOOL_MODULES or durable_assistants.tools.examples)",
    )
    create.add_argument("--json", action="store_true", help="print the assistant as JSON")
    return parser


# ---------------------------------------------------------------------------- commands


# ---------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    # `worker` and `emulator` hand all their options to the programs they run.
    if argv[:1] == ["worker"]:
        from durable_assistants import worker

        return worker.main(argv[1:])
    if argv[:1] == ["emulator"]:
        from durable_assistants.emulator.server import main as emulator_main

        return emulator_main(argv[1:])
    if argv[:1] == ["codec-server"]:
        from durable_assistants.codec_server import main as codec_server_main

        return codec_server_main(argv[1:])
    if argv[:1] == ["healthcheck"]:
        from durable_assistants.health import main as healthcheck_main

        return healthcheck_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        if args.once and not args.demo:
            print(f"{PROG}: error: dev --once goes with --demo (without the demo there is no run to wait for)", file=sys.stderr)
            return 2
        from durable_assistants.devstack.demo import main as dev_main

        return dev_main(["--stack-only"] if not args.demo else (["--once"] if args.once else []))
    if args.command == "gateway-token":
        from durable_assistants.gateway import new_token

        text, entry = new_token(args.name, args.assistant)
        print(f"token (shown once; give it to {args.name}): {text}")
        print(f"its entry in {'DA_GATEWAY_TOKENS'} (a JSON list of these): {entry.model_dump_json()}")
        return 0
    runner = {
        "gateway": cmd_gateway,
        "enqueue": cmd_enqueue,
        "status": cmd_status,
        "cancel": cmd_cancel,
        "list": cmd_list,
        "approvals": cmd_approvals,
        "cost": cmd_cost,
        "approve": cmd_decide,
        "reject": cmd_decide,
        "sync-tools": cmd_sync_tools,
        "assistant": cmd_assistant,
        "setup-namespace": cmd_setup_namespace,
        "doctor": cmd_doctor,
    }[args.command]
    try:
        return asyncio.run(runner(args))
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except PricesError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except RPCError as exc:
        print(f"{PROG}: error: Temporal: {' '.join(exc.message.split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141  # the reader went away (e.g. `| head`); nothing more to say
    except Exception as exc:  # a bug of ours: still one line, and how to see more
        if os.environ.get("DA_DEBUG"):
            raise
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {_first_line(exc)} (DA_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70


def entry_point() -> None:
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization after using the Temporal client: its Rust runtime threads
    # can abort a finalizing interpreter (https://github.com/temporalio/sdk-python/issues/300).
    os._exit(code)


if __name__ == "__main__":
    entry_point()
