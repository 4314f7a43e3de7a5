"""Issue 12 (<= 1 KiB per tracked car): values many cars share are one object, not one per car.

Identity (`is`) is what saves the memory, so these tests check identity, with values built at
run time (a str or int decoded from protobuf is a new object each time it is read)."""

import pytest

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2, vehicles_pb2
from gateway.convert import privacy_from_proto, vehicle_from_proto, vehicle_to_proto
from gateway.model import ChargingPlug, LockState, PowerState, Privacy, PrivacyMode, VehicleSession
from gateway.session import compact
from gateway.session.sequence import WINDOW, classify
from gateway.session.tracker import SessionTracker


def hello(vin: str, seq: int = 1000) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(
        vin=vin, sequence=seq, bearer=common_pb2.BEARER_EMBEDDED_SIM, visited_country="AT",
        visited_mcc=232,
    )
    env.privacy.mode = common_pb2.PRIVACY_MODE_PER_SERVICE
    env.privacy.services.append("remote-services")
    h = env.hello
    h.connection_id, h.boot, h.model, h.model_year = 7, True, "Taycan", 2024
    h.home_country, h.software_version, h.heartbeat_interval_s = "DE", "24.3.17", 3600
    h.state.power = common_pb2.POWER_STATE_ON
    h.state.lock = common_pb2.LOCK_STATE_LOCKED
    return env


SHARED = ("model", "model_year", "home_country", "software_version", "heartbeat_interval_s",
          "visited_country", "visited_mcc", "state", "privacy")


def test_two_cars_saying_the_same_hello_share_every_value_object() -> None:
    t = SessionTracker()
    a = t.apply(hello("WP0ZZZY1ZMS000001"), 1.0).session
    b = t.apply(hello("WP0ZZZY1ZMS000002"), 2.0).session
    for name in SHARED:
        assert getattr(a, name) is getattr(b, name), name
    assert a.model == "Taycan" and a.model_year == 2024 and a.visited_mcc == 232
    assert a.privacy == Privacy(PrivacyMode.PER_SERVICE, frozenset({"remote-services"}))


def test_sessions_loaded_from_the_store_share_every_value_object() -> None:
    t = SessionTracker()
    s = t.apply(hello("WP0ZZZY1ZMS000001"), 1.0).session
    stored = vehicle_to_proto(s).SerializeToString()
    loaded = []
    for _ in range(2):
        v = vehicles_pb2.Vehicle()
        v.ParseFromString(stored)
        loaded.append(vehicle_from_proto(v, connection_id=7))
    for name in SHARED:
        assert getattr(loaded[0], name) is getattr(loaded[1], name), name
    assert loaded[0] == s


def test_new_sessions_share_their_default_privacy_and_state() -> None:
    a, b = VehicleSession(vin="WP0ZZZY1ZMS000001"), VehicleSession(vin="WP0ZZZY1ZMS000002")
    assert a.privacy is b.privacy and a.state is b.state


def test_privacy_without_a_service_list_is_one_object_per_mode() -> None:
    for mode in (common_pb2.PRIVACY_MODE_OFF, common_pb2.PRIVACY_MODE_ALL_SERVICES,
                 common_pb2.PRIVACY_MODE_UNSPECIFIED):
        one = privacy_from_proto(common_pb2.Privacy(mode=mode, services=["charging"]))
        assert one is privacy_from_proto(common_pb2.Privacy(mode=mode))
        assert one.services == frozenset()  # the list counts only for per-service privacy


def test_a_full_replay_window_is_one_shared_int() -> None:
    last, window = 10_000, 0
    windows = []
    for seq in range(10_001, 10_001 + 2 * WINDOW):
        _, last, window = classify(last, window, seq)
        windows.append(window)
    full = (1 << WINDOW) - 1
    assert windows[-1] == full and windows[-1] is windows[-2]
    assert windows[WINDOW - 2] != full  # not full before 64 numbers arrived


def test_numbers_are_shared_until_the_table_is_full_then_kept_as_they_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compact, "_numbers", {})  # a table of its own: other tests share the real one
    base = 10**12
    first = compact.number(int(str(base + 1)))
    assert compact.number(int(str(base + 1))) is first
    filler = base + 10
    while len(compact._numbers) < compact._MAX_NUMBERS:
        compact.number(filler)
        filler += 1
    late = int(str(filler + 1))
    assert compact.number(late) is late and compact.number(int(str(filler + 1))) is not late
    assert compact.number(int(str(base + 1))) is first  # what is in the table is still shared


def test_vehicle_states_are_one_object_per_value() -> None:
    a = compact.vehicle_state(PowerState.ON, LockState.LOCKED, ChargingPlug.CONNECTED, True)
    b = compact.vehicle_state(PowerState.ON, LockState.LOCKED, ChargingPlug.CONNECTED, True)
    assert a is b
    assert (a.power, a.lock, a.charging_plug, a.identity_verified) == (
        PowerState.ON, LockState.LOCKED, ChargingPlug.CONNECTED, True)
