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


# -- sequence epochs: neither a far-ahead number nor a head-unit reset freezes a car --

EPOCH, NEW_EPOCH = 0xA1, 0xB2


def with_epoch(env: uplink_pb2.Envelope, epoch: int) -> uplink_pb2.Envelope:
    env.sequence_epoch = epoch
    return env


def test_far_ahead_sequence_is_refused_and_later_state_changes_still_apply() -> None:
    t = SessionTracker()
    t.apply(with_epoch(hello(1), EPOCH), 1.0)
    far = t.apply(with_epoch(lock(9223372036854775808, common_pb2.LOCK_STATE_LOCKED), EPOCH), 2.0)
    assert far.arrival is Arrival.JUMP and not far.events
    assert far.session.state.lock is LockState.UNLOCKED and far.session.last_sequence == 1
    r = t.apply(with_epoch(lock(2, common_pb2.LOCK_STATE_LOCKED), EPOCH), 3.0)
    assert r.arrival is Arrival.NEW and r.session.state.lock is LockState.LOCKED


def test_far_ahead_sequence_of_a_car_without_epoch_does_not_freeze_it_either() -> None:
    t = SessionTracker()
    t.apply(hello(1), 1.0)
    assert t.apply(lock(2**63, common_pb2.LOCK_STATE_LOCKED), 2.0).arrival is Arrival.JUMP
    assert t.apply(lock(2, common_pb2.LOCK_STATE_LOCKED), 3.0).session.state.lock is LockState.LOCKED


def test_head_unit_reset_with_a_new_epoch_counts_from_one_again() -> None:
    t = SessionTracker()
    t.apply(with_epoch(hello(5000, conn=1), EPOCH), 1.0)
    t.apply(with_epoch(lock(5001, common_pb2.LOCK_STATE_LOCKED), EPOCH), 2.0)
    r = t.apply(with_epoch(hello(1, conn=2), NEW_EPOCH), 3.0)  # the new head unit
    assert r.arrival is Arrival.NEW and r.session.sequence_epoch == NEW_EPOCH
    assert r.session.last_sequence == 1 and r.session.state.lock is LockState.UNLOCKED
    r = t.apply(with_epoch(lock(2, common_pb2.LOCK_STATE_LOCKED), NEW_EPOCH), 4.0)
    assert r.arrival is Arrival.NEW and r.session.state.lock is LockState.LOCKED


def test_redelivery_from_before_the_reset_does_not_regress_the_new_install() -> None:
    t = SessionTracker()
    t.apply(with_epoch(hello(5000, conn=1), EPOCH), 1.0)
    t.apply(with_epoch(hello(1, conn=2), NEW_EPOCH), 2.0)
    t.apply(with_epoch(lock(2, common_pb2.LOCK_STATE_LOCKED), NEW_EPOCH), 3.0)
    old = t.apply(with_epoch(lock(5001, common_pb2.LOCK_STATE_UNLOCKED), EPOCH), 4.0)
    assert old.arrival is Arrival.LATE and not old.events
    assert old.session.state.lock is LockState.LOCKED and old.session.sequence_epoch == NEW_EPOCH
    again = t.apply(with_epoch(lock(5001, common_pb2.LOCK_STATE_UNLOCKED), EPOCH), 5.0)
    assert again.arrival is Arrival.DUPLICATE


# -- liveness: a car that goes silent goes offline (reason TIMEOUT) --

def timeout_60(_s: object) -> float:
    return 60.0


def heartbeat(seq: int) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=VIN, sequence=seq, bearer=common_pb2.BEARER_INSERTED_SIM,
                              visited_country="AT", roaming=True)
    env.heartbeat.SetInParent()
    return env


def test_silent_car_goes_offline_with_reason_timeout() -> None:
    t = SessionTracker()
    t.apply(hello(1), 100.0)
    assert t.expire_silent(159.0, timeout_60) == []
    assert t.due(161.0)
    [r] = t.expire_silent(161.0, timeout_60)
    assert r.session.presence is Presence.OFFLINE and r.session.offline_reason is OfflineReason.TIMEOUT
    assert [(e.kind, e.offline_reason) for e in r.events] == [(EventKind.OFFLINE, OfflineReason.TIMEOUT)]
    assert t.online_by_bearer[Bearer.INSERTED_SIM] == 0


