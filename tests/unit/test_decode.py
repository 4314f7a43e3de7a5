"""decode: topic, VIN, protobuf and enum checks, and the range of every uplink field
(gateway/validate.py). Every refusal is a Rejected with a reason from REJECT_REASONS."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import decode as decode_module
from gateway import validate
from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.config import PROJECT_ROOT
from gateway.decode import Decoded, DecodedWill, Rejected, decode
from gateway.metrics import REJECT_REASONS
from load import payloads
from load.fleet import generate_fleet

VIN = "WP0ZZZ99ZTS392124"
UP = f"v1/vehicles/{VIN}/up"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the gateway's clock in these tests
HOUR = 3600


def envelope(vin: str = VIN, seq: int = 1) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=vin, sequence=seq)
    env.hello.boot = True
    return env


def run(env: uplink_pb2.Envelope, now: float = NOW) -> Decoded | DecodedWill | Rejected:
    return decode(UP, env.SerializeToString(), 65_536, now=now)


def reason(result: object) -> str:
    assert isinstance(result, Rejected)
    assert result.reason in REJECT_REASONS  # a known, pre-initialised metric label
    return result.reason


def test_valid_envelope_is_decoded() -> None:
    result = run(envelope())
    assert isinstance(result, Decoded) and result.envelope.hello.boot


def test_vin_with_letter_o_is_rejected() -> None:
    bad = "WP0ZZZ99ZTS39212O"
    result = decode(f"v1/vehicles/{bad}/up", envelope(bad).SerializeToString(), 1024, now=NOW)
    assert reason(result) == "vin_syntax"


def test_short_vin_is_rejected() -> None:
    assert reason(decode("v1/vehicles/WP0ZZZ/up", b"", 1024, now=NOW)) == "vin_syntax"


def test_envelope_vin_must_equal_topic_vin() -> None:
    assert reason(run(envelope("WP0ZZZ99ZTS392125"))) == "vin_mismatch"


def test_truncated_protobuf_is_rejected() -> None:
    data = envelope().SerializeToString()
    assert reason(decode(UP, data[:-3], 1024, now=NOW)) == "malformed_protobuf"


def test_oversize_payload_is_rejected_before_parsing() -> None:
    assert reason(decode(UP, b"x" * 2000, 1024, now=NOW)) == "oversize"


def test_unknown_enum_value_is_rejected() -> None:
    env = envelope()
    env.bearer = common_pb2.Bearer.ValueType(42)  # a number the enum does not define
    assert reason(run(env)) == "unknown_enum"


def test_unknown_state_enum_in_a_state_change_is_rejected() -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=3)
    env.state_change.state.lock = common_pb2.LockState.ValueType(9)  # not a LockState
    assert reason(run(env)) == "unknown_enum"


def test_envelope_without_body_is_rejected() -> None:
    assert reason(run(uplink_pb2.Envelope(vin=VIN, sequence=1))) == "missing_body"


def test_envelope_without_sequence_is_rejected() -> None:
    assert reason(run(envelope(seq=0))) == "sequence_missing"


def test_foreign_topic_is_rejected() -> None:
    assert reason(decode("something/else", b"", 1024, now=NOW)) == "bad_topic"


def test_last_will_is_decoded_with_its_connection_id() -> None:
    will = uplink_pb2.LastWill(vin=VIN, connection_id=7)
    result = decode(f"v1/vehicles/{VIN}/will", will.SerializeToString(), 1024, now=NOW)
    assert isinstance(result, DecodedWill) and result.connection_id == 7


# -- sent_at and every other timestamp -----------------------------------------------------------


def with_sent_at(seconds: int, nanos: int = 0) -> uplink_pb2.Envelope:
    env = envelope()
    env.sent_at.seconds, env.sent_at.nanos = seconds, nanos
    return env


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (validate.TIMESTAMP_MAX_S + 1, 0),  # after 9999-12-31: not a Timestamp at all
        (validate.TIMESTAMP_MIN_S - 1, 0),  # before 0001-01-01
        (int(NOW), -1),  # negative nanos
        (int(NOW), 1_000_000_000),  # nanos overflow
        (253_402_300_000, 0),  # the year 9999: a valid Timestamp, absurdly far ahead
        (0, 0),  # 1970: a reset clock
        (946_684_799, 0),  # one second before 2000
        (int(NOW) + 2 * HOUR, 0),  # two hours ahead of the gateway
    ],
)
def test_sent_at_outside_the_valid_or_plausible_range_is_rejected(seconds: int, nanos: int) -> None:
    assert reason(run(with_sent_at(seconds, nanos))) == "bad_timestamp"


@pytest.mark.parametrize("offset", [-30 * 24 * HOUR, -600, 0, 600, HOUR - 1])
def test_car_clock_minutes_off_or_data_buffered_for_days_is_served(offset: int) -> None:
    assert isinstance(run(with_sent_at(int(NOW) + offset, 999_999_999)), Decoded)


def test_envelope_without_sent_at_is_served() -> None:
    assert isinstance(run(envelope()), Decoded)  # a car whose clock is not set yet sends none


def test_sampled_at_in_the_year_9999_is_rejected() -> None:
    env = telemetry()
    env.telemetry.samples[0].sampled_at.seconds = 253_402_300_000
    result = run(env)
    assert reason(result) == "bad_timestamp"
    assert isinstance(result, Rejected) and "telemetry.samples[0].sampled_at" in result.detail


# -- header: visited network, privacy ------------------------------------------------------------


@pytest.mark.parametrize("code", ["de", "DEU", "D", "D1", "Ä"])
def test_visited_country_that_is_not_iso_alpha_2_upper_case_is_rejected(code: str) -> None:
    env = envelope()
    env.visited_country = code
    assert reason(run(env)) == "bad_country"


@pytest.mark.parametrize("mcc", [1, 199, 800, 901, 1000, 2**32 - 1])
def test_visited_mcc_outside_200_to_799_is_rejected(mcc: int) -> None:
    env = envelope()
    env.visited_mcc = mcc
    assert reason(run(env)) == "bad_country"


def test_known_and_unknown_network_header_is_served() -> None:
    env = envelope()
    env.visited_country, env.visited_mcc = "DE", 262
    assert isinstance(run(env), Decoded)
    assert isinstance(run(envelope()), Decoded)  # "" and 0: not known


def test_too_many_privacy_services_are_rejected() -> None:
    env = envelope()
    env.privacy.services.extend(f"service-{i}" for i in range(validate.MAX_PRIVACY_SERVICES + 1))
    assert reason(run(env)) == "too_many_items"


@pytest.mark.parametrize("service", ["", "Car Finder", "car_finder", "x" * 65])
def test_privacy_service_that_is_not_a_service_id_is_rejected(service: str) -> None:
    env = envelope()
    env.privacy.services.append(service)
    assert reason(run(env)) == "bad_string"


# -- hello ---------------------------------------------------------------------------------------


def hello(**fields: str | int) -> uplink_pb2.Envelope:
    env = envelope()
    for name, value in fields.items():
        setattr(env.hello, name, value)
    return env


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"model": "9" * 33}, "bad_string"),
        ({"software_version": "v" * 65}, "bad_string"),
        ({"home_country": "germany"}, "bad_country"),
        ({"model_year": 1989}, "bad_model_year"),
        ({"model_year": 2029}, "bad_model_year"),  # NOW is in 2026: at most two years ahead
        ({"model_year": 9999}, "bad_model_year"),
    ],
)
def test_hello_field_out_of_range_is_rejected(fields: dict[str, str | int], expected: str) -> None:
    assert reason(run(hello(**fields))) == expected


def test_complete_hello_is_served() -> None:
    env = hello(model="Taycan", model_year=2028, home_country="DE", software_version="PCM6.1-2025.11")
    assert isinstance(run(env), Decoded)


# -- telemetry -----------------------------------------------------------------------------------


def telemetry(lat: float = 48.78, lon: float = 9.18) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=VIN, sequence=2)
    env.sent_at.seconds = int(NOW)
    env.telemetry.service = "car-finder"
    s = env.telemetry.samples.add()
    s.sampled_at.seconds = int(NOW) - 10
    s.location.latitude, s.location.longitude = lat, lon
    s.location.heading_deg, s.location.speed_kmh = 90.0, 120.0
    s.signals.add(name="soc_pct", number=80.0)
    s.signals.add(name="charging", flag=False)
    s.signals.add(name="gear", text="D")
    return env


def test_valid_telemetry_is_decoded() -> None:
    assert isinstance(run(telemetry()), Decoded)


def set_location(field: str, value: float) -> Callable[[common_pb2.Location], None]:
    return lambda loc: setattr(loc, field, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latitude", math.nan),
        ("latitude", math.inf),
        ("latitude", 90.000001),
        ("latitude", -91.0),
        ("longitude", -math.inf),
        ("longitude", 180.5),
        ("heading_deg", 361.0),
        ("heading_deg", -1.0),
        ("heading_deg", math.nan),
        ("speed_kmh", -1.0),
        ("speed_kmh", 501.0),
        ("speed_kmh", math.inf),
    ],
)
def test_location_out_of_range_or_not_finite_is_rejected(field: str, value: float) -> None:
    env = telemetry()
    setattr(env.telemetry.samples[0].location, field, value)
    result = run(env)
    assert reason(result) == "bad_location"
    assert isinstance(result, Rejected) and f"telemetry.samples[0].location.{field}" in result.detail


def test_rejection_detail_never_repeats_the_cars_location() -> None:
    env = telemetry(lat=123.456789, lon=9.876543)
    result = run(env)
    assert isinstance(result, Rejected)
    assert "123.45" not in result.detail and "9.87" not in result.detail  # R22: personal data


def test_extreme_but_valid_coordinates_are_served() -> None:
    for lat, lon in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)]:
        assert isinstance(run(telemetry(lat, lon)), Decoded)


@given(
    lat=st.floats(allow_nan=True, allow_infinity=True),
    lon=st.floats(allow_nan=True, allow_infinity=True),
    heading=st.floats(width=32, allow_nan=True, allow_infinity=True),
    speed=st.floats(width=32, allow_nan=True, allow_infinity=True),
)
def test_any_floats_never_yield_a_decoded_location_out_of_range(
    lat: float, lon: float, heading: float, speed: float
) -> None:
    env = telemetry(lat, lon)
    loc = env.telemetry.samples[0].location
    loc.heading_deg, loc.speed_kmh = heading, speed
    result = run(env)
    if isinstance(result, Decoded):
        got = result.envelope.telemetry.samples[0].location
        assert all(math.isfinite(v) for v in (got.latitude, got.longitude, got.heading_deg, got.speed_kmh))
        assert -90 <= got.latitude <= 90 and -180 <= got.longitude <= 180
        assert 0 <= got.heading_deg <= 360 and 0 <= got.speed_kmh <= validate.MAX_SPEED_KMH
    else:
        assert reason(result) == "bad_location"


@pytest.mark.parametrize("service", ["", "Car-Finder", "car finder", "x" * 65])
def test_telemetry_service_that_is_not_a_service_id_is_rejected(service: str) -> None:
    env = telemetry()
    env.telemetry.service = service
    assert reason(run(env)) == "bad_string"


def test_too_many_samples_in_one_batch_are_rejected() -> None:
    env = telemetry()
    for _ in range(validate.MAX_SAMPLES):
        env.telemetry.samples.add()  # empty: the count, not the payload size, is the limit here
    assert reason(run(env)) == "too_many_items"


def test_too_many_signals_in_one_sample_are_rejected() -> None:
    env = telemetry()
    for i in range(validate.MAX_SIGNALS):
        env.telemetry.samples[0].signals.add(name=f"s{i}", number=1.0)
    assert reason(run(env)) == "too_many_items"


@pytest.mark.parametrize(
    "signal",
    [
        uplink_pb2.Signal(name="soc_pct", number=math.nan),
        uplink_pb2.Signal(name="soc_pct", number=-math.inf),
        uplink_pb2.Signal(name="", number=1.0),
        uplink_pb2.Signal(name="state of charge", number=1.0),
        uplink_pb2.Signal(name="s" * 65, number=1.0),
        uplink_pb2.Signal(name="gear", text="x" * 257),
        uplink_pb2.Signal(name="no_value"),
    ],
)
def test_signal_with_bad_name_value_or_text_is_rejected(signal: uplink_pb2.Signal) -> None:
    env = telemetry()
    env.telemetry.samples[0].signals.append(signal)
    assert reason(run(env)) == "bad_signal"


def test_a_sample_without_location_or_sampled_at_is_decoded() -> None:
    # Absent submessages read as zeros (0 s is before 2000): only a present one is judged.
    env = telemetry()
    sample = env.telemetry.samples.add()
    sample.signals.add(name="soc_pct", number=80.0)
    assert not sample.HasField("location") and not sample.HasField("sampled_at")
    assert isinstance(run(env), Decoded)


def test_a_present_sampled_at_before_2000_is_rejected_with_its_path() -> None:
    env = telemetry()
    env.telemetry.samples.add().sampled_at.seconds = validate.EARLIEST_S - 1
    result = run(env)
    assert reason(result) == "bad_timestamp"
    assert isinstance(result, Rejected) and result.detail.startswith("telemetry.samples[1].sampled_at:")


@pytest.mark.parametrize(
    ("signal", "detail"),
    [
        (uplink_pb2.Signal(name="odometer_km", number=math.nan), "telemetry.samples[1].signals[3].number:"),
        (uplink_pb2.Signal(name="gear", text="x" * 257), "telemetry.samples[1].signals[3].text:"),
        (uplink_pb2.Signal(name="no_value"), "telemetry.samples[1].signals[3]: has no value"),
        (uplink_pb2.Signal(name="9lives", flag=True), "telemetry.samples[1].signals[3].name:"),
    ],
)
def test_a_bad_signal_is_named_by_its_sample_and_position(signal: uplink_pb2.Signal, detail: str) -> None:
    env = telemetry()
    second = env.telemetry.samples.add()
    second.CopyFrom(env.telemetry.samples[0])
    second.signals.append(signal)  # after three good ones of each kind: index 3
    result = run(env)
    assert reason(result) == "bad_signal"
    assert isinstance(result, Rejected) and result.detail.startswith(detail)


# -- charging session (R28) ----------------------------------------------------------------------


def charging() -> uplink_pb2.Envelope:
    """A realistic session, shaped like load/sim.py's."""
    env = uplink_pb2.Envelope(vin=VIN, sequence=5)
    cs = env.charging_session
    cs.session_id = f"{VIN}-1767220000-1"
    cs.started_at.seconds = int(NOW) - 2 * HOUR
    cs.ended_at.seconds = int(NOW) - 60
    cs.location.latitude, cs.location.longitude = 48.78, 9.18
    cs.location_name = "Charging park DE-17"
    cs.energy_kwh = 43.21
    cs.cost_minor = 2_593
    cs.currency = "EUR"
    cs.power_class = "DC150"
    return env


