"""load/fleet.py and load/payloads.py: a deterministic, valid fleet and parseable payloads."""

from __future__ import annotations

import time
from collections import Counter

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.egress.record import pb_varint
from gateway.model import is_valid_vin
from gateway.session.liveness import MAX_HEARTBEAT_S
from load import payloads
from load.fleet import COUNTRIES, LAST_MODEL_YEAR, MODELS, check_digit, generate_fleet, split


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    assert generate_fleet(500, seed=7) == generate_fleet(500, seed=7)
    assert generate_fleet(500, seed=7) != generate_fleet(500, seed=8)
    # A smaller fleet is not required to be a prefix, but the same size is stable.
    assert [c.vin for c in generate_fleet(3, seed=1)] == [c.vin for c in generate_fleet(3, seed=1)]


def test_vins_are_valid_unique_and_carry_a_correct_check_digit() -> None:
    fleet = generate_fleet(15_000, seed=1)
    vins = [c.vin for c in fleet]
    assert len(set(vins)) == len(vins) == 15_000
    for vin in vins:
        assert is_valid_vin(vin), vin
        assert not set(vin) & {"I", "O", "Q"}
        assert vin[8] == check_digit(vin)


def test_check_digit_of_a_published_example() -> None:
    assert check_digit("1M8GDM9AXKP042788") == "X"  # the classic FMVSS 565 worked example


def test_fleet_mixes_models_years_bearers_and_countries() -> None:
    fleet = generate_fleet(5_000, seed=3)
    models = Counter(c.model for c in fleet)
    assert set(models) == {m.name for m in MODELS}
    first_year = {m.name: m.first_year for m in MODELS}
    assert all(first_year[c.model] <= c.model_year <= LAST_MODEL_YEAR for c in fleet)
    assert {c.bearer for c in fleet if c.model == "Taycan"} == {common_pb2.BEARER_EMBEDDED_SIM}  # R19
    assert len({c.bearer for c in fleet}) == 3
    assert len({c.home_country for c in fleet}) >= 14
    assert all(c.home_country in COUNTRIES and c.home_mcc == COUNTRIES[c.home_country][0] for c in fleet)


def test_split_covers_the_fleet_in_near_equal_parts() -> None:
    fleet = generate_fleet(15_001, seed=1)
    parts = split(fleet, 4)
    assert [len(p) for p in parts] == [3751, 3750, 3750, 3750]
    assert [c for p in parts for c in p] == fleet


def test_telemetry_payload_is_a_complete_envelope() -> None:
    car = generate_fleet(1, seed=1)[0]
    stream = payloads.TelemetryStream(car, points=4, seed=1, samples=3)
    now = time.time_ns()
    env = uplink_pb2.Envelope.FromString(stream.payload(123_456, now))
    assert (env.vin, env.sequence, env.telemetry.service) == (car.vin, 123_456, payloads.TELEMETRY_SERVICE)
    assert env.sent_at.seconds * 1_000_000_000 + env.sent_at.nanos == now
    assert payloads.sent_at_ns(stream.payload(1, now)) == now
    assert len(env.telemetry.samples) == 3
    assert env.bearer == car.bearer and env.visited_country == car.home_country and not env.roaming
    assert env.telemetry.samples[0].HasField("location")


def test_hello_and_will_carry_the_connection_id() -> None:
    car = generate_fleet(1, seed=2)[0]
    hello = uplink_pb2.Envelope.FromString(payloads.hello(car, 5, 0xDEADBEEF, boot=True))
    assert hello.WhichOneof("body") == "hello"
    assert (hello.hello.connection_id, hello.hello.boot, hello.hello.model) == (0xDEADBEEF, True, car.model)
    will = uplink_pb2.LastWill.FromString(payloads.last_will(car, 0xDEADBEEF))
    assert (will.vin, will.connection_id) == (car.vin, 0xDEADBEEF)


def test_protobuf_varint() -> None:  # the one the generator shares with the telemetry egress
    assert pb_varint(0) == b"\x00"
    assert pb_varint(300) == b"\xac\x02"
    assert pb_varint(2**63) == b"\x80" * 9 + b"\x01"


def test_generator_hello_announces_the_longest_heartbeat_so_idle_bench_cars_are_not_timed_out() -> None:
    car = generate_fleet(1, seed=3)[0]
    hello = uplink_pb2.Envelope.FromString(payloads.hello(car, 1, 7, boot=True)).hello
    assert hello.heartbeat_interval_s == MAX_HEARTBEAT_S