def test_heartbeats_keep_a_car_online() -> None:
    t = SessionTracker()
    t.apply(hello(1), 100.0)
    t.apply(heartbeat(2), 150.0)
    assert t.expire_silent(200.0, timeout_60) == []
    assert t.sessions[VIN].presence is Presence.ONLINE
    assert [r.session.offline_reason for r in t.expire_silent(211.0, timeout_60)] == [OfflineReason.TIMEOUT]


def test_the_hello_announces_the_heartbeat_interval() -> None:
    t = SessionTracker()
    env = hello(1)
    env.hello.heartbeat_interval_s = 30
    assert t.apply(env, 1.0).session.heartbeat_interval_s == 30


def test_any_new_envelope_brings_a_timed_out_car_back_online() -> None:
    t = SessionTracker()
    t.apply(hello(1), 100.0)
    t.expire_silent(200.0, timeout_60)
    r = t.apply(lock(2, common_pb2.LOCK_STATE_LOCKED), 201.0)
    assert r.session.presence is Presence.ONLINE and r.session.offline_reason is OfflineReason.UNSPECIFIED
    assert [e.kind for e in r.events] == [EventKind.ONLINE, EventKind.STATE_CHANGED]
    assert not r.events[0].boot and t.online_by_bearer[Bearer.INSERTED_SIM] == 1


def test_restored_online_car_is_timed_out_from_the_restart_not_before() -> None:
    t0 = SessionTracker()
    t0.apply(hello(1), 100.0)
    restored = SessionTracker([t0.sessions[VIN]], restored_at=1000.0)  # silent since 100
    assert restored.expire_silent(1059.0, timeout_60) == []  # queued messages may still come
    [r] = restored.expire_silent(1061.0, timeout_60)
    assert r.session.offline_reason is OfflineReason.TIMEOUT


def test_offline_car_is_not_timed_out_again() -> None:
    t = SessionTracker()
    t.apply(hello(1), 100.0)
    env = lock(2, common_pb2.LOCK_STATE_LOCKED)
    env.ClearField("state_change")
    env.goodbye.reason = "ignition off"
    t.apply(env, 110.0)
    assert t.expire_silent(1000.0, timeout_60) == [] and not t.due(1000.0)


# -- a will the car publishes itself on its own will topic (README "MQTT topics") --

def test_a_will_the_car_sent_itself_holds_only_until_its_next_envelope() -> None:
    t = SessionTracker()
    t.apply(hello(1, conn=5), 1.0)
    assert t.apply_will(VIN, 5, 2.0).session.presence is Presence.OFFLINE
    r = t.apply(lock(2, common_pb2.LOCK_STATE_LOCKED), 3.0)
    assert r.session.presence is Presence.ONLINE and r.session.connection_id == 5
    assert [e.kind for e in r.events] == [EventKind.ONLINE, EventKind.STATE_CHANGED]


def test_an_envelope_within_the_grace_period_cancels_the_pending_offline() -> None:
    t = SessionTracker()
    t.apply(hello(1, conn=5), 1.0)
    t.apply_will(VIN, 5, 2.0, grace_s=120.0)
    t.apply(heartbeat(2), 3.0)
    assert t.expire(500.0) == [] and t.sessions[VIN].presence is Presence.ONLINE


def test_a_session_copy_is_an_equal_independent_snapshot() -> None:
    # The pipeline snapshots sessions with copy.copy (VehicleSession.__copy__): every field,
    # and a later change of the original does not reach the snapshot.
    import copy

    from gateway.model import Presence, VehicleSession

    s = VehicleSession(vin="WP0ZZZ99ZTS392124", model="Taycan", sequence_epoch=7, heartbeat_interval_s=30)
    snap = copy.copy(s)
    assert snap == s and snap is not s
    s.presence, s.last_sequence = Presence.ONLINE, 5
    assert snap.presence is Presence.OFFLINE and snap.last_sequence == 0
