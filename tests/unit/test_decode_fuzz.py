"""Property-based fuzzing of the first stage of ingest: the topic parser (gateway/topics.py) and
the decoder (gateway/decode.py with gateway/validate.py).

Whatever a car, a broken radio link or an attacker puts on the wire, `decode` never raises and
returns a Decoded, a DecodedWill or a Rejected whose reason is a metric label of
REJECT_REASONS; and a Decoded never carries a value out of its documented range (the checker
below restates the ranges of proto/telematics/v1/*.proto independently of validate.py, walking
every field generically so that a field added later without a check is caught too).

Example counts are kept small (the whole module runs in a few seconds in CI); the mutations
start from valid envelopes of every body kind, where the interesting edges are.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import topics, validate
from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.decode import Decoded, DecodedWill, Rejected, decode
from gateway.metrics import REJECT_REASONS
from gateway.model import is_valid_vin

VIN = "WP0ZZZ99ZTS392124"
OTHER_VIN = "WP0ZZZ99ZJS700001"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the gateway's clock in these tests
MAX_BYTES = 65_536
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Result = Decoded | DecodedWill | Rejected


# -- valid seeds of every body kind --------------------------------------------------------------


def _header(seq: int = 7) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(
        vin=VIN,
        sequence=seq,
        sequence_epoch=12345,
        bearer=common_pb2.BEARER_EMBEDDED_SIM,
        radio=common_pb2.RADIO_4G,
        visited_country="DE",
        visited_mcc=262,
    )
    env.sent_at.seconds = int(NOW) - 5
    env.privacy.mode = common_pb2.PRIVACY_MODE_OFF
    env.privacy.services.extend(["car-finder", "remote-services"])
    return env


def _state(state: common_pb2.VehicleState) -> None:
    state.power = common_pb2.POWER_STATE_ON
    state.lock = common_pb2.LOCK_STATE_LOCKED
    state.charging_plug = common_pb2.CHARGING_PLUG_CONNECTED


def seeds() -> list[uplink_pb2.Envelope]:
    out: list[uplink_pb2.Envelope] = []
    env = _header()
    env.hello.connection_id, env.hello.boot, env.hello.model = 42, True, "Taycan"
    env.hello.model_year, env.hello.home_country, env.hello.software_version = 2024, "DE", "4.2.1"
    env.hello.heartbeat_interval_s = 60
    _state(env.hello.state)
    out.append(env)
    env = _header()
    _state(env.state_change.state)
    out.append(env)
    env = _header()
    env.telemetry.service = "car-finder"
    for i in range(3):
        sample = env.telemetry.samples.add()
        sample.sampled_at.seconds = int(NOW) - 60 + i
        sample.location.latitude, sample.location.longitude = 48.78, 9.18
        sample.location.heading_deg, sample.location.speed_kmh = 90.0, 50.0
        sample.signals.add(name="speed_kmh", number=50.5)
        sample.signals.add(name="doors.open", flag=True)
        sample.signals.add(name="gear", text="D")
    out.append(env)
    env = _header()
    cs = env.charging_session
    cs.session_id, cs.energy_kwh, cs.cost_minor, cs.currency = "cs-1", 42.5, 1990, "EUR"
    cs.started_at.seconds, cs.ended_at.seconds = int(NOW) - 7200, int(NOW) - 60
    cs.location.latitude, cs.location.longitude = 48.78, 9.18
    cs.location_name, cs.power_class = "Ionity Stuttgart", "DC150"
    out.append(env)
    env = _header()
    env.entitlement_ack.set_version = 3
    env.entitlement_ack.entitlement_ids.extend(["e-1", "e-2"])
    out.append(env)
    env = _header()
    r = env.fod_result
    r.command_id, r.entitlement_id, r.action, r.success = "c-1", "e-1", uplink_pb2.FOD_ACTION_UNLOCK, True
    out.append(env)
    env = _header()
    env.command_result.command_id, env.command_result.error = "c-2", "door open"
    out.append(env)
    env = _header()
    env.goodbye.reason = "ignition off"
    out.append(env)
    env = _header()
    env.heartbeat.SetInParent()
    out.append(env)
    return out


SEEDS = [e.SerializeToString() for e in seeds()]
WILL_SEED = uplink_pb2.LastWill(vin=VIN, connection_id=42).SerializeToString()


def test_every_seed_is_valid() -> None:
    """The mutations below start from valid input; a seed that is already refused tests less."""
    for payload in SEEDS:
        assert isinstance(decode(topics.uplink(VIN), payload, MAX_BYTES, now=NOW), Decoded)
    assert isinstance(decode(topics.will(VIN), WILL_SEED, MAX_BYTES, now=NOW), DecodedWill)


# -- the independent range checker ---------------------------------------------------------------

_LATEST_YEAR = datetime.fromtimestamp(NOW, UTC).year + validate.MODEL_YEARS_AHEAD
_RANGES: dict[str, tuple[float, float]] = {
    "telematics.v1.Location.latitude": (-90.0, 90.0),
    "telematics.v1.Location.longitude": (-180.0, 180.0),
    "telematics.v1.Location.heading_deg": (0.0, 360.0),
    "telematics.v1.Location.speed_kmh": (0.0, 500.0),
    "telematics.v1.ChargingSession.energy_kwh": (0.0, 1000.0),
    "telematics.v1.ChargingSession.cost_minor": (0, 10_000_000_000),
    "telematics.v1.Envelope.sequence": (1, 2**64 - 1),
}


def assert_in_range(msg: Message, path: str = "") -> None:
    """Every value of a decoded message within its documented range (proto comments)."""
    if isinstance(msg, Timestamp):
        assert validate.EARLIEST_S <= msg.seconds <= NOW + validate.MAX_CLOCK_SKEW_S, path
        assert 0 <= msg.nanos <= 999_999_999, path
        return
    for field, value in msg.ListFields():
        values = list(value) if field.is_repeated else [value]
        where = f"{path}.{field.name}"
        assert len(values) <= validate.MAX_SAMPLES, where
        for v in values:
            _assert_value(field, v, where)


def _assert_value(field: FieldDescriptor, v: object, where: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert isinstance(v, Message)
        assert_in_range(v, where)
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        assert isinstance(v, float) and math.isfinite(v), where
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None and v in field.enum_type.values_by_number, where
    elif field.type == FieldDescriptor.TYPE_STRING:
        assert isinstance(v, str) and len(v) <= validate.MAX_ERROR, where
    lo_hi = _RANGES.get(field.full_name)
    if lo_hi is not None:
        assert isinstance(v, int | float) and lo_hi[0] <= v <= lo_hi[1], where
    if field.full_name == "telematics.v1.Hello.model_year":
        assert isinstance(v, int) and (v == 0 or validate.MODEL_YEAR_MIN <= v <= _LATEST_YEAR), where
    if field.full_name == "telematics.v1.Envelope.visited_mcc":
        assert isinstance(v, int) and (v == 0 or 200 <= v <= 799), where


def check_result(topic: str, result: Result) -> None:
    """The contract of decode for any input."""
    assert isinstance(result, Decoded | DecodedWill | Rejected)
    parsed = topics.parse(topic)
    if isinstance(result, Rejected):
        assert result.reason in REJECT_REASONS
        assert result.reason != "sequence_jump"  # the session's verdict, never the decoder's
        assert result.detail
        return
    assert parsed is not None and is_valid_vin(parsed[0]) and result.vin == parsed[0]
    if isinstance(result, DecodedWill):
        assert parsed[1] is topics.Channel.WILL
        return
    env = result.envelope
    assert parsed[1] is topics.Channel.UP
    assert env.vin == result.vin and env.sequence >= 1 and env.WhichOneof("body") is not None
    assert_in_range(env, "envelope")


def run(topic: str, payload: bytes) -> Result:
    result = decode(topic, payload, MAX_BYTES, now=NOW)
    check_result(topic, result)
    return result


# -- mutations of valid input ----------------------------------------------------------------


def split_fields(data: bytes) -> list[bytes]:
    """The top-level fields of a valid protobuf message, each as its raw bytes (tag included)."""
    out: list[bytes] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(data):
        start = i
        wire = varint() & 7
        if wire == 0:
            varint()
        elif wire == 1:
            i += 8
        elif wire == 2:
            length = varint()  # not `i += varint()`: that reads i before varint() moves it
            i += length
        elif wire == 5:
            i += 4
        else:  # groups: not in our schema
            raise AssertionError(f"unexpected wire type {wire}")
        out.append(data[start:i])
    return out


MUTATIONS = ["flip", "truncate", "duplicate", "drop", "insert", "overwrite", "splice"]


@st.composite
def mutated(draw: st.DrawFn, seed: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(seed))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        if not data:
            data = bytearray(draw(st.binary(max_size=8)))
            continue
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "overwrite":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "splice":  # a field of another valid envelope appended (a second body, ...)
            data += draw(st.sampled_from(split_fields(draw(st.sampled_from(SEEDS)))))
        else:
            try:
                fields = split_fields(bytes(data))
            except (AssertionError, IndexError):  # already broken by an earlier mutation
                data[pos] ^= 0xFF
                continue
            i = draw(st.integers(0, len(fields) - 1))
            if kind == "duplicate":  # the same field again, at any position (last one wins)
                fields.insert(draw(st.integers(0, len(fields))), fields[i])
            else:
                del fields[i]
            data = bytearray(b"".join(fields))
    return bytes(data)


# -- properties -----------------------------------------------------------------------------------


@FAST
@given(payload=st.binary(max_size=600), will=st.booleans())
def test_random_bytes_on_a_vehicle_topic_never_raise(payload: bytes, will: bool) -> None:
    run(topics.will(VIN) if will else topics.uplink(VIN), payload)


@FAST
@given(payload=mutated(st.sampled_from(SEEDS)))
def test_mutated_valid_envelopes_are_decoded_in_range_or_rejected_with_a_known_reason(payload: bytes) -> None:
    run(topics.uplink(VIN), payload)


@FAST
@given(payload=mutated(st.just(WILL_SEED)))
def test_mutated_last_wills_are_decoded_for_their_own_vin_or_rejected(payload: bytes) -> None:
    result = run(topics.will(VIN), payload)
    if isinstance(result, DecodedWill):
        assert result.vin == VIN


@FAST
@given(seed=st.sampled_from(SEEDS), copies=st.integers(2, 40))
def test_a_body_sent_many_times_in_one_envelope_is_merged_and_still_checked(seed: bytes, copies: int) -> None:
    """Protobuf merges repeated occurrences of a message field: repeated lists grow; the
    limits (too_many_items) must hold on the merged message."""
    body = split_fields(seed)[-1]  # the body is the last field of each seed
    run(topics.uplink(VIN), seed + body * copies)


_TOPIC_PIECES = st.sampled_from(
    ["v1", "vehicles", VIN, OTHER_VIN, "up", "will", "down", "", "+", "#", "$share", "g", "é", "\x00", " ",
     VIN.lower(), VIN[:16], VIN + "0", "\U0001d54d"]  # a letter outside the BMP
)


@st.composite
def topic_like(draw: st.DrawFn) -> str:
    """Mostly near-misses of real topics (where parser bugs hide), sometimes any text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=300))
    pieces = draw(st.lists(_TOPIC_PIECES, max_size=7))
    return "/".join(pieces)


