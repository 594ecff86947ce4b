"""Payload encryption (``durable_assistants/codec.py``) and the codec server
(``durable_assistants/codec_server.py``).

Unit tests of the codec and its key configuration; then a real run on a real Temporal dev
server whose client and workers encrypt, with its raw history read by a client that has no
codec; then the codec server over real HTTP (a child process, as deployed): what the Temporal
UI and CLI send it, its token, CORS and errors; and ``durable-assistants dev`` with keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from openai import AsyncOpenAI, OpenAI
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

import durable_assistants.tools.examples  # noqa: F401  (registers get_weather)
from durable_assistants import codec_server, worker
from durable_assistants.client import enqueue_run
from durable_assistants.codec import (
    ENCODING,
    KEY_ID_METADATA,
    CodecConfigError,
    EncryptionCodec,
    KeyRing,
    PayloadDecryptionError,
    data_converter,
    keys_from_env,
)
from durable_assistants.codec_server import CodecServerProcess
from durable_assistants.devstack.temporal import TemporalDevServer, temporal_binary
from durable_assistants.emulator.server import EmulatorProcess
from durable_assistants.processes import die_with_parent, stop_process
from durable_assistants.tools import registry
from durable_assistants.workflows.models import MessageInput, RunRequest, RunResult
from tests.conftest import script
from tests.test_worker_startup import _alive, _children_of

REPO = Path(__file__).resolve().parent.parent


def new_key() -> bytes:
    return os.urandom(32)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


OLD_KEY, NEW_KEY, OTHER_KEY = new_key(), new_key(), new_key()
KEYS = f"old-2024:{b64(OLD_KEY)},new-2025:{b64(NEW_KEY)}"
TOKEN = "s3cret-codec-token"
UI_ORIGIN = "http://localhost:8233"


def ring(*pairs: tuple[str, bytes]) -> KeyRing:
    return KeyRing(pairs)


def plain_payload(value: Any) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


def assert_no_key_material(text: str, *keys: bytes) -> None:
    for key in keys:
        assert b64(key) not in text and key.hex() not in text and repr(key) not in text


# ---------------------------------------------------------------------------- the codec


async def test_a_payload_round_trips_with_its_metadata_and_the_server_sees_only_ciphertext() -> None:
    codec = EncryptionCodec(ring(("k1", NEW_KEY)))
    original = plain_payload({"message": "the launch code is 0000", "n": 3})
    original.metadata["x-extra"] = b"kept"
    [sealed] = await codec.encode([original])
    assert dict(sealed.metadata) == {"encoding": ENCODING, KEY_ID_METADATA: b"k1"}
    assert b"launch code" not in sealed.data and b"json/plain" not in sealed.data and b"x-extra" not in sealed.data
    [again] = await codec.encode([original])
    assert again.data != sealed.data  # a fresh nonce each time
    assert await codec.decode([sealed, again]) == [original, original]


async def test_the_whole_data_converter_round_trips_a_run_request() -> None:
    converter = data_converter({"DA_CODEC_KEYS": KEYS})
    request = RunRequest(assistant_id="asst_1", messages=[MessageInput(content="meet me at the old mill")])
    payloads = await converter.encode([request, "a plain string"])
    assert all(p.metadata["encoding"] == ENCODING for p in payloads)
    assert not any(b"old mill" in p.data for p in payloads)
    assert await converter.decode(payloads, [RunRequest, str]) == [request, "a plain string"]


def test_without_keys_the_converter_is_the_pydantic_one_unchanged() -> None:
    assert data_converter({}) is pydantic_data_converter
    assert data_converter({"DA_CODEC_KEYS": "", "DA_CODEC_KEYS_FILE": ""}) is pydantic_data_converter


def test_with_keys_the_converter_is_the_pydantic_one_with_the_codec() -> None:
    converter = data_converter({"DA_CODEC_KEYS": KEYS})
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_codec.keys.ids == ("old-2024", "new-2025")
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    assert converter.failure_converter_class is pydantic_data_converter.failure_converter_class
    assert pydantic_data_converter.payload_codec is None  # the shared converter is not changed


async def test_rotation_the_newest_key_encrypts_and_an_old_one_still_decrypts() -> None:
    before = EncryptionCodec(ring(("old-2024", OLD_KEY)))
    after = EncryptionCodec(KeyRing.parse(KEYS))
    original = plain_payload("written before the rotation")
    [written_before] = await before.encode([original])
    [written_after] = await after.encode([original])
    assert written_before.metadata[KEY_ID_METADATA] == b"old-2024"
    assert written_after.metadata[KEY_ID_METADATA] == b"new-2025"
    assert await after.decode([written_before, written_after]) == [original, original]
    # The old key alone can't read what the new one wrote, and says which key it needs.
    with pytest.raises(PayloadDecryptionError, match="'new-2025'"):
        await before.decode([written_after])


async def test_an_unknown_key_id_is_a_clear_error_naming_it_and_no_key() -> None:
    [sealed] = await EncryptionCodec(ring(("new-2025", NEW_KEY))).encode([plain_payload("x")])
    with pytest.raises(PayloadDecryptionError) as raised:
        await EncryptionCodec(ring(("other", OTHER_KEY))).decode([sealed])
    message = str(raised.value)
    assert raised.value.key_id == "new-2025"
    assert "key ID 'new-2025'" in message and "not among the known keys (other)" in message and "DA_CODEC_KEYS" in message
    assert "\n" not in message
    assert_no_key_material(message, NEW_KEY, OTHER_KEY)


async def test_a_wrong_key_under_the_same_id_fails_authentication_naming_the_id() -> None:
    [sealed] = await EncryptionCodec(ring(("k1", NEW_KEY))).encode([plain_payload("x")])
    with pytest.raises(PayloadDecryptionError) as raised:
        await EncryptionCodec(ring(("k1", OTHER_KEY))).decode([sealed])
    message = str(raised.value)
    assert "key ID 'k1' failed authentication" in message and "\n" not in message
    assert_no_key_material(message, NEW_KEY, OTHER_KEY)


@pytest.mark.parametrize("how", ["flip a ciphertext bit", "truncate", "swap the key id"])
async def test_an_altered_payload_fails_authentication(how: str) -> None:
    codec = EncryptionCodec(ring(("a", NEW_KEY), ("b", NEW_KEY)))
    [sealed] = await codec.encode([plain_payload("x")])
    altered = Payload()
    altered.CopyFrom(sealed)
    if how == "flip a ciphertext bit":
        altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    elif how == "truncate":
        altered.data = sealed.data[:20]
    else:  # the same key under another ID: the key ID is authenticated too
        altered.metadata[KEY_ID_METADATA] = b"a"
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([altered])


async def test_payloads_that_are_not_encrypted_pass_through_decoding_unchanged() -> None:
    codec = EncryptionCodec(ring(("k1", NEW_KEY)))
    older = [plain_payload({"from": "before encryption"}), plain_payload(None), plain_payload(b"\x00\x01"), Payload(data=b"no metadata")]
    assert await codec.decode(older) == older


def test_a_key_ring_never_shows_its_keys() -> None:
    keys = KeyRing.parse(KEYS)
    shown = repr(keys) + repr(EncryptionCodec(keys)) + str(keys)
    assert "old-2024" in shown and "new-2025" in shown
    assert_no_key_material(shown, OLD_KEY, NEW_KEY)


# ---------------------------------------------------------------------------- key configuration


def test_keys_come_from_the_variable_in_order() -> None:
    keys = keys_from_env({"DA_CODEC_KEYS": f" a:{b64(OLD_KEY)} , b.2:{b64(NEW_KEY)},"})
    assert keys is not None and keys.ids == ("a", "b.2") and keys.current_id == "b.2"


def test_keys_come_from_a_mounted_file(tmp_path: Path) -> None:
    secret = tmp_path / "codec-keys"
    secret.write_text(f"a:{b64(OLD_KEY)}\nb:{b64(NEW_KEY)}\n")  # one per line, as a secret file may hold them
    keys = keys_from_env({"DA_CODEC_KEYS_FILE": str(secret)})
    assert keys is not None and keys.ids == ("a", "b")


def test_no_keys_configured_is_none() -> None:
    assert keys_from_env({}) is None
    assert keys_from_env({"DA_CODEC_KEYS": ""}) is None


SHORT = b64(os.urandom(16))


@pytest.mark.parametrize(
    "environ, expected",
    [
        pytest.param({"DA_CODEC_KEYS": b64(NEW_KEY)}, "DA_CODEC_KEYS: entry 1 is not ID:BASE64KEY", id="no-id"),
        pytest.param({"DA_CODEC_KEYS": f":{b64(NEW_KEY)}"}, "DA_CODEC_KEYS: entry 1 is not ID:BASE64KEY", id="empty-id"),
        pytest.param({"DA_CODEC_KEYS": f"a:{b64(OLD_KEY)},b:{SHORT}"}, "DA_CODEC_KEYS: key 'b' decodes to 16 bytes; AES-256 needs exactly 32", id="16-bytes"),
        pytest.param({"DA_CODEC_KEYS": "a:not*base64!"}, "DA_CODEC_KEYS: key 'a' is not valid base64", id="not-base64"),
        pytest.param({"DA_CODEC_KEYS": "a:"}, "DA_CODEC_KEYS: key 'a' decodes to 0 bytes", id="empty-key"),
        pytest.param({"DA_CODEC_KEYS": f"a:{b64(OLD_KEY)},a:{b64(NEW_KEY)}"}, "DA_CODEC_KEYS: key ID 'a' is given twice", id="duplicate"),
        pytest.param({"DA_CODEC_KEYS": f"a b:{b64(OLD_KEY)}"}, "DA_CODEC_KEYS: key ID 'a b' is not valid", id="bad-id"),
        pytest.param({"DA_CODEC_KEYS": " , "}, "DA_CODEC_KEYS has no keys", id="only-commas"),
        pytest.param({"DA_CODEC_KEYS": KEYS, "DA_CODEC_KEYS_FILE": "/x"}, "set DA_CODEC_KEYS or DA_CODEC_KEYS_FILE, not both", id="both"),
        pytest.param({"DA_CODEC_KEYS_FILE": "/nonexistent/codec-keys"}, "DA_CODEC_KEYS_FILE=/nonexistent/codec-keys: cannot read it: No such file", id="no-file"),
    ],
)
def test_bad_key_configuration_is_one_line_naming_the_problem(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(CodecConfigError) as raised:
        keys_from_env(environ)
    message = str(raised.value)
    assert message.startswith(expected)
    assert "\n" not in message
    assert_no_key_material(message, OLD_KEY, NEW_KEY)
    assert SHORT not in message


def test_an_empty_key_file_is_an_error_not_silently_no_encryption(tmp_path: Path) -> None:
    empty = tmp_path / "codec-keys"
    empty.write_text("\n")
    with pytest.raises(CodecConfigError, match=r"^DA_CODEC_KEYS_FILE \(.*codec-keys\) has no keys"):
        keys_from_env({"DA_CODEC_KEYS_FILE": str(empty)})


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, "durable-assistants codec-server: no keys: set DA_CODEC_KEYS"),
        ({"DA_CODEC_KEYS": f"k:{SHORT}"}, "durable-assistants codec-server: DA_CODEC_KEYS: key 'k' decodes to 16 bytes"),
    ],
)
def test_the_codec_server_refuses_to_start_without_usable_keys(
    environ: dict[str, str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert codec_server.main([], environ=environ) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1


# ---------------------------------------------------------------------------- a real run, encrypted

CITY = "Zanzibarquux"  # distinctive: found in the tool's arguments and its output
MESSAGE = "Marmalade otters plan their quiet heist"
OUTPUT_KEY = "celsius"  # only in the tool's output


@pytest.fixture
async def encrypting_client(temporal_server: TemporalDevServer) -> Client:
    return await Client.connect(temporal_server.address, data_converter=data_converter({"DA_CODEC_KEYS": KEYS}))


@pytest.fixture
async def encrypting_workers(encrypting_client: Client, emulator: EmulatorProcess, task_queue: str) -> AsyncIterator[None]:
    model = AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=5)
    async with worker.WorkerGroup(worker.build_workers(encrypting_client, model, registry, task_queue, max_cached_workflows=0)):
        yield
    await model.close()


def _message_fields(message: Message) -> Iterator[tuple[FieldDescriptor, Message]]:
    """Every sub-message of ``message`` with the field that holds it (maps and lists too)."""
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                yield from ((field, item) for item in value.values())
        elif field.is_repeated:
            yield from ((field, item) for item in value)
        else:
            yield field, value


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every ``Payload`` in ``message`` and where it is, except those of search attributes
    and headers (which payload codecs don't touch: the server must read search attributes)."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, child in _message_fields(message):
        if field.message_type.full_name not in ("temporal.api.common.v1.SearchAttributes", "temporal.api.common.v1.Header"):
            yield from payloads_in(child, f"{path}.{field.name}" if path else field.name)


async def run_encrypted(client: Client, task_queue: str, openai: OpenAI) -> tuple[str, RunResult]:
    assistant = openai.beta.assistants.create(model="gpt-4o", name="codec-test", tools=[t.schema() for t in registry])  # type: ignore[arg-type]
    request = RunRequest(
        assistant_id=assistant.id,
        messages=[MessageInput(content=MESSAGE + "\n" + script(rounds=[[{"name": "get_weather", "arguments": {"city": CITY}}]], reply="Answer:\n{outputs}"))],
        mode="stream",  # text batches and progress travel as signals and updates too
    )
    # No request ID: the readable one enqueue_run makes leaves the message's words out of the
    # workflow ID when the client encrypts (no codec encrypts a workflow ID).
    handle = await enqueue_run(client, request, task_queue=task_queue)
    return handle.workflow_id, await handle.result()


async def test_a_run_with_a_tool_call_leaves_no_message_argument_or_output_in_plain_text_in_its_history(
    encrypting_client: Client, encrypting_workers: None, temporal_server: TemporalDevServer, task_queue: str, client: OpenAI
) -> None:
    workflow_id, result = await run_encrypted(encrypting_client, task_queue, client)
    # The run really happened, and the secrets really went through Temporal.
    assert result.status == "completed" and [c.name for c in result.tool_calls] == ["get_weather"]
    assert CITY in result.tool_calls[0].arguments and CITY in result.tool_calls[0].output_preview
    assert result.final_text is not None and CITY in result.final_text and OUTPUT_KEY in result.final_text

    plain = await Client.connect(temporal_server.address)  # no codec, the default converter
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    events: list[HistoryEvent] = list(history.events)
    secrets = {"message": MESSAGE.encode(), "tool argument": CITY.encode(), "tool output": OUTPUT_KEY.encode()}

    # Every byte of every event: payloads, memo, activity and workflow summaries (user_metadata),
    # failures and the search attributes (plain text, which the server must read: IDs, tool
    # names and statuses only). And the workflow ID, which no codec encrypts.
    leaks = []
    for event in events:
        raw = event.SerializeToString()
        leaks += [f"{what} in event #{event.event_id} ({event.WhichOneof('attributes')})" for what, text in secrets.items() if text in raw]
    assert not leaks, leaks
    words = [w for w in MESSAGE.lower().split() if len(w) > 3]
    assert not any(w in workflow_id.lower() for w in words), workflow_id

    # Patch markers (workflow.patched) carry the patch's ID, which the SDK's core writes itself.
    patches = [e for e in events if e.marker_recorded_event_attributes.marker_name == "core_patch"]
    assert all(json.loads(p.data)["id"] for e in patches for _, p in payloads_in(e))
    found = [(f"#{event.event_id} {path}", p) for event in events if event not in patches for path, p in payloads_in(event)]
    payloads = [p for _, p in found]
    assert len(payloads) >= 6  # input, memo, summaries, the tool's input and result, signals, the result
    not_encrypted = [(where, dict(p.metadata), p.data[:80]) for where, p in found if p.metadata.get("encoding") != ENCODING]
    assert not not_encrypted
    assert {p.metadata[KEY_ID_METADATA] for p in payloads} == {b"new-2025"}
    summaries = [e.user_metadata.summary for e in events if e.HasField("user_metadata") and e.user_metadata.HasField("summary")]
    assert summaries and all(s.metadata["encoding"] == ENCODING for s in summaries)
    # Even decrypted, summaries (read by operators who may not see payloads) name tools and
    # sizes, not arguments or the message.
    shown = [json.loads(p.data) for p in await EncryptionCodec(KeyRing.parse(KEYS)).decode(summaries)]
    assert any(re.fullmatch(r"get_weather\(\d+ bytes of arguments\)", text) for text in shown), shown
    assert any(re.search(r"\(\d+ characters of message\)$", text) for text in shown), shown
    assert not [text for text in shown if CITY in text or any(w in text.lower() for w in words)], shown

    # The scan looked where the secrets are: decrypted, the same payloads hold all three.
    codec = EncryptionCodec(KeyRing.parse(KEYS))
    decrypted = b"\n".join(p.data for p in await codec.decode(payloads))
    assert all(text in decrypted for text in secrets.values())

    # The Temporal UI's decode call (its headers, from its origin) on payloads of that history.
    started = events[0].workflow_execution_started_event_attributes.input
    scheduled = [e.activity_task_scheduled_event_attributes for e in events if e.HasField("activity_task_scheduled_event_attributes")]
    tool_input = next(s.input for s in scheduled if s.activity_type.name == "get_weather")
    completed = [e.activity_task_completed_event_attributes.result for e in events if e.HasField("activity_task_completed_event_attributes")]
    body = json_format.MessageToJson(Payloads(payloads=[*started.payloads, *tool_input.payloads, *(p for c in completed for p in c.payloads)]))
    with CodecServerProcess(env={**os.environ, "DA_CODEC_KEYS": KEYS, "DA_CODEC_TOKEN": TOKEN}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            answer = await http.post("/decode", content=body, headers=ui_headers(authorization=f"Bearer {TOKEN}"))
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
        decoded = json_format.Parse(answer.content, Payloads())
        assert all(p.metadata["encoding"] == b"json/plain" for p in decoded.payloads)
        texts = b"\n".join(p.data for p in decoded.payloads)
        assert MESSAGE.encode() in texts and CITY.encode() in texts and OUTPUT_KEY.encode() in texts

        # The Temporal CLI through the same server: decoded with the token, refused without.
        shown = await show_history(temporal_server.address, workflow_id, server.url, f"Bearer {TOKEN}")
        assert shown.returncode == 0, shown.stderr
        cli_payloads = list(json_payloads(json.loads(shown.stdout)))
        assert {p.metadata["encoding"] for p in cli_payloads} == {b"json/plain"}
        assert all(text in b"\n".join(p.data for p in cli_payloads) for text in secrets.values())
        refused = await show_history(temporal_server.address, workflow_id, server.url, None)  # it retries the 401s, then gives up
        assert refused.returncode != 0
        assert not any(text in (refused.stdout + refused.stderr).encode() for text in secrets.values())

    # A codec server with the wrong key under that ID says which key, in one line.
    wrong = f"new-2025:{b64(OTHER_KEY)}"
    with CodecServerProcess(env={**os.environ, "DA_CODEC_KEYS": wrong, "DA_CODEC_TOKEN": ""}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            answer = await http.post("/decode", content=body, headers=ui_headers())
    assert answer.status_code == 422
    error = answer.json()
    assert error["key_id"] == "new-2025" and "key ID 'new-2025' failed authentication" in error["error"]
    assert "Traceback" not in answer.text
    assert_no_key_material(answer.text, NEW_KEY, OTHER_KEY)


def json_payloads(node: Any) -> Iterator[Payload]:
    """The payloads in a history printed by ``temporal workflow show --output json``."""
    if isinstance(node, dict):
        if set(node) == {"metadata", "data"} and isinstance(node["data"], str):
            yield json_format.ParseDict(node, Payload())
            return
        for value in node.values():
            yield from json_payloads(value)
    elif isinstance(node, list):
        for value in node:
            yield from json_payloads(value)


async def show_history(address: str, workflow_id: str, endpoint: str, auth: str | None) -> subprocess.CompletedProcess[str]:
    command = [temporal_binary(), "workflow", "show", "--address", address, "-w", workflow_id, "--output", "json", "--codec-endpoint", endpoint]
    command += ["--codec-auth", auth] if auth else []
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------------------- the codec server over HTTP


def ui_headers(origin: str = UI_ORIGIN, authorization: str | None = None) -> dict[str, str]:
    """What the Temporal UI's page sends with a codec call."""
    headers = {"Content-Type": "application/json", "X-Namespace": "default", "Origin": origin}
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


