"""The layout the README's map describes, checked: everything installs under
``durable_assistants``, the product's modules import each other without a cycle, and the
product does not import the test bench (the emulator, the local stack) except where the CLI
runs it. Reads the source (no server, no import of the modules under test)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "durable_assistants"
BENCH = ("durable_assistants.emulator", "durable_assistants.devstack")
# Where the product runs the bench, and why: the CLI's `emulator` and `dev` commands start
# the local stack (a worker never imports either).
PRODUCT_RUNS_THE_BENCH = {
    ("durable_assistants.cli", "durable_assistants.emulator.server"),
    ("durable_assistants.cli", "durable_assistants.devstack.demo"),
}


def modules() -> dict[str, Path]:
    """Every module of the installed package, by name: durable_assistants/ and, through its
    links, the folders at the top of the repository."""
    found = {}
    for directory, _, files in os.walk(PACKAGE, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                path = Path(directory) / file
                parts = path.relative_to(REPO).with_suffix("").parts
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of a module but those under ``if TYPE_CHECKING:`` (imports for annotations
    only, which never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def imported(path: Path) -> Iterator[str]:
    """What a module imports when it runs, at any depth of its code (a function's imports
    count too; those for type annotations only do not)."""
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: a relative import; the project imports by the installed name")


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target in imported(path):
            while target and target not in known:
                target = target.rpartition(".")[0]
            # A module's own package is imported before it anyway; the root package only
            # re-exports the client, lazily.
            if target and target != name and not name.startswith(target + ".") and target != "durable_assistants":
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_folder_of_the_product() -> None:
    names = modules()
    for expected in ("durable_assistants.workflows.run", "durable_assistants.activities.tools", "durable_assistants.tools.registry",
                     "durable_assistants.worker", "durable_assistants.cli", "durable_assistants.emulator.app", "durable_assistants.devstack.demo"):
        assert expected in names, expected
    graph = import_graph()
    assert "durable_assistants.workflows.models" in graph["durable_assistants.workflows.run"]


def test_imports_for_annotations_only_are_not_edges(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import b\ndef f():\n    import c\n")
    assert set(imported(module)) == {"typing", "typing.TYPE_CHECKING", "c"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_the_product_does_not_import_the_test_bench() -> None:
    graph = import_graph()
    crossing = {
        (name, target)
        for name, targets in graph.items() if not name.startswith(BENCH)
        for target in targets if target.startswith(BENCH)
    }
    assert crossing == PRODUCT_RUNS_THE_BENCH


@pytest.mark.parametrize(
    ("layer", "may_import"),
    [
        # The deterministic core: the workflows call activities by name with the models of
        # workflows/activity_models.py, so they import no activity (I/O) code at all.
        ("durable_assistants.workflows", ("durable_assistants.workflows", "durable_assistants.tools")),
        ("durable_assistants.tools", ("durable_assistants.tools",)),
        # The emulator is a stand-in for a server: of the product it uses only the process helpers.
        ("durable_assistants.emulator", ("durable_assistants.emulator", "durable_assistants.processes")),
    ],
)
def test_each_layer_imports_only_what_is_below_it(layer: str, may_import: tuple[str, ...]) -> None:
    graph = import_graph()
    above = {(name, target) for name, targets in graph.items() if name.startswith(layer) for target in targets
             if not target.startswith(may_import)}
    assert above == set()


@pytest.mark.parametrize("folder", ["workflows", "activities", "tools", "devstack", "emulator"])
def test_each_folder_is_linked_into_the_package_and_installed(folder: str) -> None:
    link = PACKAGE / folder
    assert link.is_symlink() and os.readlink(link) == f"../{folder}", f"durable_assistants/{folder} should be a link to ../{folder}"
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert f"durable_assistants.{folder}" in packages


def test_nothing_installs_outside_the_namespace() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert [p for p in setuptools["packages"] if p.split(".")[0] != "durable_assistants"] == []
    assert not setuptools.get("py-modules")


@pytest.mark.server  # a fresh interpreter, to see what the import alone brings in
def test_importing_the_package_imports_nothing_else() -> None:
    """Temporal's sandbox imports ``durable_assistants`` (the parent of the workflows) for
    every workflow it runs: it must not pull the client, the SDK or Temporal's client in."""
    code = ("import sys, durable_assistants; "
            "print(sorted(m for m in sys.modules if m.startswith(('durable_assistants.', 'openai', 'temporalio.client'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
    code = "import durable_assistants; print(durable_assistants.enqueue_run.__module__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "durable_assistants.client"


LONG_MODULE_LINES = 450  # "about 400"; a module over it says why it is one module


def test_a_long_module_says_why_it_is_one() -> None:
    """Product and bench modules over ``LONG_MODULE_LINES`` lines carry a "Why one module"
    paragraph in their docstring (test modules are exempt: one file per subject under test)."""
    paths = list(modules().values()) + sorted((REPO / "bench").glob("*.py"))
    unexplained = []
    for path in paths:
        source = path.read_text()
        if source.count("\n") > LONG_MODULE_LINES and "Why one module" not in (ast.get_docstring(ast.parse(source)) or ""):
            unexplained.append(f"{path.relative_to(REPO)} ({source.count(chr(10))} lines)")
    assert unexplained == []
