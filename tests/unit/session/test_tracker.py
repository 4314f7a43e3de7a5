from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.model import (
    Bearer,
    LockState,
    OfflineReason,
    PowerState,
    Presence,
    PrivacyMode,
)
from gateway.session.events import EventKind
from gateway.session.sequence import Arrival
from gateway.session.tracker import SessionTracker

VIN = "WP0ZZZ99ZTS392124"


def hello(seq: int, conn: int = 1, boot: bool = True) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(
        vin=VIN, sequence=seq, bearer=common_pb2.BEARER_INSERTED_SIM, visited_country="AT",
        roaming=True,
    )
    env.hello.connection_id = conn
    env.hello.boot = boot
    env.hello.model = "911"
    env.hello.model_year = 2018
    env.hello.home_country = "DE"
    env.hello.state.power = common_pb2.POWER_STATE_ON
    env.hello.state.lock = common_pb2.LOCK_STATE_UNLOCKED
    return env


def lock(seq: int, state: common_pb2.LockState.ValueType) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=VIN, sequence=seq, bearer=common_pb2.BEARER_INSERTED_SIM,
                              visited_country="AT", roaming=True)
    env.state_change.state.lock = state
    return env


def test_birth_message_marks_the_vehicle_online_with_bearer_and_countries() -> None:
    t = SessionTracker()
    r = t.apply(hello(1), now=100.0)
    s = r.session
    assert (s.presence, s.bearer, s.home_country, s.visited_country) == (
        Presence.ONLINE, Bearer.INSERTED_SIM, "DE", "AT",
    )
    assert [e.kind for e in r.events] == [EventKind.ONLINE]
    assert r.events[0].boot and s.last_boot_at == 100.0
    assert t.online_by_bearer[Bearer.INSERTED_SIM] == 1


def test_state_change_reports_the_changed_fields() -> None:
    t = SessionTracker()
    t.apply(hello(1), 1.0)
    r = t.apply(lock(2, common_pb2.LOCK_STATE_LOCKED), 2.0)
    assert r.session.state.lock is LockState.LOCKED
    assert r.session.state.power is PowerState.ON  # unspecified fields stay
    assert r.events[0].kind is EventKind.STATE_CHANGED and r.events[0].changed == ("state.lock",)


def test_out_of_order_state_change_does_not_regress_the_state() -> None:
    t = SessionTracker()
    t.apply(hello(1), 1.0)
    t.apply(lock(3, common_pb2.LOCK_STATE_LOCKED), 2.0)
    late = t.apply(lock(2, common_pb2.LOCK_STATE_UNLOCKED), 3.0)
    assert late.arrival is Arrival.LATE and not late.events
    assert late.session.state.lock is LockState.LOCKED


def test_duplicate_message_changes_nothing() -> None:
    t = SessionTracker()
    t.apply(hello(1), 1.0)
    t.apply(lock(2, common_pb2.LOCK_STATE_LOCKED), 2.0)
    dup = t.apply(lock(2, common_pb2.LOCK_STATE_LOCKED), 3.0)
    assert dup.arrival is Arrival.DUPLICATE and not dup.dirty and not dup.events


def test_last_will_of_the_current_connection_marks_offline() -> None:
    t = SessionTracker()
    t.apply(hello(1, conn=5), 1.0)
    r = t.apply_will(VIN, 5, 2.0)
    assert r.session.presence is Presence.OFFLINE
    assert r.session.offline_reason is OfflineReason.CONNECTION_LOST
    assert r.events[0].kind is EventKind.OFFLINE
    assert t.online_by_bearer[Bearer.INSERTED_SIM] == 0


def test_stale_will_from_an_older_connection_keeps_the_car_online() -> None:
    t = SessionTracker()
    t.apply(hello(1, conn=5), 1.0)
    t.apply(hello(2, conn=6, boot=False), 2.0)
    r = t.apply_will(VIN, 5, 3.0)
    assert r.session.presence is Presence.ONLINE and not r.events


def test_goodbye_marks_offline_with_reason_goodbye() -> None:
    t = SessionTracker()
    t.apply(hello(1), 1.0)
    env = uplink_pb2.Envelope(vin=VIN, sequence=2, bearer=common_pb2.BEARER_INSERTED_SIM,
                              visited_country="AT", roaming=True)
    env.goodbye.reason = "ignition off"
    r = t.apply(env, 2.0)
    assert r.session.offline_reason is OfflineReason.GOODBYE
    assert [e.kind for e in r.events] == [EventKind.OFFLINE]


def test_privacy_is_taken_from_every_envelope() -> None:
    t = SessionTracker()
    t.apply(hello(1), 1.0)
    env = lock(2, common_pb2.LOCK_STATE_LOCKED)
    env.privacy.mode = common_pb2.PRIVACY_MODE_PER_SERVICE
    env.privacy.services.append("car-finder")
    r = t.apply(env, 2.0)
    assert r.session.privacy.mode is PrivacyMode.PER_SERVICE
    assert r.session.privacy.withholds("car-finder") and not r.session.privacy.withholds("charging")
    assert "privacy" in r.events[0].changed


def test_bearer_change_while_online_moves_the_online_count() -> None:
    t = SessionTracker()
    t.apply(hello(1), 1.0)
    env = lock(2, common_pb2.LOCK_STATE_LOCKED)
    env.bearer = common_pb2.BEARER_WIFI_HOTSPOT
    t.apply(env, 2.0)
    assert t.online_by_bearer[Bearer.INSERTED_SIM] == 0
    assert t.online_by_bearer[Bearer.WIFI_HOTSPOT] == 1
