"""Settings given as JSON in an environment variable, or in a file another variable names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def json_setting(environ: Mapping[str, str] | None, variable: str, file_variable: str, error: type[Exception]) -> tuple[str | None, str]:
    """The text of ``variable``, else of the file ``file_variable`` names (None when neither is
    set), and where it came from, for messages. A file that cannot be read raises ``error``."""
    env = os.environ if environ is None else environ
    text, where = env.get(variable) or None, variable
    if text is None and env.get(file_variable):
        where = f"{file_variable}={env[file_variable]}"
        try:
            text = Path(env[file_variable]).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise error(f"{where}: cannot read it ({exc})") from None
    return text, where
