"""Payload encryption: AES-256-GCM over every payload the Temporal server stores.

Workflow and activity inputs and results, heartbeat details, query and update payloads,
memos and summaries go through the data converter's payload codec on their way to the
server, so the server (and anyone who can read its database or its histories) only sees
ciphertext. Workers, clients and the codec server (``durable_assistants/codec_server.py``,
for the Temporal UI and CLI) decrypt with the same keys.

Keys come from the environment, never from a history:

    DA_CODEC_KEYS=2025-01:BASE64KEY,2025-07:BASE64KEY     # ID:base64 of 32 random bytes, comma-separated
    DA_CODEC_KEYS_FILE=/var/run/secrets/da/codec-keys     # the same format in a file (a mounted secret)

The last key listed encrypts; every listed key decrypts, so a key is rotated by appending a
new one (all workers and clients first learn it, then it becomes the last) and dropped once
no history that still matters was written with it. Make a key with

    python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"

An encrypted payload's metadata says ``encoding: binary/encrypted`` and
``encryption-key-id: <ID>``; its data is a 12-byte random nonce followed by the AES-GCM
ciphertext (with its 16-byte tag) of the whole original ``Payload`` serialized as protobuf, so
the original metadata (its encoding, a pydantic type hint) is encrypted too. The key ID is the
associated data: a payload whose key ID was altered fails authentication. A payload without
that encoding passes through decoding unchanged, so histories written before encryption was
turned on stay readable.

Not encrypted, because the server must read them: search attributes, workflow and activity
IDs and types, task queues, timestamps, failure messages and stack traces (see
docs/encryption.md).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEYS_VARIABLE = "DA_CODEC_KEYS"
KEYS_FILE_VARIABLE = "DA_CODEC_KEYS_FILE"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the size GCM is specified for; random per payload
TAG_BYTES = 16
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAKE_A_KEY = 'python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'


class CodecConfigError(ValueError):
    """Keys that can't be used (a bad ``DA_CODEC_KEYS`` entry, an unreadable key file); the
    message is one line, names the variable and the key ID, and never contains key material."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload these keys can't decrypt: its key ID is not known, or it fails
    authentication (another key under that ID, or altered data). The message names the key
    ID, never a key."""

    def __init__(self, message: str, key_id: str | None) -> None:
        super().__init__(message)
        self.key_id = key_id


class KeyRing:
    """Encryption keys by ID, in order: the last one encrypts, any of them decrypts.

    Its ``repr`` shows the key IDs only, so a ring in a log line or a traceback's locals
    gives nothing away."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys:
            if not KEY_ID.fullmatch(key_id):
                raise CodecConfigError(f"key ID {key_id!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'")
            if key_id in self._keys:
                raise CodecConfigError(f"key ID {key_id!r} is given twice")
            if len(key) != KEY_BYTES:
                raise CodecConfigError(f"key {key_id!r} is {len(key)} bytes; AES-256 needs exactly {KEY_BYTES}")
            self._keys[key_id] = bytes(key)
        if not self._keys:
            raise CodecConfigError("no keys given")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in self._keys.items()}

    @classmethod
    def parse(cls, text: str, source: str = KEYS_VARIABLE) -> KeyRing:
        """Keys from ``ID:BASE64KEY`` entries separated by commas or line breaks (a key file
        may end with a newline). ``source`` names where the text came from, for errors."""
        entries = [entry.strip() for entry in re.split(r"[,\n\r]", text)]
        entries = [entry for entry in entries if entry]
        if not entries:
            raise CodecConfigError(f"{source} has no keys; give ID:BASE64KEY entries (a key: {MAKE_A_KEY})")
        keys: list[tuple[str, bytes]] = []
        for number, entry in enumerate(entries, start=1):
            key_id, colon, encoded = entry.partition(":")
            key_id, encoded = key_id.strip(), encoded.strip()
            # Never echo an entry: without its colon, it may be a bare key.
            if not colon or not key_id:
                raise CodecConfigError(f"{source}: entry {number} is not ID:BASE64KEY")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise CodecConfigError(f"{source}: key {key_id!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise CodecConfigError(
                    f"{source}: key {key_id!r} decodes to {len(key)} bytes; AES-256 needs exactly {KEY_BYTES} (make one: {MAKE_A_KEY})"
                )
            keys.append((key_id, key))
        try:
            return cls(keys)
        except CodecConfigError as exc:
            raise CodecConfigError(f"{source}: {exc}") from None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def current_id(self) -> str:
        """The ID of the key that encrypts: the last one given."""
        return self.ids[-1]

    def cipher(self, key_id: str) -> AESGCM | None:
        return self._ciphers.get(key_id)

    def __repr__(self) -> str:
        return f"KeyRing(ids={list(self.ids)!r}, encrypts_with={self.current_id!r})"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec over a ``KeyRing``; see the module's docstring."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def __repr__(self) -> str:
        return f"EncryptionCodec({self.keys!r})"

    @cached_property
    def _current(self) -> tuple[bytes, AESGCM]:
        key_id = self.keys.current_id
        cipher = self.keys.cipher(key_id)
        assert cipher is not None
        return key_id.encode(), cipher

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id, cipher = self._current
        nonce = os.urandom(NONCE_BYTES)
        sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        """The original payload; a payload that is not encrypted comes back as it is."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if not raw_id:
            raise PayloadDecryptionError(f"an encrypted payload has no {KEY_ID_METADATA} metadata; it can't be decrypted", None)
        key_id = raw_id.decode("utf-8", errors="replace")
        cipher = self.keys.cipher(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with key ID {key_id!r}, which is not among the known keys "
                f"({', '.join(self.keys.ids)}); add that key to {KEYS_VARIABLE}",
                key_id,
            )
        data = payload.data
        try:
            if len(data) < NONCE_BYTES + TAG_BYTES:
                raise InvalidTag()
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], raw_id)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload encrypted with key ID {key_id!r} failed authentication: the key known as {key_id!r} "
                "is not the one it was encrypted with, or the payload was altered",
                key_id,
            ) from None
        try:
            return Payload.FromString(plain)
        except DecodeError:
            raise PayloadDecryptionError(f"payload encrypted with key ID {key_id!r} decrypted to something that is not a payload", key_id) from None


def keys_from_env(environ: Mapping[str, str] = os.environ) -> KeyRing | None:
    """The keys in ``DA_CODEC_KEYS`` or in the file ``DA_CODEC_KEYS_FILE`` names; None when
    neither is set (an empty variable counts as unset). Raises ``CodecConfigError`` (one line)
    for keys that can't be used, for both being set, and for a file that can't be read or
    holds no keys: a deployment that asked for encryption never silently runs without."""
    text = environ.get(KEYS_VARIABLE) or None
    path = environ.get(KEYS_FILE_VARIABLE) or None
    if text is not None and path is not None:
        raise CodecConfigError(f"set {KEYS_VARIABLE} or {KEYS_FILE_VARIABLE}, not both")
    if text is not None:
        return KeyRing.parse(text, KEYS_VARIABLE)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                contents = f.read()
        except UnicodeDecodeError:
            raise CodecConfigError(f"{KEYS_FILE_VARIABLE}={path}: not UTF-8 text") from None
        except OSError as exc:
            raise CodecConfigError(f"{KEYS_FILE_VARIABLE}={path}: cannot read it: {exc.strerror or exc}") from None
        return KeyRing.parse(contents, f"{KEYS_FILE_VARIABLE} ({path})")
    return None


def data_converter(environ: Mapping[str, str] = os.environ) -> DataConverter:
    """The project's data converter: ``pydantic_data_converter`` itself when no keys are
    configured, else the same with an ``EncryptionCodec`` over the configured keys. Raises
    ``CodecConfigError`` (one line) for keys that can't be used."""
    keys = keys_from_env(environ)
    if keys is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(keys))
