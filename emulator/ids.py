"""OpenAI-style object IDs: 24 letters and digits after `asst_`, `thread_`, `msg_`, `run_`,
`step_`, `call_`; 48 hex digits after the Responses family's `resp_`, `msg_`, `fc_`, `conv_`."""

from __future__ import annotations

import random
import string

_ALPHABET = string.ascii_letters + string.digits


class IdFactory:
    """Random-looking IDs; with a seed the sequence repeats from one server start to the next."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed) if seed is not None else random.SystemRandom()

    def new(self, prefix: str, length: int = 24) -> str:
        return prefix + "".join(self._random.choices(_ALPHABET, k=length))

    def hex(self, prefix: str, length: int = 48) -> str:
        """A Responses-family ID: the prefix and lowercase hex (`resp_`, `msg_`, `fc_`, `conv_`)."""
        return prefix + "".join(self._random.choices("0123456789abcdef", k=length))

    def request_id(self) -> str:
        return "req_" + "".join(self._random.choices("0123456789abcdef", k=32))
