"""The stored snapshot (vehicle_to_proto): each session serializes its own privacy, state and
times, also when many sessions are serialized one after the other (the privacy and state
messages are built once per value and shared: a mix-up would store one car's setting for
another)."""

from __future__ import annotations

import itertools

from gateway.convert import vehicle_from_proto, vehicle_to_proto
from gateway.model import (
    ChargingPlug,
    LockState,
    PowerState,
    Presence,
    Privacy,
    PrivacyMode,
    VehicleSession,
    VehicleState,
)

PRIVACIES = (
    Privacy(PrivacyMode.OFF),
    Privacy(PrivacyMode.ALL_SERVICES),
    Privacy(PrivacyMode.PER_SERVICE, frozenset({"car-finder"})),
    Privacy(PrivacyMode.PER_SERVICE, frozenset({"car-finder", "charging"})),
    Privacy(PrivacyMode.UNSPECIFIED),
)
STATES = (
    VehicleState(),
    VehicleState(PowerState.ON, LockState.UNLOCKED, ChargingPlug.DISCONNECTED, identity_verified=True),
    VehicleState(PowerState.OFF, LockState.LOCKED, ChargingPlug.CONNECTED),
)


def sessions() -> list[VehicleSession]:
    out = []
    for i, (privacy, state) in enumerate(itertools.product(PRIVACIES, STATES)):
        out.append(
            VehicleSession(
                vin=f"WP0ZZZ99ZJS{i:06d}",
                privacy=privacy,
                state=state,
                presence=Presence.ONLINE if i % 2 else Presence.OFFLINE,
                presence_changed_at=1_767_225_600.25 + i if i % 3 else 0.0,
                last_seen_at=1_767_225_601.5 + i,
                last_boot_at=0.0 if i % 4 else 1_767_225_000.0,
                last_sequence=i * 7,
            )
        )
    return out


def test_every_session_round_trips_through_its_snapshot_with_its_own_privacy_state_and_times() -> None:
    originals = sessions()
    # Twice over, interleaved: what was built for one value is never what another gets.
    for s in originals + originals[::-1]:
        back = vehicle_from_proto(vehicle_to_proto(s))
        assert (back.vin, back.privacy, back.state, back.presence) == (s.vin, s.privacy, s.state, s.presence)
        assert (back.presence_changed_at, back.last_seen_at, back.last_boot_at, back.last_sequence) == (
            s.presence_changed_at, s.last_seen_at, s.last_boot_at, s.last_sequence,
        )