@pytest.fixture
def codec_server_url() -> Iterator[str]:
    env = {**os.environ, "DA_CODEC_KEYS": KEYS, "DA_CODEC_TOKEN": TOKEN}
    with CodecServerProcess("--cors-origin", UI_ORIGIN, "--cors-origin", "http://127.0.0.1:9999", env=env) as server:
        yield server.url


async def sealed_body(*values: Any) -> str:
    codec = EncryptionCodec(KeyRing.parse(KEYS))
    return json_format.MessageToJson(Payloads(payloads=await codec.encode([plain_payload(v) for v in values])))


@pytest.mark.server
async def test_the_token_is_required_for_encode_and_decode_but_not_for_health(codec_server_url: str) -> None:
    body = await sealed_body("behind the token")
    async with httpx.AsyncClient(base_url=codec_server_url, timeout=30) as http:
        for path in ("/decode", "/encode"):
            for authorization in (None, "Bearer wrong-token", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x"):
                refused = await http.post(path, content=body, headers=ui_headers(authorization=authorization))
                assert refused.status_code == 401, (path, authorization)
                assert "bearer token" in refused.json()["error"] and "behind the token" not in refused.text
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.headers["access-control-allow-origin"] == UI_ORIGIN  # so the UI can read why
        for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}"):
            allowed = await http.post("/decode", content=body, headers=ui_headers(authorization=authorization))
            assert allowed.status_code == 200 and b"behind the token" in json_format.Parse(allowed.content, Payloads()).payloads[0].data
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}