@FAST
@given(topic=topic_like())
def test_the_topic_parser_accepts_exactly_the_two_uplink_topic_shapes(topic: str) -> None:
    parsed = topics.parse(topic)
    if parsed is None:
        assert not any(topic in (topics.uplink(v), topics.will(v)) for v in [VIN, OTHER_VIN])
        return
    vin, channel = parsed
    assert vin and "/" not in vin
    assert topic == (topics.uplink(vin) if channel is topics.Channel.UP else topics.will(vin))


@FAST
@given(topic=topic_like(), payload=st.sampled_from([*SEEDS, WILL_SEED, b"", b"\xff"]))
def test_any_topic_is_parsed_or_rejected_as_bad_topic_or_vin_syntax(topic: str, payload: bytes) -> None:
    result = run(topic, payload)
    parsed = topics.parse(topic)
    if parsed is None:
        assert isinstance(result, Rejected) and result.reason == "bad_topic"
    elif not is_valid_vin(parsed[0]):
        assert isinstance(result, Rejected) and result.reason == "vin_syntax"


@settings(max_examples=20, deadline=None)
@given(vin_chars=st.text(min_size=0, max_size=5000))
def test_very_long_topic_levels_are_refused_without_raising(vin_chars: str) -> None:
    run(f"v1/vehicles/{vin_chars}/up", SEEDS[0])


