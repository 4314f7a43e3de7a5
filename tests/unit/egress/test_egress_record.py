"""A record's wire bytes built from its envelope's fields and the sample's own bytes
(gateway/egress/record.py) parse to exactly the TelemetryRecord a message built field by field
gives (the way the rules stage built every record before): a consumer cannot tell them apart."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway._gen.telematics.v1 import telemetry_pb2, uplink_pb2
from gateway.egress.record import OutRecord, append_records, frame, out_record, pb_varint, service_field

# Field 15 of whichever message it is merged into, a varint: unknown to every message here (a
# newer car's field, or a hostile one's). R22: it must never leave with the record.
UNKNOWN = b"\x78" + pb_varint(7)

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)  # valid UTF-8
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
doubles = st.floats(allow_nan=False)
floats32 = st.floats(allow_nan=False, width=32)


@st.composite
def signals(draw: st.DrawFn) -> uplink_pb2.Signal:
    sig = uplink_pb2.Signal(name=draw(texts))
    match draw(st.sampled_from(["none", "number", "flag", "text"])):
        case "number":
            sig.number = draw(doubles)
        case "flag":
            sig.flag = draw(st.booleans())
        case "text":
            sig.text = draw(texts)
    return sig


@st.composite
def samples(draw: st.DrawFn) -> uplink_pb2.TelemetrySample:
    sample = uplink_pb2.TelemetrySample()
    if draw(st.booleans()):
        sample.sampled_at.seconds = draw(int64)
        sample.sampled_at.nanos = draw(int32)
    if draw(st.booleans()):
        loc = sample.location
        loc.latitude, loc.longitude = draw(doubles), draw(doubles)
        loc.heading_deg, loc.speed_kmh = draw(floats32), draw(floats32)
        if draw(st.booleans()):
            loc.MergeFromString(UNKNOWN)
    sample.signals.extend(draw(st.lists(signals(), max_size=4)))
    if draw(st.booleans()):
        sample.MergeFromString(UNKNOWN)
    return sample


@st.composite
def envelopes(draw: st.DrawFn) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=draw(texts), sequence=draw(uint64))
    if draw(st.booleans()):  # unset: a car whose clock is not set; set to zero is still set
        env.sent_at.seconds = draw(st.one_of(st.just(0), int64))  # zero: set all the same
        env.sent_at.nanos = draw(st.one_of(st.just(0), int32))
        if draw(st.booleans()):
            env.sent_at.MergeFromString(UNKNOWN)
    env.telemetry.service = draw(texts)
    # Several samples, and a sample large enough for a two-byte length now and then.
    env.telemetry.samples.extend(draw(st.lists(samples(), max_size=5)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        env.telemetry.samples.add().signals.add(name="x" * 200, text=draw(texts))
    if draw(st.booleans()):
        env.MergeFromString(UNKNOWN)
    return env


def built_as_before(env: uplink_pb2.Envelope) -> list[telemetry_pb2.TelemetryRecord]:
    """The records as the rules stage built them as messages."""
    sent_at = env.sent_at if env.HasField("sent_at") else None
    return [
        telemetry_pb2.TelemetryRecord(
            vin=env.vin, sequence=env.sequence, service=env.telemetry.service, sample=sample,
            sent_at=sent_at,
        )
        for sample in env.telemetry.samples
    ]


def built_from_bytes(env: uplink_pb2.Envelope) -> list[OutRecord]:
    out: list[OutRecord] = []
    sent_at = env.sent_at if env.HasField("sent_at") else None
    service = env.telemetry.service
    append_records(
        out, env.vin, env.sequence, sent_at, service, service_field(service), env.telemetry.samples
    )
    return out


@given(envelopes())
def test_records_built_from_bytes_parse_to_the_records_built_as_messages(env: uplink_pb2.Envelope) -> None:
    env.DiscardUnknownFields()  # as the rules stage does first (R22, fail closed)
    expected = built_as_before(env)
    got = built_from_bytes(env)
    assert [telemetry_pb2.TelemetryRecord.FromString(r.data) for r in got] == expected
    # Byte for byte what the message serializes to, framed as in TelemetryRecords.
    assert [r.data for r in got] == [m.SerializeToString() for m in expected]
    assert b"".join(r.framed for r in got) == telemetry_pb2.TelemetryRecords(
        records=expected
    ).SerializeToString()
    assert [(r.vin, r.sequence, r.service) for r in got] == [
        (m.vin, m.sequence, m.service) for m in expected
    ]


def test_an_unset_sent_at_stays_unset_and_a_zero_one_stays_set() -> None:
    env = uplink_pb2.Envelope(vin="WP0ZZZ99ZJS700001", sequence=1)
    env.telemetry.samples.add()
    [unset] = built_from_bytes(env)
    assert not telemetry_pb2.TelemetryRecord.FromString(unset.data).HasField("sent_at")
    env.sent_at.SetInParent()  # present, every field zero
    [zero] = built_from_bytes(env)
    assert telemetry_pb2.TelemetryRecord.FromString(zero.data).HasField("sent_at")


def test_an_empty_sample_is_still_a_present_sample() -> None:
    env = uplink_pb2.Envelope(vin="WP0ZZZ99ZJS700001", sequence=1)
    env.telemetry.samples.add()
    [rec] = built_from_bytes(env)
    assert telemetry_pb2.TelemetryRecord.FromString(rec.data).HasField("sample")


@given(st.binary(max_size=20_000))
def test_framing_is_the_length_delimited_element_of_the_records_field(data: bytes) -> None:
    # Lengths around the varint boundaries (127/128, 16 383/16 384) are in the range drawn.
    framed = frame(data)
    assert framed == b"\x0a" + pb_varint(len(data)) + data


def test_a_record_built_as_a_message_keeps_its_keys_and_bytes() -> None:
    rec = telemetry_pb2.TelemetryRecord(vin="WP0ZZZ99ZJS700001", sequence=9, service="car-finder",
                                        location_withheld=True, signals_withheld=2)
    out = out_record(rec)
    assert (out.vin, out.sequence, out.service) == ("WP0ZZZ99ZJS700001", 9, "car-finder")
    assert telemetry_pb2.TelemetryRecord.FromString(out.data) == rec
    assert out.framed == telemetry_pb2.TelemetryRecords(records=[rec]).SerializeToString()


@given(st.one_of(uint64, st.sampled_from([2**k + d for k in (7, 14, 21, 28) for d in (-1, 0)])))
def test_a_varint_is_protobufs_own_encoding_of_the_number(n: int) -> None:
    # The unrolled lengths (1 to 4 bytes, their boundaries) and the loop beyond, against upb's
    # encoder (an Envelope's sequence: field 2, a varint; zero, the default, is not encoded).
    assert b"\x10" + pb_varint(n) == uplink_pb2.Envelope(sequence=n).SerializeToString() or (
        n == 0 and pb_varint(n) == b"\x00"
    )
