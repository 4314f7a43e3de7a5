"""VehicleSession.snapshot_stale (issue 12): the tracker marks a session whenever a field beyond
the sequence changes, so the store writes the whole snapshot then and the sequence alone
otherwise. The store clears the mark when it takes the snapshot (here: by hand)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.session.tracker import SessionTracker

VIN = "WP0ZZZ99ZTS392124"


def envelope(seq: int) -> uplink_pb2.Envelope:
    return uplink_pb2.Envelope(vin=VIN, sequence=seq, bearer=common_pb2.BEARER_INSERTED_SIM,
                               visited_country="AT", roaming=True)


def hello(seq: int) -> uplink_pb2.Envelope:
    env = envelope(seq)
    env.hello.connection_id = 1
    env.hello.model = "911"
    return env


def telemetry(seq: int) -> uplink_pb2.Envelope:
    env = envelope(seq)
    env.telemetry.service = "car-finder"
    env.telemetry.samples.add().location.latitude = 48.8
    return env


def online_and_written() -> SessionTracker:
    """An online car whose snapshot the store has just taken."""
    t = SessionTracker()
    t.apply(hello(1), 100.0)
    assert t.sessions[VIN].snapshot_stale  # never written
    t.sessions[VIN].snapshot_stale = False
    return t


def test_telemetry_that_changes_no_header_field_moves_only_the_sequence() -> None:
    t = online_and_written()
    r = t.apply(telemetry(2), 101.0)
    heartbeat = envelope(3)
    heartbeat.heartbeat.SetInParent()
    t.apply(heartbeat, 102.0)
    assert r.dirty and t.sessions[VIN].last_sequence == 3
    assert not t.sessions[VIN].snapshot_stale


def with_bearer(env: uplink_pb2.Envelope) -> uplink_pb2.Envelope:
    env.bearer = common_pb2.BEARER_WIFI_HOTSPOT
    return env


def with_privacy(env: uplink_pb2.Envelope) -> uplink_pb2.Envelope:
    env.privacy.mode = common_pb2.PRIVACY_MODE_ALL_SERVICES
    return env


def state_change(seq: int) -> uplink_pb2.Envelope:
    env = envelope(seq)
    env.state_change.state.lock = common_pb2.LOCK_STATE_LOCKED
    return env


def goodbye(seq: int) -> uplink_pb2.Envelope:
    env = envelope(seq)
    env.goodbye.SetInParent()
    return env


def new_epoch(seq: int) -> uplink_pb2.Envelope:
    env = telemetry(seq)
    env.sequence_epoch = 7
    return env


@pytest.mark.parametrize(
    "message",
    [
        lambda: with_bearer(telemetry(2)),  # a header field
        lambda: with_privacy(telemetry(2)),
        lambda: state_change(2),
        lambda: goodbye(2),  # presence
        lambda: hello(2),
        lambda: new_epoch(1),  # a head-unit reset: the epoch is in the snapshot
    ],
    ids=["bearer", "privacy", "state_change", "goodbye", "hello", "new_epoch"],
)
def test_a_change_beyond_the_sequence_marks_the_snapshot_stale(
    message: Callable[[], uplink_pb2.Envelope],
) -> None:
    t = online_and_written()
    t.apply(message(), 101.0)
    assert t.sessions[VIN].snapshot_stale


def test_going_offline_by_timeout_or_will_marks_the_snapshot_stale() -> None:
    t = online_and_written()
    [timed_out] = t.expire_silent(1_000.0, lambda _s: 60.0)
    assert timed_out.dirty and t.sessions[VIN].snapshot_stale
    t.sessions[VIN].snapshot_stale = False
    t.apply(telemetry(2), 1_001.0)  # back online (a revival): presence changes again
    assert t.sessions[VIN].snapshot_stale
    t.sessions[VIN].snapshot_stale = False
    t.apply_will(VIN, 1, 1_002.0)
    assert t.sessions[VIN].snapshot_stale