def test_oversize_is_judged_before_parsing() -> None:
    assert run(topics.uplink(VIN), b"\x00" * (MAX_BYTES + 1)) == Rejected(
        "oversize", f"payload of {MAX_BYTES + 1} bytes exceeds {MAX_BYTES}", VIN
    )


def _nested_unknown(depth: int) -> bytes:
    """An unknown length-delimited field (number 99) nested `depth` deep."""
    inner = b""
    for _ in range(depth):
        inner = b"\x9a\x06" + _varint(len(inner)) + inner  # field 99, wire type 2
    return inner


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _nested_group(depth: int) -> bytes:
    """An unknown group (field 98, wire types 3/4) nested `depth` deep: protobuf's parser keeps
    unknown groups and recurses into them."""
    return b"\x93\x06" * depth + b"\x94\x06" * depth


def test_unknown_fields_nested_deep_are_ignored_and_unknown_groups_beyond_100_levels_refused() -> None:
    """Proto3 ignores unknown fields (a newer car may send fields this gateway does not know);
    a length-delimited one is opaque bytes whatever is inside. Unknown groups are parsed, and
    protobuf's recursion limit (100) refuses deeper ones: malformed_protobuf, never a crash."""
    for depth in (1, 10, 100, 1000, 5000):
        assert isinstance(run(topics.uplink(VIN), SEEDS[-1] + _nested_unknown(depth)), Decoded)
    assert isinstance(run(topics.uplink(VIN), SEEDS[-1] + _nested_group(100)), Decoded)
    for depth in (101, 5000):
        result = run(topics.uplink(VIN), SEEDS[-1] + _nested_group(depth))
        assert isinstance(result, Rejected) and result.reason == "malformed_protobuf"
