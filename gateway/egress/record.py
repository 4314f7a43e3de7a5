"""A telemetry record as it leaves the gateway: its wire bytes, built once by the rules stage
and handed on as they are to every sink (egress/sink.py).

Why bytes and not a TelemetryRecord message: building one message per sample copies the sample
into it, and every sink then serializes it again (about an eighth of the gateway's CPU). A
record nothing withholds from is its envelope's fields (vin, sequence, sent_at, service),
encoded once per envelope, followed by the sample's own bytes (``append_records``). A record
privacy changes (R22) is built and redacted as a message and serialized once (``out_record``).

The wire format is TelemetryRecord's (proto/telematics/v1/telemetry.proto): fields in number
order, proto3 defaults (empty string, zero) left out, as upb serializes them, so a consumer
parses exactly the record a message built field by field would give
(tests/unit/egress/test_egress_record.py proves it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from google.protobuf import timestamp_pb2

from gateway._gen.telematics.v1 import telemetry_pb2, uplink_pb2

# One-byte varints, for the lengths under 128 (a one-sample record is ~100 bytes): built once
# rather than per record.
_SHORT = [bytes((n,)) for n in range(0x80)]


def pb_varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer (also load/payloads.py's). Unrolled up
    to four bytes (sequences into the hundreds of millions): it is paid per envelope."""
    if n < 0x80:
        return _SHORT[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# TelemetryRecords.records: field 1, wire type 2 (length-delimited).
_RECORDS_TAG = b"\x0a"
_SHORT_FRAMES = [_RECORDS_TAG + b for b in _SHORT]

# TelemetryRecord's tags (field number << 3 | wire type).
_VIN, _SEQUENCE, _SENT_AT, _SERVICE, _SAMPLE = b"\x0a", b"\x10", b"\x1a", b"\x22", b"\x2a"


class OutRecord(NamedTuple):
    """One record that leaves the gateway. vin, sequence and service are the record's own (for
    the sinks' keys and the subscribers' service filter, without parsing `data`)."""

    vin: str
    sequence: int
    service: str
    data: bytes    # the serialized TelemetryRecord (what the JetStream sink stores)
    framed: bytes  # `data` as one element of TelemetryRecords.records: tag, length, data


def frame(data: bytes) -> bytes:
    """A serialized record as one element of TelemetryRecords.records: a batch of records on the
    wire is the concatenation of their framed bytes (the repeated field's wire form)."""
    size = len(data)
    return _SHORT_FRAMES[size] + data if size < 0x80 else _RECORDS_TAG + pb_varint(size) + data


def out_record(rec: telemetry_pb2.TelemetryRecord) -> OutRecord:
    """A record built as a message (a redacted one, or a test's) as it leaves the gateway."""
    data = rec.SerializeToString()
    return OutRecord(rec.vin, rec.sequence, rec.service, data, frame(data))


def service_field(service: str) -> bytes:
    """TelemetryRecord.service as encoded in a record (nothing for the default, empty): the few
    services are encoded once and remembered by the caller, not per envelope."""
    if not service:
        return b""
    raw = service.encode()
    return _SERVICE + pb_varint(len(raw)) + raw


def append_records(
    out: list[OutRecord],
    vin: str,
    sequence: int,
    sent_at: timestamp_pb2.Timestamp | None,
    service: str,
    encoded_service: bytes,
    samples: Iterable[uplink_pb2.TelemetrySample],
) -> None:
    """Append one record per sample of an envelope that nothing is withheld from: the fields the
    records share encoded once, each sample's bytes as they are. The samples must hold no
    unknown fields (R22, fail closed: the rules stage discards them from the envelope first),
    they would go out with them. sent_at: None for an envelope without one (a car whose clock
    is not set): the records then have none either, rather than 1970-01-01. encoded_service:
    `service_field(service)`."""
    # Inline and without a list: this is paid per envelope, and each Python call counts here.
    short = _SHORT
    head = b""
    if vin:
        raw = vin.encode()
        size = len(raw)
        head = _VIN + (short[size] if size < 0x80 else pb_varint(size)) + raw
    if sequence:
        head += _SEQUENCE + (short[sequence] if sequence < 0x80 else pb_varint(sequence))
    if sent_at is not None:  # present even when all zero, as a message field set to a default
        raw = sent_at.SerializeToString()
        size = len(raw)
        head += _SENT_AT + (short[size] if size < 0x80 else pb_varint(size)) + raw
    head += encoded_service + _SAMPLE  # the sample is always present (an empty one too)
    short_frames, new = _SHORT_FRAMES, tuple.__new__  # tuple's: no Python __new__ frame
    for sample in samples:
        body = sample.SerializeToString()
        size = len(body)
        data = head + (short[size] if size < 0x80 else pb_varint(size)) + body
        size = len(data)
        framed = short_frames[size] + data if size < 0x80 else _RECORDS_TAG + pb_varint(size) + data
        out.append(new(OutRecord, (vin, sequence, service, data, framed)))