def test_valid_charging_session_is_decoded() -> None:
    assert isinstance(run(charging()), Decoded)


def test_free_charging_session_may_name_no_currency() -> None:
    env = charging()
    env.charging_session.cost_minor, env.charging_session.currency = 0, ""
    assert isinstance(run(env), Decoded)


def test_session_ending_when_it_starts_is_served() -> None:
    env = charging()
    env.charging_session.ended_at.CopyFrom(env.charging_session.started_at)
    assert isinstance(run(env), Decoded)


def set_cs(**fields: object) -> Callable[[common_pb2.ChargingSession], None]:
    def apply(cs: common_pb2.ChargingSession) -> None:
        for name, value in fields.items():
            setattr(cs, name, value)

    return apply


def ended_before_started(cs: common_pb2.ChargingSession) -> None:
    cs.ended_at.seconds = cs.started_at.seconds - 1


def ended_a_nanosecond_before_started(cs: common_pb2.ChargingSession) -> None:
    cs.ended_at.CopyFrom(cs.started_at)
    cs.started_at.nanos = 1


def lasting_eight_days(cs: common_pb2.ChargingSession) -> None:
    cs.started_at.seconds = cs.ended_at.seconds - 8 * 24 * HOUR


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (set_cs(energy_kwh=-0.1), "bad_charging_session"),
        (set_cs(energy_kwh=math.nan), "bad_charging_session"),
        (set_cs(energy_kwh=math.inf), "bad_charging_session"),
        (set_cs(energy_kwh=1000.5), "bad_charging_session"),
        (set_cs(cost_minor=-1), "bad_charging_session"),
        (set_cs(cost_minor=2**63 - 1), "bad_charging_session"),
        (set_cs(currency="eur"), "bad_charging_session"),
        (set_cs(currency="EURO"), "bad_charging_session"),
        (set_cs(currency=""), "bad_charging_session"),  # a cost needs a currency
        (ended_before_started, "bad_charging_session"),
        (ended_a_nanosecond_before_started, "bad_charging_session"),
        (lasting_eight_days, "bad_charging_session"),
        (lambda cs: cs.ClearField("started_at"), "bad_timestamp"),
        (lambda cs: cs.ClearField("ended_at"), "bad_timestamp"),
        (lambda cs: setattr(cs.started_at, "seconds", 5), "bad_timestamp"),
        (lambda cs: setattr(cs.ended_at, "seconds", 253_402_300_000), "bad_timestamp"),
        (lambda cs: setattr(cs.location, "latitude", math.nan), "bad_location"),
        (lambda cs: setattr(cs.location, "longitude", 200.0), "bad_location"),
        (set_cs(session_id=""), "bad_string"),
        (set_cs(session_id="has space"), "bad_string"),
        (set_cs(session_id="s" * 129), "bad_string"),
        (set_cs(location_name="n" * 257), "bad_string"),
        (set_cs(power_class="p" * 33), "bad_string"),
    ],
)
def test_charging_session_field_out_of_range_is_rejected(
    change: Callable[[common_pb2.ChargingSession], None], expected: str
) -> None:
    env = charging()
    change(env.charging_session)
    assert reason(run(env)) == expected