@pytest.mark.server
async def test_encode_then_decode_over_http_gives_the_payload_back(codec_server_url: str) -> None:
    original = Payloads(payloads=[plain_payload({"signal": "from the UI"}), plain_payload("two")])
    auth = ui_headers(authorization=f"Bearer {TOKEN}")
    async with httpx.AsyncClient(base_url=codec_server_url, timeout=30) as http:
        encoded = await http.post("/encode", content=json_format.MessageToJson(original), headers=auth)
        assert encoded.status_code == 200
        sealed = json_format.Parse(encoded.content, Payloads())
        assert [p.metadata[KEY_ID_METADATA] for p in sealed.payloads] == [b"new-2025", b"new-2025"]
        assert not any(b"from the UI" in p.data for p in sealed.payloads)
        decoded = await http.post("/decode", content=encoded.content, headers=auth)
        assert json_format.Parse(decoded.content, Payloads()) == original
        empty = await http.post("/decode", content=b'{"payloads": []}', headers=auth)
        assert empty.status_code == 200 and empty.json() == {"payloads": []}


@pytest.mark.server
@pytest.mark.parametrize("origin", [UI_ORIGIN, "http://127.0.0.1:9999"])
async def test_the_uis_cors_preflight_is_answered_without_a_token(codec_server_url: str, origin: str) -> None:
    async with httpx.AsyncClient(base_url=codec_server_url, timeout=30) as http:
        preflight = await http.options(
            "/decode",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
            },
        )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-namespace", "authorization"} <= allowed
    assert preflight.headers["access-control-allow-credentials"] == "true"


