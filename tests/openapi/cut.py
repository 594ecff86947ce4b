"""Cut, from OpenAI's published OpenAPI spec, the two files the tests validate against.

    python tests/openapi/cut.py SOURCE [--api assistants|responses] [--out-dir DIR]

SOURCE is ``openapi.yaml`` of https://github.com/openai/openai-openapi at the commit named
in README.md beside this script (a file already cut from it, holding the paths below, works
too). For each API this writes ``<api>.yaml`` into ``--out-dir`` (default: this directory)
with:

* ``openapi`` and ``info`` as published;
* the path items listed in `APIS` (every method of each, unchanged);
* every component those paths and the extra root schemas reference, transitively
  (``components.schemas`` and ``components.responses``), unchanged.

Everything else (other paths, ``servers``, ``security``, ``tags``, ``webhooks``,
``x-oaiMeta``, unreferenced schemas) is left out. Nothing inside a kept path or component
is edited: the gaps between the spec and the real service are relaxed at load time by
``tests/openapi_spec.py``, not here. Paths and components keep the source's order, and the
YAML is written by PyYAML's pure-Python dumper (``sort_keys=False, width=120``) so that the
output is the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
_COMPONENTS = "#/components/"


@dataclass(frozen=True)
class Api:
    # Path templates kept, in the source's order (each must be in the source).
    paths: tuple[str, ...]
    # Schemas kept even if no kept path references them.
    roots: tuple[str, ...]


APIS = {
    # The whole deprecated Assistants API: every path under /assistants and /threads.
    "assistants": Api(
        paths=(
            "/assistants",
            "/assistants/{assistant_id}",
            "/threads",
            "/threads/runs",
            "/threads/{thread_id}",
            "/threads/{thread_id}/messages",
            "/threads/{thread_id}/messages/{message_id}",
            "/threads/{thread_id}/runs",
            "/threads/{thread_id}/runs/{run_id}",
            "/threads/{thread_id}/runs/{run_id}/cancel",
            "/threads/{thread_id}/runs/{run_id}/steps",
            "/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
            "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
        ),
        # No path documents its stream, so the stream events are roots of their own.
        roots=("AssistantStreamEvent", "ErrorResponse"),
    ),
    # Only the Responses and Conversations paths the emulator serves and the tests call:
    # not /responses/input_tokens, /responses/compact or the "?beta=true" variants (which
    # alone pull in about half of the Responses schemas).
    "responses": Api(
        paths=(
            "/conversations/{conversation_id}/items",
            "/conversations/{conversation_id}/items/{item_id}",
            "/responses",
            "/responses/{response_id}",
            "/responses/{response_id}/cancel",
            "/responses/{response_id}/input_items",
            "/conversations",
            "/conversations/{conversation_id}",
        ),
        roots=("ResponseStreamEvent", "ErrorResponse"),
    ),
}


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _refs(item, found)


def cut(source: dict[str, Any], api: Api) -> dict[str, Any]:
    """The part of the ``source`` document that ``api`` keeps."""
    missing = [path for path in api.paths if path not in source["paths"]]
    if missing:
        raise SystemExit(f"the source has no path {missing}")
    paths = {path: item for path, item in source["paths"].items() if path in api.paths}

    components = source.get("components", {})
    pending: set[str] = set()
    _refs(paths, pending)
    pending |= {f"{_COMPONENTS}schemas/{name}" for name in api.roots}
    kept: dict[str, set[str]] = {}
    while pending:
        ref = pending.pop()
        if not ref.startswith(_COMPONENTS) or ref.count("/") != 3:
            raise SystemExit(f"unsupported reference {ref!r}")
        kind, name = ref.removeprefix(_COMPONENTS).split("/")
        if name in kept.get(kind, ()):
            continue
        if name not in components.get(kind, {}):
            if kind == "schemas":
                raise SystemExit(f"the source has no schema {ref!r}")
            # Files cut earlier kept only the schemas; such a reference stays dangling there
            # too. The validator never follows one (only ``components.schemas``).
            print(f"warning: the source has no {ref!r}; the reference is left dangling", file=sys.stderr)
            continue
        kept.setdefault(kind, set()).add(name)
        _refs(components[kind][name], pending)

    document: dict[str, Any] = {"openapi": source["openapi"], "info": source["info"], "paths": paths}
    document["components"] = {
        kind: {name: value for name, value in components[kind].items() if name in kept[kind]}
        for kind in components
        if kind in kept
    }
    return document


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="openapi.yaml of openai/openai-openapi")
    parser.add_argument("--api", choices=sorted(APIS), action="append", help="default: both")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with args.source.open("rb") as stream:
        source = yaml.load(stream, Loader=loader)
    for name in args.api or sorted(APIS):
        document = cut(source, APIS[name])
        text = yaml.dump(document, Dumper=yaml.SafeDumper, sort_keys=False, width=120)
        if yaml.load(text, Loader=loader) != document:
            raise SystemExit(f"{name}: the written YAML does not read back as the cut document")
        out = args.out_dir / f"{name}.yaml"
        out.write_text(text, encoding="utf-8")
        counts = ", ".join(f"{len(v)} {k}" for k, v in document["components"].items())
        print(f"{out}: {len(document['paths'])} paths, {counts}, {len(text.encode()):,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
