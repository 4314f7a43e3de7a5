"""gateway/api/limits.py: one table bounds every field of every request, the proto documents
each limit, and a refusal names the field and its limit without echoing the value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from gateway._gen.telematics.v1 import (
    entitlements_pb2,
    explain_pb2,
    security_codes_pb2,
    telemetry_pb2,
    vehicles_pb2,
)
from gateway.api import limits

PROTO_DIR = Path(__file__).resolve().parents[3] / "proto" / "telematics" / "v1"
FILES = (vehicles_pb2, telemetry_pb2, explain_pb2, entitlements_pb2, security_codes_pb2)
METHODS: list[MethodDescriptor] = [
    m for f in FILES for s in f.DESCRIPTOR.services_by_name.values() for m in s.methods
]


def test_every_request_field_of_every_rpc_has_a_limit() -> None:
    missing = [
        f"{m.input_type.full_name}.{f.name}"
        for m in METHODS
        for f in m.input_type.fields
        if f.name not in limits.FIELDS.get(m.input_type.full_name, {})
    ]
    assert not missing, f"add these to gateway/api/limits.py FIELDS: {missing}"
    requests = {m.input_type.full_name for m in METHODS}
    assert set(limits.FIELDS) == requests  # and nothing stale


def _documented_numbers(limit: limits.Limit) -> list[str]:
    match limit:
        case limits.Text(max_chars=n):
            return [str(n)]
        case limits.Texts(max_items=n, item=limits.Text(max_chars=c)):
            return [str(n), str(c)]
        case limits.TextMap(max_entries=n, key=limits.Text(max_chars=k), value=limits.Text(max_chars=v)):
            return [str(n), str(k), str(v)]
        case limits.Number(lo=lo, hi=hi) if limit is not limits.ENUM:
            return [f"{lo}..{hi}"]
        case limits.Time():
            return ["2199-12-31"]
        case _:
            return []


def _field_doc(proto_text: str, message: str, field: str) -> str:
    """The field's declaration line and the comment lines right above it."""
    body = re.search(r"^message " + message + r" \{\n(.*?)^\}", proto_text, re.M | re.S)
    assert body is not None, message
    lines = body.group(1).splitlines()
    [i] = [i for i, line in enumerate(lines) if re.search(rf"\s{field} = \d+;", line)]
    doc = [lines[i]]
    while i > 0 and lines[i - 1].strip().startswith("//"):
        i -= 1
        doc.append(lines[i])
    return "\n".join(doc)


def test_every_limit_is_documented_next_to_its_field_in_the_proto() -> None:
    text = "\n".join(p.read_text() for p in PROTO_DIR.glob("*.proto"))
    undocumented = []
    for full_name, fields in limits.FIELDS.items():
        message = full_name.rpartition(".")[2]
        for field, limit in fields.items():
            doc = _field_doc(text, message, field)
            undocumented += [f"{message}.{field}: {n}" for n in _documented_numbers(limit) if n not in doc]
    assert not undocumented


def test_the_documented_request_size_is_the_servers() -> None:
    for name in ("vehicles", "entitlements"):
        assert "over 64 KiB" in (PROTO_DIR / f"{name}.proto").read_text()
    assert limits.MAX_REQUEST_BYTES == 64 * 1024


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            vehicles_pb2.SendRemoteCommandRequest(name="n" * 100_000),
            "name is too long: the limit is 64 characters, got 100000",
        ),
        (
            vehicles_pb2.SendRemoteCommandRequest(arguments={"secret-key" * 10: "v"}),
            "arguments key #1 is too long: the limit is 64 characters, got 100",
        ),
        (
            entitlements_pb2.DeleteAccountRequest(account="someone@example.com" + "m" * 300),
            "account is too long: the limit is 254 characters, got 319",
        ),
        (
            telemetry_pb2.SubscribeTelemetryRequest(services=["a"] * 65),
            "services has too many entries: the limit is 64, got 65",
        ),
        (
            entitlements_pb2.CancelRequest(notice_seconds=2**63 - 1),
            f"notice_seconds is out of range: the limit is 0..316224000, got {2**63 - 1}",
        ),
        (
            entitlements_pb2.GrantRequest(term_months=2**32 - 1),
            "term_months is out of range: the limit is 0..1200 (0: none), got 4294967295",
        ),
    ],
)
def test_a_refusal_names_the_field_and_limit_and_never_the_value(
    request_: Message, message: str
) -> None:
    with pytest.raises(limits.LimitExceeded) as err:
        limits.check(request_)
    assert err.value.message == message
    assert "secret-key" not in message and "example.com" not in message


def test_an_unset_timestamp_passes_and_one_out_of_range_is_refused() -> None:
    limits.check(entitlements_pb2.GrantRequest())
    late = entitlements_pb2.GrantRequest()
    late.term_end.seconds = limits.MAX_TIMESTAMP_S + 1
    with pytest.raises(limits.LimitExceeded, match="term_end is out of range"):
        limits.check(late)
    late.term_end.seconds = limits.MAX_TIMESTAMP_S
    limits.check(late)


def test_values_at_their_limits_pass() -> None:
    limits.check(
        vehicles_pb2.SendRemoteCommandRequest(
            vin="W" * 17,
            name="n" * limits.MAX_COMMAND_NAME_CHARS,
            arguments={f"{i:0>64}": "v" * limits.MAX_ARGUMENT_VALUE_CHARS for i in range(16)},
        )
    )
