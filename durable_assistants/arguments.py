"""Command-line arguments as every command of the project reads them: a usage error on one line,
and the number types its options take. The CLI, the worker, the codec server and the health
check share it (they are separate programs; ``durable-assistants`` hands each its arguments)."""

from __future__ import annotations

import argparse
from typing import NoReturn

# The command line's name, as errors and hints print it.
PROG = "durable-assistants"


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the usage is what ``--help`` is for)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value