@pytest.mark.server
async def test_another_origin_gets_no_cors_permission(codec_server_url: str) -> None:
    async with httpx.AsyncClient(base_url=codec_server_url, timeout=30) as http:
        preflight = await http.options(
            "/decode", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        )
        call = await http.post("/decode", content=await sealed_body("x"), headers=ui_headers(origin="http://evil.example", authorization=f"Bearer {TOKEN}"))
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in call.headers  # the browser withholds the answer from that page


@pytest.mark.server
async def test_an_unknown_key_id_and_a_bad_body_are_one_line_errors(tmp_path: Path) -> None:
    body = await sealed_body("x")
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"other:{b64(OTHER_KEY)}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("DA_CODEC")}
    with CodecServerProcess(env={**env, "DA_CODEC_KEYS_FILE": str(keys_file)}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            unknown = await http.post("/decode", content=body, headers=ui_headers())
            bad = await http.post("/decode", content=b"not json", headers=ui_headers())
            wrong_shape = await http.post("/decode", content=b'{"payload": 1}', headers=ui_headers())
    assert unknown.status_code == 422 and unknown.json()["key_id"] == "new-2025"
    assert "key ID 'new-2025', which is not among the known keys (other)" in unknown.json()["error"]
    assert_no_key_material(unknown.text, NEW_KEY, OTHER_KEY)
    for answer in (bad, wrong_shape):
        assert answer.status_code == 400 and "\n" not in answer.json()["error"] and "Traceback" not in answer.text
        assert answer.json()["error"].startswith('the body is not {"payloads": [...]} in protobuf JSON form')


@pytest.mark.server
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_the_codec_server_command_serves_and_stops_cleanly_on_a_signal(sig: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable_assistants.cli", "codec-server", "--port", "0", cwd=REPO,
        env={**os.environ, "DA_CODEC_KEYS": KEYS}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("codec server listening on http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=line.split()[-1], timeout=30) as http:
            assert (await http.get("/healthz")).status_code == 200
        process.send_signal(sig)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert "Traceback" not in (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ---------------------------------------------------------------------------- the local stack


@pytest.mark.server
async def test_dev_with_keys_serves_the_codec_to_its_ui_and_stops_it_with_the_rest(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DA_CODEC", "OPENAI_BASE_URL"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "durable_assistants.cli", "dev"], cwd=REPO,
        env={**env, "DA_STATE_DIR": str(tmp_path), "DA_CODEC_KEYS": KEYS, "DA_CODEC_TOKEN": TOKEN},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        while not (seen and seen[-1].startswith("Ctrl-C (or SIGTERM) stops everything")):
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 90)
            assert line, "dev exited early:\n" + "".join(seen)
            seen.append(line)
        output = "".join(seen)
        assert "payloads encrypted with key 'new-2025'" in output and "DA_CODEC_KEYS=..." in output
        assert b64(NEW_KEY) not in output and b64(OLD_KEY) not in output
        codec_url = output.split("codec server … ")[1].split()[0]
        ui_url = output.split(", UI ")[1].split()[0]
        children = _children_of(process.pid)
        assert len(children) == 4  # codec server, Temporal dev server, emulator, worker

        async with httpx.AsyncClient(timeout=30) as http:
            # The dev server's UI was told where the codec server is ...
            settings = (await http.get(f"{ui_url}/api/v1/settings")).json()
            assert settings["Codec"]["Endpoint"] == codec_url
            # ... which lets a page from that UI call it, with no token (the UI can't send one).
            ui_port = ui_url.rsplit(":", 1)[1]
            for origin in (ui_url, f"http://localhost:{ui_port}"):
                preflight = await http.options(
                    f"{codec_url}/decode",
                    headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"},
                )
                assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
            decoded = await http.post(f"{codec_url}/decode", content=await sealed_body("seen in the UI"), headers=ui_headers(origin=ui_url))
            assert decoded.status_code == 200 and b"seen in the UI" in json_format.Parse(decoded.content, Payloads()).payloads[0].data

        process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(asyncio.to_thread(process.stdout.read), 90)
        assert await asyncio.to_thread(process.wait, 60) == 0, rest
        assert "stopped; nothing left running" in rest
        assert not [pid for pid in children if _alive(pid)]
    finally:
        stop_process(process, timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def test_dev_refuses_bad_keys_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from durable_assistants.devstack.demo import main as dev_main

    monkeypatch.setenv("DA_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("DA_CODEC_KEYS", f"k:{SHORT}")
    monkeypatch.delenv("DA_CODEC_KEYS_FILE", raising=False)
    assert dev_main(["--stack-only"]) == 2  # and, not being marked `server`, it started no process
    err = capsys.readouterr().err
    assert err.startswith("durable-assistants dev: DA_CODEC_KEYS: key 'k' decodes to 16 bytes") and err.count("\n") == 1
    assert not list(tmp_path.glob("*.log"))
