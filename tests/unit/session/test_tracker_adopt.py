"""SessionTracker.adopt: sessions replaced by their stored copies (several gateways on one store)
keep the tracker's in-memory structures consistent."""

from __future__ import annotations

from dataclasses import replace

from gateway.model import Bearer, Presence, VehicleSession
from gateway.session.tracker import SessionTracker

VIN = "WP0ZZZ99ZJS300021"
OTHER = "WP0ZZZ99ZJS300022"


def online(
    vin: str = VIN, *, bearer: Bearer = Bearer.EMBEDDED_SIM, connection_id: int = 1,
    last_seen_at: float = 0.0, last_sequence: int = 0, sequence_epoch: int = 0, jump_candidate: int = 0,
) -> VehicleSession:
    return VehicleSession(
        vin=vin, presence=Presence.ONLINE, bearer=bearer, connection_id=connection_id,
        last_seen_at=last_seen_at, last_sequence=last_sequence, sequence_epoch=sequence_epoch,
        jump_candidate=jump_candidate,
    )


def test_the_online_count_follows_the_adopted_sessions() -> None:
    tracker = SessionTracker([online()])
    tracker.adopt([online(bearer=Bearer.WIFI_HOTSPOT)], now=10.0)
    by_bearer = tracker.online_by_bearer
    assert (by_bearer[Bearer.EMBEDDED_SIM], by_bearer[Bearer.WIFI_HOTSPOT]) == (0, 1)
    tracker.adopt([replace(online(), presence=Presence.OFFLINE)], now=11.0)
    assert sum(tracker.online_by_bearer.values()) == 0


def test_an_adopted_online_car_is_watched_for_liveness_from_its_stored_last_envelope() -> None:
    tracker = SessionTracker()
    tracker.adopt([online(last_seen_at=100.0)], now=100.0)
    assert tracker.due(100.0)
    # Reckoned from the stored last_seen_at: not timed out before its timeout ran.
    assert tracker.expire_silent(130.0, lambda _s: 60.0) == []
    [gone] = tracker.expire_silent(161.0, lambda _s: 60.0)
    assert gone.session.presence is Presence.OFFLINE


def test_a_grace_period_is_kept_only_while_the_stored_car_is_online_on_the_same_connection() -> None:
    tracker = SessionTracker([online(), online(OTHER)])
    tracker.pending_offline = {VIN: (50.0, 1), OTHER: (50.0, 1)}
    tracker.adopt([online(), online(OTHER, connection_id=2)], now=10.0)
    assert tracker.pending_offline == {VIN: (50.0, 1)}  # OTHER reconnected through another gateway


def test_restoring_gives_back_the_grace_periods_and_forgets_cars_never_stored() -> None:
    tracker = SessionTracker([online()])
    before = {VIN: (50.0, 1)}
    tracker.pending_offline = {}  # an apply consumed it
    tracker.apply_will(OTHER, 0, 10.0)  # and made up a car the store never had
    tracker.adopt([online()], [OTHER], now=10.0, pending=before)
    assert tracker.pending_offline == before and tracker.get(OTHER) is None


def test_a_refused_jump_waiting_for_confirmation_survives_for_the_same_sequence_space() -> None:
    tracker = SessionTracker([online(last_sequence=5, jump_candidate=2_000_010)])
    tracker.adopt([online(last_sequence=6)], now=10.0)
    session = tracker.get(VIN)
    assert session is not None and (session.last_sequence, session.jump_candidate) == (6, 2_000_010)
    tracker.adopt([online(last_sequence=7, sequence_epoch=9)], now=11.0)
    session = tracker.get(VIN)
    assert session is not None and session.jump_candidate == 0  # another epoch: not its jump


def test_due_cars_include_grace_periods_and_liveness_checks_and_stay_due() -> None:
    tracker = SessionTracker([online(), online(OTHER)], restored_at=0.0)
    tracker.pending_offline = {OTHER: (5.0, 1)}
    assert tracker.due_vins(5.0) == {VIN, OTHER}
    assert tracker.due(5.0) and tracker.due_vins(5.0) == {VIN, OTHER}
