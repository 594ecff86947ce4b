"""Run the emulator under uvicorn: from the command line, or as a child process of a test
or of the local stack (``EmulatorProcess``)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from durable_assistants.emulator.app import Emulator
from durable_assistants.emulator.config import COMPAT_SWITCHES, EmulatorConfig
from durable_assistants.processes import die_with_parent, ready_url, stop_child

READY_LINE = re.compile(r"emulator listening on (?P<url>http://\S+/v1)")


def build_parser(prog: str = "durable-assistants emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Local OpenAI Assistants, Responses and Conversations API emulator (base URL http://HOST:PORT/v1).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8787, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--api-key", help="require this API key; by default any key is accepted")
    parser.add_argument("--expiry-seconds", type=float, help="run expiry after creation (default: 600)")
    parser.add_argument("--turn-seconds", type=float, help="time the model takes per turn (default: 0.05)")
    parser.add_argument("--queue-seconds", type=float, help="time a run stays queued (default: 0)")
    parser.add_argument("--chars-per-second", type=float, help="streaming rate of assistant text (default: unthrottled)")
    parser.add_argument("--poll-after-ms", type=int, help="openai-poll-after-ms on non-terminal run reads (default: 100)")
    parser.add_argument("--seed", type=int, help="seed for IDs and fault sampling")
    parser.add_argument(
        "--strict-spec",
        action="store_true",
        default=None,
        help="enforce the spec's letter where OpenAI was more lenient (docs/emulator-fidelity.md)",
    )
    parser.add_argument(
        "--compat",
        action="append",
        default=[],
        metavar="NAME",
        help="behave like a compatible server that is not OpenAI in this way (repeatable, comma-separated, "
        f"or 'all'): {', '.join(COMPAT_SWITCHES)}",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    fields = {
        "api_key": args.api_key,
        "expiry_seconds": args.expiry_seconds,
        "turn_seconds": args.turn_seconds,
        "queue_seconds": args.queue_seconds,
        "chars_per_second": args.chars_per_second,
        "poll_after_ms": args.poll_after_ms,
        "seed": args.seed,
        "strict_spec": args.strict_spec,
        "compat": compat_from_args(args.compat) or None,
    }
    return EmulatorConfig(**{k: v for k, v in fields.items() if v is not None})


def compat_from_args(values: Sequence[str]) -> dict[str, bool]:
    """``--compat`` values (names, comma-separated names, or ``all``) as the ``compat`` setting."""
    names = [name.strip().replace("-", "_") for value in values for name in value.split(",") if name.strip()]
    if "all" in names:
        return dict.fromkeys(COMPAT_SWITCHES, True)
    unknown = [name for name in names if name not in COMPAT_SWITCHES]
    if unknown:
        raise ValueError(f"unknown switch {unknown[0]!r}; use 'all' or one of: {', '.join(COMPAT_SWITCHES)}")
    return dict.fromkeys(names, True)


def serve(config: EmulatorConfig, host: str, port: int, log_level: str = "warning") -> None:
    """Serve until SIGINT or SIGTERM (uvicorn handles both and shuts down gracefully)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it Nagle's algorithm and delayed ACKs add ~40 ms to every request on a kept-alive connection.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before the ready line: a client that connects at once is queued in the backlog
    # until uvicorn accepts, not refused (uvicorn's own listen() later only sets the backlog).
    sock.listen(2048)
    bound_port = sock.getsockname()[1]
    emulator = Emulator(config)
    server = uvicorn.Server(
        uvicorn.Config(
            emulator.app,
            log_level=log_level,
            access_log=log_level == "debug",
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"emulator listening on http://{shown}:{bound_port}/v1", flush=True)
    server.run(sockets=[sock])


def main(argv: Sequence[str] | None = None, prog: str = "durable-assistants emulator") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        compat_from_args(args.compat)
    except ValueError as exc:
        parser.error(f"--compat: {exc}")
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-")
        parser.error(f"{flag}: {error['msg']}, got {error.get('input')!r}")
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
    # handler that was installed before it; make that a clean exit with status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        serve(config, args.host, args.port, args.log_level)
    except OSError as exc:
        print(f"emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        _say("emulator stopped")
    return 0


def _say(line: str) -> None:
    """Print to stdout, which may be a pipe whose reader is gone (a parent stopped first):
    then there is nobody to tell, and no reason for a BrokenPipeError traceback."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own flush at exit doesn't fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


class EmulatorProcess:
    """The emulator as a child process on a free loopback port; a context manager.

    ``base_url`` is ready when ``__enter__`` returns; leaving stops the process (SIGTERM,
    then SIGKILL) so nothing outlives the caller.
    """

    def __init__(self, *args: str, startup_timeout: float = 20.0) -> None:
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def admin_url(self) -> str:
        return self.base_url.removesuffix("/v1") + "/_emulator"

    def __enter__(self) -> EmulatorProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durable_assistants.emulator", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_parent,
        )
        url = ready_url(self.process, READY_LINE, self.startup_timeout)
        if url is not None:
            self.base_url = url
            return self
        self.stop()
        raise RuntimeError(f"the emulator did not start (exit code {self.process.returncode})")

    def stop(self) -> int | None:
        return stop_child(self.process)

    def __exit__(self, *exc: object) -> None:
        self.stop()
