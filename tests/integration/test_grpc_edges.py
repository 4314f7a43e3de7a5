"""Every RPC of the gateway's gRPC API at its edges, over the real server (`Gateway`, real
gRPC, real SQLite, real Mosquitto): extreme numbers never answer INTERNAL, every bounded
request field answers INVALID_ARGUMENT just over its limit (and not at it), a request larger
than any valid one is refused by gRPC itself.

The cases are generated from the proto descriptors, so a new RPC or field is covered (or
fails `test_every_request_field_of_every_rpc_has_a_limit` in tests/unit/api/test_limits.py).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from support import free_port, gateway_channel

from gateway._gen.telematics.v1 import (
    entitlements_pb2,
    explain_pb2,
    security_codes_pb2,
    telemetry_pb2,
    vehicles_pb2,
)
from gateway.api import limits
from gateway.app import Gateway
from gateway.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

VIN = "WP0ZZZ99ZTS392124"
OTHER_VIN = "WP0ZZZ99ZTS392125"  # its owner is changed by the at-limit SetVehicleOwner case
OWNER = "owner@example.com"
PRODUCT = "remote-services"  # a service of roaming/services.toml
T = FieldDescriptor

METHODS: list[MethodDescriptor] = [
    m
    for file in (vehicles_pb2, telemetry_pb2, explain_pb2, entitlements_pb2, security_codes_pb2)
    for service in file.DESCRIPTOR.services_by_name.values()
    for m in service.methods
]
_order_ids = itertools.count(1)


@dataclass
class Edge:
    gateway: Gateway
    channel: grpc.aio.Channel
    entitlement_id: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    tmp: Path = tmp_path_factory.mktemp("edges")
    config = load_config(
        env={},
        data_dir=str(tmp / "data"),
        mqtt_port=free_port(), mqtt_tls_port=free_port(),
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
    )
    gw = Gateway(config)
    await gw.start()
    try:
        async with gateway_channel(gw) as channel:
            for vin in (VIN, OTHER_VIN):
                await invoke(channel, method("SetVehicleOwner"), entitlements_pb2.SetVehicleOwnerRequest(
                    vin=vin, owner=OWNER
                ))
            granted = entitlements_pb2.Entitlement()
            code, details = await invoke(channel, method("Grant"), base_request(method("Grant"), ""), granted)
            assert code is grpc.StatusCode.OK, details
            # Watch and telemetry streams end after what they have read instead of waiting for
            # new events, so each call below has a final status (as at shutdown; no sleeping).
            gw.hub.close()
            gw.entitlement_hub.close()
            gw.fanout.close()
            yield Edge(gw, channel, granted.entitlement_id)
    finally:
        await gw.stop()


def method(name: str) -> MethodDescriptor:
    [m] = [m for m in METHODS if m.name == name]
    return m


def request_class(m: MethodDescriptor) -> type[Message]:
    return GetMessageClass(m.input_type)


def base_request(m: MethodDescriptor, entitlement_id: str) -> Message:
    """A request that passes validation where that is cheap, so deeper code is reached."""
    req = request_class(m)()
    values: dict[str, dict[str, object]] = {
        "GetVehicle": {"vin": VIN},
        "SendRemoteCommand": {"vin": VIN, "name": "lock"},
        "Explain": {"vin": VIN},
        "Grant": {
            "order_id": f"edge-{next(_order_ids)}",
            "vin": VIN,
            "product_id": PRODUCT,
            "kind": entitlements_pb2.ENTITLEMENT_KIND_FIXED_TERM,
            "purchaser": OWNER,
            "purchaser_role": entitlements_pb2.PURCHASER_ROLE_OWNER,
            "term_months": 12,
        },
        "Cancel": {"entitlement_id": entitlement_id},
        "Revoke": {"entitlement_id": entitlement_id},
        "GetEntitlement": {"entitlement_id": entitlement_id},
        "ListEntitlements": {"vin": VIN},
        "SetVehicleOwner": {"vin": OTHER_VIN, "owner": OWNER},
        "DeleteAccount": {"account": "nobody@example.com"},
        "SetSecurityCode": {"account": OWNER, "new_code": "4711"},
        "ResetSecurityCode": {"account": "nobody@example.com"},
    }
    for name, value in values.get(m.name, {}).items():
        setattr(req, name, value)
    return req


def _serialize(request: Message) -> bytes:
    return request.SerializeToString()


async def invoke(
    channel: grpc.aio.Channel, m: MethodDescriptor, request: Message, into: Message | None = None
) -> tuple[grpc.StatusCode, str]:
    """(status code, details) of one call; a stream is read to its end."""
    path = f"/{m.containing_service.full_name}/{m.name}"
    try:
        if m.server_streaming:
            call = channel.unary_stream(path, request_serializer=_serialize)(request)
            async for _ in call:
                pass
        else:
            unary = channel.unary_unary(path, request_serializer=_serialize)
            raw: bytes = await unary(request)
            if into is not None:
                into.ParseFromString(raw)
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code, str(exc.details() or "")
    return grpc.StatusCode.OK, ""


# -- extreme numbers ----------------------------------------------------------------------------

EXTREMES: dict[int, tuple[int, ...]] = {
    T.CPPTYPE_UINT64: (0, 2**63 - 1, 2**63, 2**64 - 1),
    T.CPPTYPE_INT64: (0, 2**63 - 1, -(2**63)),
    T.CPPTYPE_UINT32: (0, 2**31, 2**32 - 1),
    T.CPPTYPE_INT32: (0, 2**31 - 1, -(2**31)),
    T.CPPTYPE_ENUM: (0, 2**31 - 1, -(2**31)),
}


def numeric_paths(d: Descriptor, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int]]:
    """(field path, cpp type) of every numeric leaf, through nested messages (Timestamps)."""
    for f in d.fields:
        if f.is_repeated:
            continue
        if f.cpp_type == T.CPPTYPE_MESSAGE:
            assert f.message_type is not None
            yield from numeric_paths(f.message_type, (*prefix, f.name))
        elif f.cpp_type in EXTREMES:
            yield (*prefix, f.name), f.cpp_type


def set_path(req: Message, path: tuple[str, ...], value: int) -> None:
    target = req
    for name in path[:-1]:
        target = getattr(target, name)
    setattr(target, path[-1], value)


NUMERIC_CASES = [
    (m.name, ".".join(path), value)
    for m in METHODS
    for path, cpp in numeric_paths(m.input_type)
    for value in EXTREMES[cpp]
]


async def test_extreme_cases_cover_every_numeric_request_field() -> None:
    fields = {(name, path) for name, path, _ in NUMERIC_CASES}
    assert ("WatchVehicleEvents", "after_cursor") in fields
    assert ("WatchEntitlementEvents", "after_cursor") in fields
    assert ("Grant", "booked_at.seconds") in fields and ("Cancel", "notice_seconds") in fields


async def test_no_rpc_answers_internal_for_extreme_numbers(edge: Edge) -> None:
    """0, 2^63-1, 2^63, 2^64-1 (or the field type's own extremes) in every numeric field of
    every request: a refusal is fine, INTERNAL or UNKNOWN (a crash behind the edge) is not."""
    crashed = []
    for name, dotted, value in NUMERIC_CASES:
        m = method(name)
        req = base_request(m, edge.entitlement_id)
        set_path(req, tuple(dotted.split(".")), value)
        code, details = await invoke(edge.channel, m, req)
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            crashed.append(f"{name} {dotted}={value}: {code.name} {details}")
    assert not crashed, "\n".join(crashed)


async def test_a_cursor_beyond_the_newest_event_is_not_an_error(edge: Edge) -> None:
    """The stream would wait for later events; with the hubs closed it ends cleanly."""
    for name in ("WatchVehicleEvents", "WatchEntitlementEvents"):
        for cursor in (2**63 - 1, 2**63, 2**64 - 1):
            req = request_class(method(name))(after_cursor=cursor)
            assert await invoke(edge.channel, method(name), req) == (grpc.StatusCode.OK, "")


async def test_a_telemetry_cursor_needs_the_jetstream_sink(edge: Edge) -> None:
    """The live gRPC sink keeps no records: a cursor is refused, never silently ignored."""
    m = method("SubscribeTelemetry")
    code, details = await invoke(edge.channel, m, request_class(m)(after_cursor=5))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "telemetry_sink = jetstream" in details


# -- field limits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitCase:
    rpc: str
    field: str  # as named in the error
    over: object  # the value just over the limit
    at: object | None  # the value at the limit; None: not cheap to check
    attr: str  # the request field to set


def _text_cases(rpc: str, attr: str, limit: limits.Text) -> list[LimitCase]:
    return [LimitCase(rpc, attr, "x" * (limit.max_chars + 1), "x" * limit.max_chars, attr)]


def limit_cases() -> Iterator[LimitCase]:
    by_input = {m.input_type.full_name: m.name for m in METHODS}
    descriptors = {m.input_type.full_name: m.input_type for m in METHODS}
    for message, fields in limits.FIELDS.items():
        rpc = by_input[message]
        for attr, limit in fields.items():
            if isinstance(limit, limits.Text):
                yield from _text_cases(rpc, attr, limit)
            elif isinstance(limit, limits.Texts):
                many = ["svc"] * (limit.max_items + 1)
                yield LimitCase(rpc, attr, many, None, attr)  # at the limit: a live stream
                long = ["x" * (limit.item.max_chars + 1)]
                yield LimitCase(rpc, f"{attr}[0]", long, None, attr)
            elif isinstance(limit, limits.TextMap):
                n, k, v = limit.max_entries, limit.key.max_chars, limit.value.max_chars
                full = {f"k{i}": "v" for i in range(n)}
                yield LimitCase(rpc, attr, {f"k{i}": "v" for i in range(n + 1)}, full, attr)
                yield LimitCase(rpc, f"{attr} key #1", {"k" * (k + 1): "v"}, {"k" * k: "v"}, attr)
                yield LimitCase(rpc, f"{attr} value #1", {"k": "v" * (v + 1)}, {"k": "v" * v}, attr)
            elif isinstance(limit, limits.Number) and limit is not limits.ENUM:
                yield LimitCase(rpc, attr, limit.hi + 1, limit.hi, attr)
                cpp = descriptors[message].fields_by_name[attr].cpp_type
                if cpp in (T.CPPTYPE_INT32, T.CPPTYPE_INT64):  # below the limit is sendable
                    yield LimitCase(rpc, attr, limit.lo - 1, limit.lo, attr)
            elif isinstance(limit, limits.Time):
                yield LimitCase(rpc, attr, limits.MAX_TIMESTAMP_S + 1, limits.MAX_TIMESTAMP_S, attr)
                yield LimitCase(rpc, attr, -1, limits.MIN_TIMESTAMP_S, attr)


LIMIT_CASES = list(limit_cases())


def with_value(m: MethodDescriptor, entitlement_id: str, attr: str, value: object) -> Message:
    req = base_request(m, entitlement_id)
    field = getattr(req, attr)
    if isinstance(value, dict):
        field.clear()
        field.update(value)
    elif isinstance(value, list):
        del field[:]
        field.extend(value)
    elif isinstance(field, Timestamp):  # `value` is its seconds
        assert isinstance(value, int)
        field.seconds = value
    else:
        setattr(req, attr, value)
    return req


def is_limit_error(case: LimitCase, code: grpc.StatusCode, details: str) -> bool:
    return (
        code is grpc.StatusCode.INVALID_ARGUMENT
        and details.startswith(f"{case.field} ")
        and ": the limit is " in details
    )


@pytest.mark.parametrize("case", LIMIT_CASES, ids=lambda c: f"{c.rpc}.{c.field}")
async def test_a_value_over_its_limit_is_invalid_argument_naming_the_field(
    edge: Edge, case: LimitCase
) -> None:
    m = method(case.rpc)
    code, details = await invoke(edge.channel, m, with_value(m, edge.entitlement_id, case.attr, case.over))
    assert is_limit_error(case, code, details), (code, details)
    assert "xxxxxxxxx" not in details and "kkkkkkkkk" not in details and "vvvvvvvvv" not in details
    if case.at is not None:
        at = with_value(m, edge.entitlement_id, case.attr, case.at)
        code, details = await invoke(edge.channel, m, at)
        assert not is_limit_error(case, code, details), (code, details)
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), details


async def test_a_100_kb_command_name_is_refused_before_it_reaches_the_car(edge: Edge) -> None:
    m = method("SendRemoteCommand")
    req = vehicles_pb2.SendRemoteCommandRequest(vin=VIN, name="x" * 100_000)
    code, details = await invoke(edge.channel, m, req)
    # Larger than any valid request: gRPC refuses it before the handler runs.
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, details
    req = vehicles_pb2.SendRemoteCommandRequest(vin=VIN, name="x" * 1000)
    code, details = await invoke(edge.channel, m, req)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"name is too long: the limit is {limits.MAX_COMMAND_NAME_CHARS} characters, got 1000"


async def test_limit_refusals_are_counted_by_method_and_code(edge: Edge) -> None:
    before = edge.gateway.metrics.registry.get_sample_value(
        "gateway_grpc_requests_total", {"method": "DeleteAccount", "code": "INVALID_ARGUMENT"}
    ) or 0.0
    req = entitlements_pb2.DeleteAccountRequest(account="a" * (limits.MAX_ACCOUNT_CHARS + 1))
    code, details = await invoke(edge.channel, method("DeleteAccount"), req)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "aaaa" not in details
    after = edge.gateway.metrics.registry.get_sample_value(
        "gateway_grpc_requests_total", {"method": "DeleteAccount", "code": "INVALID_ARGUMENT"}
    )
    assert after == before + 1