def test_rejection_detail_never_repeats_the_location_name() -> None:
    env = charging()
    env.charging_session.location_name = "Home of Erika Mustermann " * 20
    result = run(env)
    assert isinstance(result, Rejected) and "Erika" not in result.detail


# -- entitlement ack, results, goodbye -----------------------------------------------------------


def test_too_many_entitlement_ids_in_an_ack_are_rejected() -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=2)
    env.entitlement_ack.set_version = 3
    env.entitlement_ack.entitlement_ids.extend(f"e{i}" for i in range(validate.MAX_ENTITLEMENT_IDS + 1))
    assert reason(run(env)) == "too_many_items"


@pytest.mark.parametrize("eid", ["", "with space", "e" * 129])
def test_entitlement_ack_with_a_bad_id_is_rejected(eid: str) -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=2)
    env.entitlement_ack.entitlement_ids.extend(["1b4e28ba-2fa1-11d2-883f-0016d3cca427", eid])
    assert reason(run(env)) == "bad_string"


def fod(command_id: str = "cmd-1", entitlement_id: str = "", error: str = "") -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=VIN, sequence=2)
    r = env.fod_result
    r.command_id, r.entitlement_id, r.error = command_id, entitlement_id, error
    r.action = uplink_pb2.FOD_ACTION_UNLOCK
    return env


