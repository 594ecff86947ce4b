"""Commands for operators: ``setup-namespace`` registers the search attributes in a
production namespace; ``doctor`` checks everything a worker needs and says, one line per
check, what to do about what fails.

    durable-assistants setup-namespace       # idempotent: registers what is missing
    durable-assistants doctor                # exit 0 when every check passes, 1 if not
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from durable_assistants.client import pollers
from durable_assistants.workflows.search_attributes import SEARCH_ATTRIBUTE_TYPES

CHECK_TIMEOUT_SECONDS = 10.0
RPC_TIMEOUT = timedelta(seconds=CHECK_TIMEOUT_SECONDS)
_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
}


class SetupError(Exception):
    """What setup-namespace could not do, in one line."""


async def setup_namespace(client: Client) -> list[str]:
    """Register the search attributes the namespace lacks; the names registered (empty: all
    were there). ``SetupError`` when one exists with another type, or the server refuses
    (Temporal Cloud registers them through its own API: tcld or the Cloud UI)."""
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace), timeout=RPC_TIMEOUT
        )
    except RPCError as exc:
        raise SetupError(f"cannot list the search attributes of namespace {client.namespace!r}: {exc.message}") from None
    present = dict(response.custom_attributes)
    wrong = [
        f"{name} is {IndexedValueType.Name(present[name]).removeprefix('INDEXED_VALUE_TYPE_')}, not {kind}"
        for name, kind in SEARCH_ATTRIBUTE_TYPES.items()
        if name in present and present[name] != _TYPES[kind]
    ]
    if wrong:
        raise SetupError(f"namespace {client.namespace!r} has search attributes of another type: {'; '.join(wrong)}")
    missing = {name: _TYPES[kind] for name, kind in SEARCH_ATTRIBUTE_TYPES.items() if name not in present}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing), timeout=RPC_TIMEOUT
        )
    except RPCError as exc:
        hint = ""
        if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            hint = " (on Temporal Cloud, add them with tcld or in the Cloud UI: docs/deploy.md)"
        raise SetupError(f"cannot add search attributes {', '.join(missing)} to {client.namespace!r}: {exc.message}{hint}") from None
    return sorted(missing)


async def setup_nexus_endpoint(client: Client, name: str, task_queue: str) -> str:
    """Create the Nexus endpoint ``name`` that routes to ``task_queue`` in the client's
    namespace, where the worker serves the ``durable-assistants`` service; idempotent.
    Returns what it did, in one line; ``SetupError`` when an endpoint of that name routes
    elsewhere or the server refuses."""
    from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget
    from temporalio.api.operatorservice.v1 import CreateNexusEndpointRequest, ListNexusEndpointsRequest

    try:
        found = await client.operator_service.list_nexus_endpoints(ListNexusEndpointsRequest(name=name, page_size=10), timeout=RPC_TIMEOUT)
    except RPCError as exc:
        raise SetupError(f"cannot list Nexus endpoints: {exc.message} (is Nexus enabled on the server?)") from None
    for endpoint in found.endpoints:
        if endpoint.spec.name != name:
            continue
        target = endpoint.spec.target.worker
        if (target.namespace, target.task_queue) != (client.namespace, task_queue):
            raise SetupError(
                f"Nexus endpoint {name!r} exists and routes to namespace {target.namespace!r}, task queue "
                f"{target.task_queue!r}, not {client.namespace!r}, {task_queue!r}; pick another name (--nexus-endpoint)"
            )
        return f"Nexus endpoint {name} routes to {client.namespace}/{task_queue} already"
    spec = EndpointSpec(name=name, target=EndpointTarget(worker=EndpointTarget.Worker(namespace=client.namespace, task_queue=task_queue)))
    try:
        await client.operator_service.create_nexus_endpoint(CreateNexusEndpointRequest(spec=spec), timeout=RPC_TIMEOUT)
    except RPCError as exc:
        raise SetupError(f"cannot create Nexus endpoint {name!r}: {exc.message}") from None
    return f"created Nexus endpoint {name} -> {client.namespace}/{task_queue}"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':<4}  {self.name}: {self.detail}"


async def _bounded(name: str, check: Callable[..., Awaitable[Check]]) -> Check:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return Check(name, False, f"no answer within {CHECK_TIMEOUT_SECONDS:g} s")
    except Exception as exc:  # one line per check, never a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Check(name, False, first)


async def doctor(
    connect: Callable[[], Awaitable[Client]],
    target: str,
    task_queue: str,
    tool_queues: Sequence[str],
    check_model: Callable[[], Awaitable[str]],
    converter: Callable[[], DataConverter],
) -> list[Check]:
    """Each check in order; a Temporal connection that fails skips the checks that need it."""
    checks: list[Check] = []
    client: Client | None = None

    async def temporal() -> Check:
        nonlocal client
        client = await connect()
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace), timeout=RPC_TIMEOUT)
        return Check("temporal", True, f"connected to {target}, namespace {client.namespace}")

    checks.append(await _bounded("temporal", temporal))
    if client is not None:
        connected: Client = client

        async def attributes() -> Check:
            response = await connected.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=connected.namespace), timeout=RPC_TIMEOUT
            )
            missing = sorted(set(SEARCH_ATTRIBUTE_TYPES) - set(response.custom_attributes))
            if missing:
                return Check("search attributes", False, f"missing {', '.join(missing)}: run `durable-assistants setup-namespace`")
            return Check("search attributes", True, f"all {len(SEARCH_ATTRIBUTE_TYPES)} registered")

        checks.append(await _bounded("search attributes", attributes))
        for queue, kinds in [(task_queue, ("workflow", "activity")), *((q, ("activity",)) for q in tool_queues)]:
            checks.append(await _bounded(f"pollers {queue}", lambda queue=queue, kinds=kinds: _pollers(connected, queue, kinds)))
    else:
        checks.append(Check("search attributes", False, "not checked: no Temporal connection"))
    checks.append(await _bounded("model API", lambda: _model(check_model)))
    checks.append(await _bounded("codec", lambda: _codec(converter)))
    return checks


async def _pollers(client: Client, queue: str, kinds: Sequence[str]) -> Check:
    name = f"pollers {queue}"
    seen = []
    for kind in kinds:
        found = await pollers(client, queue, kind)
        if not found:
            return Check(name, False, f"no worker polls {kind} tasks on {queue!r}: start `durable-assistants worker`"
                         + ("" if kind == "workflow" else f" (with --queue {queue} for a tool queue)" if len(kinds) == 1 else ""))
        seen.append(f"{len({p.identity for p in found})} {kind}")
    return Check(name, True, "polled by " + ", ".join(seen) + " worker identities")


async def _model(check_model: Callable[[], Awaitable[str]]) -> Check:
    return Check("model API", True, await check_model())


async def _codec(converter: Callable[[], DataConverter]) -> Check:
    chosen = converter()  # ValueError naming the key problem
    codec = chosen.payload_codec
    if codec is None:
        return Check("codec", True, "off: payloads are stored in plain text (set DA_CODEC_KEYS to encrypt them)")
    payloads = chosen.payload_converter.to_payloads(["doctor"])
    back = await codec.decode(await codec.encode(payloads))
    if chosen.payload_converter.from_payloads(back) != ["doctor"]:
        return Check("codec", False, "a payload did not decrypt to what was encrypted")
    return Check("codec", True, "payloads are encrypted (a test payload round-tripped)")


def temporal_target() -> str:
    return os.environ.get("TEMPORAL_ADDRESS") or "localhost:7233"
