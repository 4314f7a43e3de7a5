from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.decode import Decoded, DecodedWill, Rejected, decode

VIN = "WP0ZZZ99ZTS392124"


def envelope(vin: str = VIN, seq: int = 1) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=vin, sequence=seq)
    env.hello.boot = True
    return env


def reason(result: object) -> str:
    assert isinstance(result, Rejected)
    return result.reason


def test_valid_envelope_is_decoded() -> None:
    result = decode(f"v1/vehicles/{VIN}/up", envelope().SerializeToString(), 1024)
    assert isinstance(result, Decoded) and result.envelope.hello.boot


def test_vin_with_letter_o_is_rejected() -> None:
    bad = "WP0ZZZ99ZTS39212O"
    assert reason(decode(f"v1/vehicles/{bad}/up", envelope(bad).SerializeToString(), 1024)) == "vin_syntax"


def test_short_vin_is_rejected() -> None:
    assert reason(decode("v1/vehicles/WP0ZZZ/up", b"", 1024)) == "vin_syntax"


def test_envelope_vin_must_equal_topic_vin() -> None:
    other = "WP0ZZZ99ZTS392125"
    result = decode(f"v1/vehicles/{VIN}/up", envelope(other).SerializeToString(), 1024)
    assert reason(result) == "vin_mismatch"


def test_truncated_protobuf_is_rejected() -> None:
    data = envelope().SerializeToString()
    assert reason(decode(f"v1/vehicles/{VIN}/up", data[:-3], 1024)) == "malformed_protobuf"


def test_oversize_payload_is_rejected_before_parsing() -> None:
    assert reason(decode(f"v1/vehicles/{VIN}/up", b"x" * 2000, 1024)) == "oversize"


def test_unknown_enum_value_is_rejected() -> None:
    env = envelope()
    env.bearer = common_pb2.Bearer.ValueType(42)  # a number the enum does not define
    assert reason(decode(f"v1/vehicles/{VIN}/up", env.SerializeToString(), 1024)) == "unknown_enum"


def test_unknown_state_enum_in_a_state_change_is_rejected() -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=3)
    env.state_change.state.lock = common_pb2.LockState.ValueType(9)  # not a LockState
    assert reason(decode(f"v1/vehicles/{VIN}/up", env.SerializeToString(), 1024)) == "unknown_enum"


def test_envelope_without_body_is_rejected() -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=1)
    assert reason(decode(f"v1/vehicles/{VIN}/up", env.SerializeToString(), 1024)) == "missing_body"


def test_envelope_without_sequence_is_rejected() -> None:
    env = envelope(seq=0)
    assert reason(decode(f"v1/vehicles/{VIN}/up", env.SerializeToString(), 1024)) == "sequence_missing"


def test_foreign_topic_is_rejected() -> None:
    assert reason(decode("something/else", b"", 1024)) == "bad_topic"


def test_last_will_is_decoded_with_its_connection_id() -> None:
    will = uplink_pb2.LastWill(vin=VIN, connection_id=7)
    result = decode(f"v1/vehicles/{VIN}/will", will.SerializeToString(), 1024)
    assert isinstance(result, DecodedWill) and result.connection_id == 7