def test_fod_result_is_served_with_or_without_entitlement_id() -> None:
    assert isinstance(run(fod(entitlement_id="")), Decoded)
    eid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert isinstance(run(fod(entitlement_id=eid, error="install_failed")), Decoded)


@pytest.mark.parametrize(
    "env",
    [
        fod(command_id=""),
        fod(command_id="c" * 129),
        fod(entitlement_id="with space"),
        fod(error="e" * 1025),
    ],
)
def test_fod_result_with_bad_ids_or_error_text_is_rejected(env: uplink_pb2.Envelope) -> None:
    assert reason(run(env)) == "bad_string"


def test_command_result_needs_a_command_id_and_a_bounded_error() -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=2)
    env.command_result.command_id = "cmd-9"
    assert isinstance(run(env), Decoded)
    env.command_result.error = "e" * 1025
    assert reason(run(env)) == "bad_string"
    env.command_result.error, env.command_result.command_id = "", ""
    assert reason(run(env)) == "bad_string"


def test_goodbye_reason_is_bounded() -> None:
    env = uplink_pb2.Envelope(vin=VIN, sequence=2)
    env.goodbye.reason = "ignition off"
    assert isinstance(run(env), Decoded)
    env.goodbye.reason = "r" * 257
    assert reason(run(env)) == "bad_string"


