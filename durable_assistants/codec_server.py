"""The codec server: decrypts payloads for the Temporal UI and CLI, with the worker's keys.

    durable-assistants codec-server [--host 127.0.0.1] [--port 8081] [--cors-origin URL ...]

It speaks Temporal's remote codec protocol: ``POST /encode`` and ``POST /decode`` take
``{"payloads": [...]}`` (``temporal.api.common.v1.Payloads`` in protobuf's JSON form) and
answer the same shape; the UI sends ``X-Namespace`` and, when configured to, the user's
``Authorization``. Browsers call it directly from the UI's page, so it answers CORS for the
UI's origins (``--cors-origin``, repeatable; default http://localhost:8233). ``GET /healthz``
answers ``{"status": "ok"}`` without authentication, for probes.

Keys come from ``DA_CODEC_KEYS`` or ``DA_CODEC_KEYS_FILE`` as for the worker
(``durable_assistants/codec.py``); without keys it refuses to start (exit 2). With
``DA_CODEC_TOKEN`` set, ``/encode`` and ``/decode`` answer 401 unless the request carries
``Authorization: Bearer <token>`` (``temporal ... --codec-auth "Bearer <token>"``). It decrypts
whatever it is sent for anyone who can reach it: keep it on loopback or behind the same access
control as the UI. SIGTERM or SIGINT stops it gracefully, with exit status 0.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from durable_assistants.arguments import Parser  # usage errors in one line, as every command's
from durable_assistants.codec import KEYS_FILE_VARIABLE, KEYS_VARIABLE, CodecConfigError, EncryptionCodec, PayloadDecryptionError, keys_from_env
from durable_assistants.processes import die_with_parent, ready_url, stop_child

TOKEN_VARIABLE = "DA_CODEC_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
DEFAULT_CORS_ORIGINS = ("http://localhost:8233",)
# What the Temporal UI sends with its codec calls (Authorization only when told to pass the
# user's access token); a preflight asking for these must be allowed.
ALLOWED_HEADERS = ("content-type", "x-namespace", "authorization")
READY_LINE = re.compile(r"codec server listening on (?P<url>http://\S+)")
PROG = "durable-assistants codec-server"

log = logging.getLogger("codec_server")


def create_app(codec: PayloadCodec, *, cors_origins: Sequence[str] = DEFAULT_CORS_ORIGINS, token: str | None = None) -> Starlette:
    """The codec server's ASGI app: ``codec`` does the work, ``token`` (if any) is required."""
    expected = f"bearer {token}".encode() if token else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
        return hmac.compare_digest(f"{scheme.lower()} {value.strip()}".encode(), expected)

    async def transform(request: Request, encode: bool) -> Response:
        if not authorized(request):
            return JSONResponse(
                {"error": "missing or wrong bearer token (Authorization: Bearer <DA_CODEC_TOKEN>)"},
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
        payloads = Payloads()
        try:
            json_format.Parse(await request.body(), payloads)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not {{\"payloads\": [...]}} in protobuf JSON form: {_one_line(exc)}"}, status_code=400)
        try:
            if encode:
                await codec.encode_wrapper(payloads)
            else:
                await codec.decode_wrapper(payloads)
        except PayloadDecryptionError as exc:
            log.warning("decode failed: %s (namespace %s)", exc, request.headers.get("x-namespace", "-"))
            return JSONResponse({"error": str(exc), "key_id": exc.key_id}, status_code=422)
        except Exception as exc:  # still one line for the caller, never a traceback
            log.error("%s failed: %s", "encode" if encode else "decode", _one_line(exc))
            return JSONResponse({"error": f"{'encode' if encode else 'decode'} failed: {_one_line(exc)}"}, status_code=500)
        return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in payloads.payloads]})

    async def encode(request: Request) -> Response:
        return await transform(request, encode=True)

    async def decode(request: Request) -> Response:
        return await transform(request, encode=False)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/encode", encode, methods=["POST"]),
            Route("/decode", decode, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=[
            # Outermost: a preflight is answered before any token check (browsers send none
            # with it), and a 401 still carries the headers that let the UI read it.
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=list(ALLOWED_HEADERS),
                allow_credentials=True,  # the UI's "include cross-origin credentials" option
                max_age=600,
            )
        ],
    )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description=f"Temporal codec server: decrypts payloads for the Temporal UI and CLI with the keys in ${KEYS_VARIABLE} "
        f"or ${KEYS_FILE_VARIABLE}; with ${TOKEN_VARIABLE} set, requests must carry 'Authorization: Bearer <token>'.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--cors-origin", action="append", dest="cors_origins", metavar="URL",
        help=f"an origin the Temporal UI is served from (repeatable; default: {', '.join(DEFAULT_CORS_ORIGINS)})",
    )
    return parser


def serve(app: Starlette, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn stops gracefully, then re-raises the signal)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections made as soon as the ready line is read wait in the backlog
    shown = f"[{host}]" if ":" in host else host
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="off"))
    print(f"codec server listening on http://{shown}:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


def main(argv: Sequence[str] | None = None, prog: str = PROG, environ: Mapping[str, str] = os.environ) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        keys = keys_from_env(environ)
    except CodecConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if keys is None:
        print(
            f"{prog}: no keys: set {KEYS_VARIABLE} (ID:BASE64KEY,...) or {KEYS_FILE_VARIABLE}; a codec server without keys can decrypt nothing",
            file=sys.stderr,
        )
        return 2
    token = environ.get(TOKEN_VARIABLE) or None
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"{prog}: warning: listening on {args.host} without {TOKEN_VARIABLE}: anyone who can reach it can decrypt payloads", file=sys.stderr)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{prog}: %(message)s")
    app = create_app(EncryptionCodec(keys), cors_origins=args.cors_origins or DEFAULT_CORS_ORIGINS, token=token)
    # uvicorn re-raises the signal it stopped for to the handler installed before it: make
    # that, and a signal before it starts, a clean exit with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    try:
        serve(app, args.host, args.port)
    except OSError as exc:
        print(f"{prog}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


class CodecServerProcess:
    """The codec server as a child process on a free loopback port; a context manager.

    ``url`` is ready when ``__enter__`` returns; leaving stops the process (SIGTERM, then
    SIGKILL), and the child gets SIGTERM if its parent dies, so none outlives the caller."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_file: str | Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> CodecServerProcess:
        log = open(self.log_file, "ab") if self.log_file else None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "durable_assistants.codec_server", "--port", "0", *self.args],
                stdout=subprocess.PIPE, stderr=log, text=True,
                env={**self.env, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent,
            )
        finally:
            if log is not None:
                log.close()  # the child has its own descriptor
        url = ready_url(self.process, READY_LINE, self.startup_timeout)
        if url is not None:
            self.url = url
            return self
        self.stop()
        where = f"; see {self.log_file}" if self.log_file else ""
        raise RuntimeError(f"the codec server did not start (exit code {self.process.returncode}){where}")

    def stop(self) -> int | None:
        return stop_child(self.process)

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
