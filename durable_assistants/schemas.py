"""JSON Schemas of the workflow contract, for callers in other languages.

    python -m durable_assistants.schemas          # rewrite schemas/*.json from the models
    python -m durable_assistants.schemas --check  # exit 1 if the committed files drifted

The contract of an ``AssistantRun`` is its workflow type name, its task queue and the JSON
of ``RunRequest`` (input) and ``RunResult`` (output). ``ProgressEvent`` is what a follower
reads from the run's stream; ``EnqueueRequest`` is the ``enqueue`` update of ``ThreadQueue``.
``gateway-openapi.json`` is the HTTP gateway's OpenAPI document (``durable_assistants.gateway``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from durable_assistants.workflows.models import EnqueueReceipt, EnqueueRequest, LiveSnapshot, ProgressEvent, RunRequest, RunResult

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# The HTTP gateway's OpenAPI document, from the same models (served at /openapi.json).
GATEWAY_OPENAPI = "gateway-openapi.json"
SCHEMAS: dict[str, type[BaseModel]] = {
    "run-request": RunRequest,
    "run-result": RunResult,
    "progress-event": ProgressEvent,
    "live-snapshot": LiveSnapshot,
    "enqueue-request": EnqueueRequest,
    "enqueue-receipt": EnqueueReceipt,
}


def render(model: type[BaseModel]) -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def render_openapi() -> str:
    from durable_assistants.gateway import openapi_document

    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_assistants.schemas", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = parser.parse_args(argv)
    drifted = []
    files = {f"{name}.schema.json": render(model) for name, model in SCHEMAS.items()}
    files[GATEWAY_OPENAPI] = render_openapi()
    for filename, text in files.items():
        path = SCHEMA_DIR / filename
        if args.check:
            if not path.exists() or path.read_text() != text:
                drifted.append(path.name)
        else:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(text)
    if drifted:
        print(f"schemas out of date: {', '.join(drifted)}; run `python -m durable_assistants.schemas`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