# -- what the project's own cars send stays valid ------------------------------------------------


def test_load_generator_payloads_are_all_decoded() -> None:
    now = time.time()
    for car in generate_fleet(300, seed=1):
        stream = payloads.TelemetryStream(car, points=4, seed=1, samples=3)
        abroad = payloads.header(car, 2, visited="FR")  # a visited network's country and MCC
        abroad.state_change.state.lock = common_pb2.LOCK_STATE_LOCKED
        for raw in (
            payloads.hello(car, 1, 42, boot=True),
            abroad.SerializeToString(),
            stream.payload(3, time.time_ns()),
            payloads.goodbye(car, 4),
        ):
            result = decode(f"v1/vehicles/{car.vin}/up", raw, 65_536, now=now)
            assert isinstance(result, Decoded), result


def test_every_reject_reason_is_a_known_label_and_documented_in_the_readme() -> None:
    sources = (Path(validate.__file__).read_text(), Path(decode_module.__file__).read_text())
    used = {m for src in sources for m in re.findall(r'(?:Invalid|Rejected)\(\s*"([a-z_]+)"', src)}
    assert used and used <= set(REJECT_REASONS)
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert [r for r in REJECT_REASONS if f"`{r}`" not in readme] == []


def test_a_huge_envelope_vin_is_clipped_in_the_rejection_detail() -> None:
    # The detail goes to the log: a car must not be able to write 64 KiB of its own text there.
    env = envelope()
    env.vin = "X" * 60_000
    rejected = run(env)
    assert isinstance(rejected, Rejected) and rejected.reason == "vin_mismatch"
    assert len(rejected.detail) < 100 and "..." in rejected.detail
